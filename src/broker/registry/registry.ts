import type { TransportAddress } from '../../wire/types.js';
import type { BrokerBus } from '../bus/bus.js';

/** What the broker knows about one registered peer. */
export interface Registration {
  /** The URI the peer registered. */
  readonly uri: string;
  /** The peer's UDP endpoint as the broker saw it (its NAT's public mapping). */
  readonly publicEndpoint: TransportAddress;
  /** The endpoints the peer reported from its own interfaces. */
  readonly privateEndpoints: readonly TransportAddress[];
  /** When the registration lapses unless refreshed (milliseconds since the epoch). */
  readonly expiresAt: number;
  /**
   * How the peer registered: over UDP (connection requests go to `publicEndpoint`)
   * or over a TCP control connection held by one broker (requests go down it). @default 'udp'
   */
  readonly transport?: 'udp' | 'tcp';
  /** Fingerprint of the key that proved itself for this URI (absent in open mode). */
  readonly keyFingerprint?: string;
  /**
   * The bus ID ({@link BrokerBus.id}) of the broker that took this registration: it holds
   * the peer's NAT mapping towards its own address (or its TCP control connection), so
   * connection requests for the peer go out through it. Absent: the broker reading it.
   */
  readonly broker?: string;
  /**
   * The endpoint the peer's gateway forwards to its accepting port (a port mapping it
   * registered as MAPPED-ENDPOINT): the broker plans path `portmap` to it first. Absent: none.
   */
  readonly mappedEndpoint?: TransportAddress;
  /**
   * The address the peer's SOCKS5 proxy holds bound for it (RFC 1928 BIND, registered as
   * BOUND-ENDPOINT): the broker plans path `socks5-bind` to it first. Absent: none.
   */
  readonly boundEndpoint?: TransportAddress;
  /**
   * True when the peer registered over a WebSocket (a network that passes only the web):
   * nothing reaches its own sockets and it reaches nothing but the broker, so the broker
   * plans the relay for it at once (schedule.ts). Absent: false.
   */
  readonly web?: boolean;
  /**
   * The peer's registration in its other address family (a dual-stack recipient registers over
   * IPv4 and IPv6 under one session: SECOND-FAMILY, register.ts): a Connect arriving in that
   * family is run there (broker/family.ts). Absent: the peer registered in one family only.
   */
  readonly secondFamily?: FamilyRegistration;
}

/** A registration's endpoints in its second address family (see {@link Registration.secondFamily}). */
export interface FamilyRegistration {
  /** The peer's UDP endpoint of that family as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  /** The endpoints of that family the peer reported from its own interfaces. */
  readonly privateEndpoints: readonly TransportAddress[];
  /** When this family lapses unless refreshed (ms since the epoch); never after the registration's own expiry matters. */
  readonly expiresAt: number;
  /** The bus ID of the broker holding this family's mapping (as {@link Registration.broker}). Absent: the broker reading it. */
  readonly broker?: string;
}

/**
 * Where a broker keeps registrations. Implementations: {@link MemoryRegistry}
 * (default, one broker) and `RedisRegistry` (shared by brokers). Every method is
 * async so that remote stores fit the same interface. A registration is live while
 * its `expiresAt` is after the registry's clock: at `expiresAt` it is gone.
 */
export interface Registry {
  /** Stores or replaces the registration for `registration.uri`. */
  put(registration: Registration): Promise<void>;
  /**
   * Stores `registration` unless a live registration of its URI carries another key
   * fingerprint, atomically (the owner binding of plain names: the first key holds the
   * name while registered, across every broker sharing the registry). Returns undefined
   * when stored, else the fingerprint of the key holding the URI.
   */
  claim(registration: Registration & { readonly keyFingerprint: string }): Promise<string | undefined>;
  /** The live registration for `uri`, or undefined when there is none or it expired. */
  get(uri: string): Promise<Registration | undefined>;
  /** Removes the registration; true when there was a live one. */
  delete(uri: string): Promise<boolean>;
  /**
   * Removes the registration of `expected.uri` only if it is still `expected` (as
   * {@link Registry.get} gave it, every field equal), atomically: one put in between (a
   * refresh, the peer registering again through another broker) stays. True when a live
   * registration was removed. For clean-ups that read, decide, then remove.
   */
  deleteIf(expected: Registration): Promise<boolean>;
  /** How many live registrations there are. */
  size(): Promise<number>;
  /** Releases resources (timers, connections). Idempotent. */
  close(): Promise<void>;
}

/** Whether two registrations say the same thing, field by field (what {@link Registry.deleteIf} compares). */
export function sameRegistration(a: Registration, b: Registration): boolean {
  const text = (e: TransportAddress): string => `${e.family}/${e.address}/${e.port}`;
  const endpoints = (r: Registration): string => [r.publicEndpoint, ...r.privateEndpoints].map(text).join(' ');
  const mapped = (r: Registration): string => [r.mappedEndpoint, r.boundEndpoint].map((e) => (e === undefined ? '' : text(e))).join(' ');
  const second = (r: Registration): string => {
    const f = r.secondFamily;
    return f === undefined ? '' : [f.expiresAt, f.broker ?? '', ...[f.publicEndpoint, ...f.privateEndpoints].map(text)].join(' ');
  };
  return (
    a.uri === b.uri &&
    a.expiresAt === b.expiresAt &&
    (a.transport ?? 'udp') === (b.transport ?? 'udp') &&
    a.keyFingerprint === b.keyFingerprint &&
    a.broker === b.broker &&
    endpoints(a) === endpoints(b) &&
    mapped(a) === mapped(b) &&
    (a.web === true) === (b.web === true) &&
    second(a) === second(b)
  );
}
