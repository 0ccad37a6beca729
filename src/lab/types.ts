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
 * - `udp-blocked`: a port-restricted NAT for TCP that drops all UDP both ways (UDP-hostile
 *   networks: registration over UDP fails).
 * - `web-only`: only TCP to ports 80 and 443 may leave (masqueraded); no UDP, nothing else
 *   (corporate networks behind an HTTP-only firewall).
 */
export type NatType =
  | 'none'
  | 'full-cone'
  | 'restricted-cone'
  | 'port-restricted'
  | 'symmetric'
  | 'symmetric-sequential'
  | 'udp-blocked'
  | 'web-only';

/** Every {@link NatType}, in a stable order (useful for matrices and validation). */
export const NAT_TYPES: readonly NatType[] = [
  'none',
  'full-cone',
  'restricted-cone',
  'port-restricted',
  'symmetric',
  'symmetric-sequential',
  'udp-blocked',
  'web-only',
];

/** The types {@link SiteOptions.hairpin} applies to: those whose mapping is endpoint-independent. */
export const HAIRPIN_NAT_TYPES: readonly NatType[] = ['full-cone', 'restricted-cone', 'port-restricted'];

/**
 * IPv6 on a site (addresses from 2001:db8::/32, see `ipv6.ts`):
 *
 * - `off`: IPv4 only.
 * - `only`: IPv6 only, no NAT: the router is a stateful firewall (new flows only from the LAN
 *   out, replies back in, ICMPv6 for path MTU and neighbour discovery); the hosts have no IPv4.
 *   Needs `nat: 'none'`.
 * - `dual`: dual-stack: IPv4 behind the site's NAT type, IPv6 behind the stateful firewall.
 * - `blocked`: dual-stack, but IPv6 between this site and other sites is dropped by the router
 *   (see {@link SiteOptions.ipv6ToBroker} for IPv6 to the broker).
 */
export type Ipv6Mode = 'off' | 'only' | 'dual' | 'blocked';

/** Every {@link Ipv6Mode}. */
export const IPV6_MODES: readonly Ipv6Mode[] = ['off', 'only', 'dual', 'blocked'];

/** One machine of the lab: a network namespace with the address that identifies it. */
export interface LabHost {
  /** Human name: `broker`, a public host's name, `<site>-host` or `<site>-router`. */
  readonly name: string;
  /** The network namespace the host lives in (usable with `ip netns exec`). */
  readonly ns: string;
  /**
   * The host's own IPv4 address (for a NAT router: its WAN, i.e. public, address); on a site
   * with `ipv6: 'only'`, which has no IPv4, its IPv6 address (the same as {@link address6}).
   */
  readonly address: string;
  /** A second public address on the same interface (the broker's, for RFC 5780 CHANGE-REQUEST). */
  readonly alternateAddress?: string;
  /**
   * The host's global IPv6 address (a router's: its WAN address), when it has one: the broker
   * and public hosts always, the hosts and routers of sites with IPv6.
   */
  readonly address6?: string;
}

