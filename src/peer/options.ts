import type { HostPort } from '../common/endpoint.js';

/** A broker address: `"host:port"` or `{ host, port }`. The port defaults to 3478 in text form. */
export type BrokerAddress = string | HostPort;

/** RFC 8489 §18.4: the default STUN port, used when a broker address names none. */
export const DEFAULT_BROKER_PORT = 3478;

/** Options that {@link connect} and `connectDatagram` (datagram/connect.ts) share. */
export interface CommonConnectOptions {
  /** The broker to ask, or several in order (see each function's options for how a list is used). */
  broker: BrokerAddress | readonly BrokerAddress[];
  /** The URI the recipient registered. */
  uri: string;
  /** Aborts the whole connect at once; nothing stays open. */
  signal?: AbortSignal;
  /** Limit on the whole connect, all attempts included, in ms. @default 30000 */
  timeoutMs?: number;
  /** Attempts (each from a fresh local port; for a datagram channel, a fresh UDP socket) before giving up. @default 4 */
  maxAttempts?: number;
  /** Limit on the broker exchange of one attempt, in ms. @default 12000 */
  exchangeTimeoutMs?: number;
  /** Limit on the simultaneous open (for a datagram channel, the punching) of one attempt, in ms. @default 5000 */
  punchTimeoutMs?: number;
  /** The CA (PEM) that issued the broker's certificate: exchanges then run over TLS and a fake broker is refused. */
  brokerCa?: string;
}

/** Options of {@link connect}. */
export interface ConnectOptions extends CommonConnectOptions {
  /**
   * The broker to ask, or several in order (a cluster sharing one registry): each is
   * tried in turn while brokers do not answer (each within `exchangeTimeoutMs`); a name
   * with several addresses counts as several.
   */
  broker: BrokerAddress | readonly BrokerAddress[];
  /**
   * End-to-end authentication and encryption: TLS 1.3 with mutual authentication over
   * the connection, whatever its path. The recipient's key must match `uri`: the
   * fingerprint a self-certifying URI names, a certificate naming `uri` from a trusted CA
   * (`ca`), or for a plain name the key pinned with `expectKey`, else the key the broker
   * holds for the name (remembered in `knownKeysFile`: a later different key is refused).
   * Our identity defaults to a throwaway self-certifying one. `false` opts out, for
   * protocols that do their own security. @default true
   */
  tls?: boolean | PeerTls;
  /**
   * The fingerprint the recipient's key must have (lowercase base32 SHA-256 of its SPKI,
   * as `nattrav listen` prints it): pins a plain name's key instead of trusting the broker.
   * A pin holds whoever else vouches: a certificate from a trusted CA or a self-certifying
   * URI with another key is refused too (ERR_KEY_MISMATCH).
   */
  expectKey?: string;
  /** Where keys of plain names are remembered; `false` remembers nothing. @default ~/.nattrav/known_keys */
  knownKeysFile?: string | false;
  /** Accept (and remember) a plain name's key that differs from the remembered one. @default false */
  acceptChangedKey?: boolean;
  /**
   * How TCP connections to the broker are opened: directly (the default), or through a
   * proxy or tunnel (a {@link import('./dialer.js').Dialer}). @default direct TCP
   */
  dialer?: import('./dialer.js').Dialer;
  /**
   * A SOCKS5 proxy to reach the broker (and, for an initiator, the recipient) through:
   * `"[USER:PASS@]HOST:PORT"`, a `socks5://` / `socks5h://` URL, or a {@link import('./socks5.js').Socks5Proxy}.
   * Registration then runs over the TCP control connection (UDP cannot pass CONNECT), and
   * only strategies that connect out work: to the recipient's public endpoint, or the relay.
   * ERR_PROXY when the proxy cannot be reached or refuses our credentials. Not with `dialer`.
   */
  socks5?: string | import('./socks5.js').Socks5Proxy;
  /** Called when a broker of several did not answer and the next one is tried (`broker`: which, for logs). */
  onBrokerFailed?: (event: { readonly broker: string; readonly error: import('../errors.js').NattravError }) => void;
  /** Called as strategies start, succeed and fail (`nattrav connect -v` prints these). */
  onTrace?: (event: import('./info.js').StrategyTrace) => void;
  /**
   * The address family to connect in: 4 (IPv4 only) or 6 (IPv6 only), the broker's address of
   * that family and the recipient's registration in it (ERR_FAMILY_UNAVAILABLE at once when
   * either is missing). Left out: when the broker has an address of each family, this host
   * can use IPv6 and no proxy or tunnel carries our connections, IPv6 and IPv4 race (RFC 8305, connect-race.ts; the first direct connection
   * wins, the relay only when neither goes direct); else the broker's first address. The
   * connection's `nattrav.family` says which it is. @default race when both work
   */
  family?: 4 | 6;
  /** In the race, how long IPv4 waits for IPv6 before it starts too, in ms (family-race.ts). @default 50 */
  familyDelayMs?: number;
}

