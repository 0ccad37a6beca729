/**
 * Types of the network-namespace NAT lab: what a lab is made of and how it is asked for.
 */

/**
 * The NAT behaviours the lab can build (RFC 4787 / RFC 5780 terms in brackets).
 *
 * - `none`: no NAT; the host sits directly on the public network.
 * - `full-cone`: endpoint-independent mapping and endpoint-independent filtering.
 * - `restricted-cone`: endpoint-independent mapping, address-dependent filtering.
 * - `port-restricted`: endpoint-independent mapping, address-and-port-dependent filtering
 *   (what Linux `masquerade` does by default).
 * - `symmetric`: address-and-port-dependent mapping with random ports.
 * - `symmetric-sequential`: address-and-port-dependent mapping where each new flow takes the
 *   next port (predictable).
 */
export type NatType =
  | 'none'
  | 'full-cone'
  | 'restricted-cone'
  | 'port-restricted'
  | 'symmetric'
  | 'symmetric-sequential';

/** Every {@link NatType}, in a stable order (useful for matrices and validation). */
export const NAT_TYPES: readonly NatType[] = [
  'none',
  'full-cone',
  'restricted-cone',
  'port-restricted',
  'symmetric',
  'symmetric-sequential',
];

/** One machine of the lab: a network namespace with one IPv4 address that identifies it. */
export interface LabHost {
  /** Human name: `broker`, a public host's name, `<site>-host` or `<site>-router`. */
  readonly name: string;
  /** The network namespace the host lives in (usable with `ip netns exec`). */
  readonly ns: string;
  /** The host's own IPv4 address (for a NAT router: its WAN, i.e. public, address). */
  readonly address: string;
  /** A second public address on the same interface (the broker's, for RFC 5780 CHANGE-REQUEST). */
  readonly alternateAddress?: string;
}

/** One site: a LAN host, and unless the NAT type is `none`, the NAT router in front of it. */
export interface LabSite {
  /** The site's name, as given in {@link SiteOptions.name}. */
  readonly name: string;
  /** The NAT behaviour of the site's router. */
  readonly nat: NatType;
  /** The LAN host (for `none`: the host sits directly on the public network). */
  readonly host: LabHost;
  /** The NAT router (absent for `none`); `router.address` is its WAN (public) address. */
  readonly router?: LabHost;
  /** The address the internet sees for this site. */
  readonly publicAddress: string;
  /** The router's LAN address, the LAN host's default gateway (absent for `none`). */
  readonly lanAddress?: string;
}

/** How to build one site. */
export interface SiteOptions {
  /** Unique site name: letters, digits, `.`, `_`, `-`; at most 32 characters. */
  name: string;
  /** The NAT behaviour of the site's router. */
  nat: NatType;
  /**
   * The site's private LAN, IPv4 CIDR in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, prefix
   * length 8..30. The router takes the first address, the host the second. Several sites may
   * use the same subnet: each LAN is its own namespace.
   * @default '192.168.1.0/24'
   */
  lanSubnet?: string;
}

/** How to build a {@link Lab}. */
export interface LabOptions {
  /** The sites, at most 25; site `i` gets the public address 203.0.113.(10 * (i + 1)). */
  sites: SiteOptions[];
  /** Extra public hosts (e.g. observers), at most 6; they get 203.0.113.4, .5, ... in order. */
  publicHosts?: string[];
  /** Aborts the build; what was already made is torn down. */
  signal?: AbortSignal;
}

/** Options of {@link Lab.run}. */
export interface LabRunOptions {
  /** Aborts the command (it is killed by PID). */
  signal?: AbortSignal;
  /**
   * Kills the command and rejects with a Timeout error after this many milliseconds.
   * @default 30000
   */
  timeoutMs?: number;
  /**
   * Resolve with the exit code instead of rejecting when the command exits non-zero.
   * @default false
   */
  allowFailure?: boolean;
  /** Written to the command's standard input, which is then closed. */
  input?: string;
}

/** What {@link Lab.run} resolves with. */
export interface LabRunResult {
  /** Exit code; 128 + signal number when the command died from a signal. */
  code: number;
  /** Everything the command wrote to standard output, as UTF-8. */
  stdout: string;
  /** Everything the command wrote to standard error, as UTF-8. */
  stderr: string;
}

/** IPv4 counters read from a {@link Lab.trafficCounter}. */
export interface TrafficCounts {
  /** IPv4 packets that entered the host on any interface but `lo`. */
  packetsIn: number;
  /** Bytes of those packets (IP header included). */
  bytesIn: number;
  /** IPv4 packets that left the host on any interface but `lo`. */
  packetsOut: number;
  /** Bytes of those packets (IP header included). */
  bytesOut: number;
}

/** Reads the current counts of a traffic counter. */
export type TrafficCounterReader = () => Promise<TrafficCounts>;

/** The answer of {@link labSupport}. */
export type LabSupport = { ok: true } | { ok: false; reason: string };