/** One site: LAN hosts, and unless the NAT type is `none`, the NAT router in front of them. */
export interface LabSite {
  /** The site's name, as given in {@link SiteOptions.name}. */
  readonly name: string;
  /** The NAT behaviour of the site's router. */
  readonly nat: NatType;
  /** The first LAN host (for `none`: the host sits directly on the public network). */
  readonly host: LabHost;
  /** Every LAN host, `hosts[0] === host` (192.168.1.2, .3, ... on the default LAN). */
  readonly hosts: readonly LabHost[];
  /**
   * The NAT router (absent for `none`); `router.address` is its WAN address: the public address,
   * or with {@link SiteOptions.cgn} its address inside the carrier network (100.64.x.2).
   */
  readonly router?: LabHost;
  /** The carrier-grade NAT in front of the router (with {@link SiteOptions.cgn}); `cgn.address` is the public address. */
  readonly cgn?: LabHost;
  /** Whether the router hairpins (see {@link SiteOptions.hairpin}). */
  readonly hairpin: boolean;
  /** One-way delay added to the site's link to the internet, each direction, in ms (0: none). */
  readonly delayMs: number;
  /** The address the internet sees for this site. */
  readonly publicAddress: string;
  /** The router's LAN address, the LAN host's default gateway (absent for `none`; IPv6 with `ipv6: 'only'`). */
  readonly lanAddress?: string;
  /** IPv6 on the site (see {@link Ipv6Mode}). */
  readonly ipv6: Ipv6Mode;
  /** With `ipv6: 'blocked'`: whether IPv6 to the broker still passes (IPv6 to other sites never does). */
  readonly ipv6ToBroker: boolean;
  /** The site's IPv6 LAN prefix, `2001:db8:<index + 1>::/64` (absent with `ipv6: 'off'`). */
  readonly lanPrefix6?: string;
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
  /**
   * Put a carrier-grade NAT (port-restricted: masquerade) in front of the site's own NAT: the
   * router's WAN gets 100.64.<site index>.2/24 (RFC 6598), the CGN's WAN the site's public
   * address. Not with `nat: 'none'`.
   * @default false
   */
  cgn?: boolean;
  /**
   * How many LAN hosts share the site's NAT, 1..4 (on a bridge in the router). Only 1 with `none`.
   * @default 1
   */
  hosts?: number;
  /**
   * NAT hairpinning: a LAN host that sends to the NAT's public address and a mapped port is
   * dnat'ed back into the LAN, with the sender's public endpoint as source. Only for the
   * endpoint-independent mapping types ({@link HAIRPIN_NAT_TYPES}).
   * @default false
   */
  hairpin?: boolean;
  /**
   * One-way delay on the site's link to the internet, each direction, in ms (so every round
   * trip through it grows by twice this). Overrides {@link LabOptions.wanDelayMs}.
   * @default LabOptions.wanDelayMs
   */
  delayMs?: number;
  /**
   * IPv6 on the site (see {@link Ipv6Mode}): `only` needs `nat: 'none'`, `dual` and `blocked` a
   * NAT type other than `none` (its router carries the firewall); not with `cgn`.
   * @default 'off'
   */
  ipv6?: Ipv6Mode;
  /**
   * Only with `ipv6: 'blocked'`: true lets IPv6 to the broker pass (registration may use IPv6,
   * connections to other sites cannot), false drops all IPv6 leaving or entering the site.
   * @default true
   */
  ipv6ToBroker?: boolean;
}

/** How to build a {@link Lab}. */
export interface LabOptions {
  /** The sites, at most 25; site `i` gets the public address 203.0.113.(10 * (i + 1)). */
  sites: SiteOptions[];
  /** Extra public hosts (e.g. observers), at most 6; they get 203.0.113.4, .5, ... in order. */
  publicHosts?: string[];
  /**
   * One-way delay in ms on every site's link to the internet, each direction (a userspace delay
   * line; the broker and public hosts get none). 0 builds no delay line.
   * @default 0
   */
  wanDelayMs?: number;
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

/** Options of {@link Lab.trafficCounter}. */
export interface TrafficCounterOptions {
  /**
   * Count IPv6 as well as IPv4.
   * @default false
   */
  ipv6?: boolean;
}

/** Counters read from a {@link Lab.trafficCounter} (IPv4, or IPv4 and IPv6 with {@link TrafficCounterOptions.ipv6}). */
export interface TrafficCounts {
  /** Packets that entered the host on any interface but `lo`. */
  packetsIn: number;
  /** Bytes of those packets (IP header included). */
  bytesIn: number;
  /** Packets that left the host on any interface but `lo`. */
  packetsOut: number;
  /** Bytes of those packets (IP header included). */
  bytesOut: number;
}

/** Reads the current counts of a traffic counter. */
export type TrafficCounterReader = () => Promise<TrafficCounts>;

/** The answer of {@link labSupport}. */
export type LabSupport = { ok: true } | { ok: false; reason: string };