/** Options of {@link createServer}. */
export interface ServerOptions {
  /**
   * The broker to register with, or several in order (a cluster sharing one registry): we
   * register with the first that answers and, when it stops answering, with the next at
   * once, keeping URI and key; a name with several addresses counts as several.
   */
  broker: BrokerAddress | readonly BrokerAddress[];
  /** The URI to register. */
  uri: string;
  /**
   * Register over both address families when the broker has an address of each (it announces
   * the other, or the broker list resolves to both) and this host can use both (a global IPv6
   * address; any towards a loopback broker): initiators then reach us over IPv6 or IPv4, racing
   * them (RFC 8305). The second family never delays the first; it is retried with backoff on
   * its own (second-family.ts). Emits 'secondFamilyRegistered' and 'secondFamilyFailed'. @default true
   */
  dualStack?: boolean;
  /**
   * Interval between registration refreshes, in ms; must stay well under the NAT's UDP timeout
   * (30 s on Linux). Given, it is fixed (no adaptive keepalive unless `adaptiveKeepalive: true`,
   * which then starts from it); else it is where adaptive keepalive starts. @default 10000
   */
  keepaliveMs?: number;
  /**
   * Adaptive keepalive: measure how long our NAT keeps an idle UDP mapping (RFC 5780 §4.6,
   * in the background after the first registration, which never waits for it) and set the
   * refresh interval to 80% of it, at least 5 s and at most `keepaliveMaxMs`; the lifetime
   * asked of the broker follows (3 × the interval). Until measured, `keepaliveMs` holds. An
   * explicit `keepaliveMs` fixes the interval and turns this off unless `adaptiveKeepalive` is
   * also `true`. Never towards a broker on loopback unless `true`. Emits 'keepalive'
   * (KeepaliveEvent) when the interval changes, 'keepaliveFailed' (NattravError) when a
   * measurement failed (the interval then stays). @default true without `keepaliveMs`
   */
  adaptiveKeepalive?: boolean;
  /** The longest interval adaptive keepalive may set, in ms (at least 5000): raise it for fewer packets behind a patient NAT. @default 60000 */
  keepaliveMaxMs?: number;
  /** Lifetime asked of the broker, in ms. @default 3 × keepaliveMs */
  lifetimeMs?: number;
  /** Limit on one registration transaction (with retransmissions), in ms. @default 5000, or keepaliveMs when that is shorter */
  registerTimeoutMs?: number;
  /** Limit on the broker exchange of one attempt, in ms. @default 12000 */
  exchangeTimeoutMs?: number;
  /** Limit on the simultaneous open of one attempt, in ms. @default 5000 */
  punchTimeoutMs?: number;
  /**
   * How to register: 'udp', 'tcp' (a persistent control connection, for networks
   * that block UDP), or 'auto' (UDP, switching to TCP when UDP gets no answer). @default 'auto'
   */
  registerTransport?: 'auto' | 'udp' | 'tcp';
  /**
   * Our identity (key, certificate naming `uri`, trusted CAs): proven to the
   * broker at registration and used for TLS. @default a key kept in `keyDir`
   * for this URI, with a self-signed certificate
   */
  identity?: import('../security/identity.js').Identity;
  /** Where a default identity's key is kept. @default ~/.nattrav/keys */
  keyDir?: string;
  /** The CA (PEM) that issued the broker's certificate: set it and a broker that cannot prove itself is refused. */
  brokerCa?: string;
  /**
   * How TCP connections to the broker (control connection, exchanges, relay) are opened:
   * directly (the default), or through a proxy or tunnel (a {@link import('./dialer.js').Dialer}). @default direct TCP
   */
  dialer?: import('./dialer.js').Dialer;
  /**
   * A SOCKS5 proxy to reach the broker (and, for an initiator, the recipient) through:
   * `"[USER:PASS@]HOST:PORT"`, a `socks5://` / `socks5h://` URL, or a {@link import('./socks5.js').Socks5Proxy}.
   * Registration then runs over the TCP control connection (UDP cannot pass CONNECT), and
   * only strategies that connect out work: to the recipient's public endpoint, or the relay.
   * ERR_PROXY when the proxy cannot be reached or refuses our credentials. Not with `dialer`.
   */
  socks5?: string | import('./socks5.js').Socks5Proxy;
  /**
   * TLS 1.3 with mutual authentication on every accepted connection, with our
   * `identity` (or the default one). Initiators must prove a self-certifying URI or
   * hold a certificate from `identity.ca` / `ca`. `false` opts out (plain TCP; a TLS
   * initiator is then refused with ERR_TLS_REQUIRED on its side). @default true
   */
  tls?: boolean | Omit<PeerTls, 'identity'>;
  /**
   * Incoming attempts run at once; a connection request beyond them is refused at once
   * (the initiator fails with ERR_RECIPIENT_UNREACHABLE and "recipient busy: N attempts
   * in progress") and the server emits 'attemptRefused'. The broker's per-recipient
   * allowance is sized for 20 concurrent connects; 32 leaves them room for retries, and
   * 32 attempts reserve 128 of the default 1024 attempt sockets. @default 32
   */
  maxConcurrentAttempts?: number;
  /**
   * Sockets all incoming attempts may hold at once (exchange, mapping probe, punch and
   * listener: 4 reserved per attempt; each further socket a strategy opens, e.g. birthday's
   * 256, is taken from what is left, and a strategy stops opening when none is). Four
   * birthday sprays' worth, and a quarter of 4096, the smallest usual descriptor limit, so
   * established connections keep the rest. A request that finds fewer than 4 left is refused. @default 1024
   */
  maxAttemptSockets?: number;
  /**
   * Fail fast: when the first registration fails, emit 'error' and stop (as `nattrav listen
   * --once`). Without it the server keeps trying the broker with capped exponential backoff
   * (`retryInitialMs` doubling to `retryMaxMs`, each delay shortened by up to half at
   * random), reporting each failed try with 'registrationRetry', and never gives up. Either
   * way a registration lost later is tried again. @default false
   */
  once?: boolean;
  /** The delay before the second try after a failed registration, in ms; doubled after each further failure. @default 1000 */
  retryInitialMs?: number;
  /**
   * The longest delay between tries, in ms. While a registration that was held is being
   * made again (the broker restarted or was away), tries come at least every `keepaliveMs`,
   * so it is back within one keepalive interval after the broker is. @default 60000
   */
  retryMaxMs?: number;
  /**
   * Only initiators that proved one of these identities (nattrav URIs, checked in the
   * mutual TLS handshake: a self-certifying URI's key, or a certificate from a trusted
   * CA naming the URI) get a 'connection'. Anyone else is refused right after the
   * handshake: the initiator's connect() fails with ERR_NOT_ALLOWED and the reason
   * ("nattrav://k-... is not on the allow-list of nattrav://alice"), and the server emits
   * 'connectionRejected'. Needs TLS (an error names both options with `tls: false`).
   * @default everyone who proves an identity
   */
  allow?: readonly string[];
  /**
   * Port mapping on our gateway (PCP, NAT-PMP or UPnP IGD): we map the TCP port we accept on,
   * register the mapped endpoint, keep it renewed while registered and delete it on close; the
   * broker then plans path `portmap` first, which initiators behind any NAT reach with a plain
   * connect. An optimisation: without a mapping (no gateway answered within 250 ms, or it
   * refused) today's strategies run, and registration never waits for it. Never asked while the
   * broker we registered with is on loopback, unless `gateway` is given. `false` opts out
   * (`--no-portmap`). @default true
   */
  portmap?: boolean | import('./portmap-agent.js').PortmapSettings;
  /**
   * Take the URI from another live process registered with the same key (it is told, stops, and
   * emits 'takenOver'). Without it such a registration fails with ERR_URI_HELD_BY_INSTANCE
   * naming the URI. A moved or restarted server needs no takeover. @default false
   */
  takeover?: boolean;
}

/** Who we are and whom we trust, for TLS between peers. */
export interface PeerTls {
  /** Our key and certificate. @default for connect(): a throwaway self-certifying identity */
  identity?: import('../security/identity.js').Identity;
  /** Trust anchors (PEM) besides `identity.ca`. Self-certifying peers need none. */
  ca?: string[];
}

/** Defaults of the peer options, in one place, each with its reason. */
export const PEER_DEFAULTS = {
  /** Enough for a plan's strategies (e.g. lan, direct, relay) plus one unlucky SYN timing. */
  maxAttempts: 4,
  /** Covers a slow strategy (birthday, ~8 s) followed by the relay. */
  timeoutMs: 30_000,
  /** Covers the broker's 5 s wait for the recipient, a probe, and slack. */
  exchangeTimeoutMs: 12_000,
  /** SYNs are retransmitted 1 s and 3 s after the first; 5 s lets both land. */
  punchTimeoutMs: 5_000,
  /** Linux drops an idle UDP mapping after ~30-40 s; 10 s refreshes three times per timeout. */
  keepaliveMs: 10_000,
  /** A registration survives two lost refreshes. */
  lifetimeFactor: 3,
  /** RFC 8489 retransmits for ~39 s; a registration gives up far sooner and retries after its backoff delay. */
  registerTimeoutMs: 5_000,
  /** The first retry of a failed registration: soon enough for a broker that is restarting. */
  retryInitialMs: 1_000,
  /** A broker that is down for long is asked once a minute, not hammered (peers that held a registration retry every keepalive). */
  retryMaxMs: 60_000,
  /** 20 concurrent connects (what the broker's per-recipient allowance is sized for) with room for retries (see ServerOptions.maxConcurrentAttempts). */
  maxConcurrentAttempts: 32,
  /** Four birthday sprays of 256, a quarter of a 4096 descriptor limit (see ServerOptions.maxAttemptSockets). */
  maxAttemptSockets: 1024,
} as const;
