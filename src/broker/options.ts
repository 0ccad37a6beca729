import { checkPort } from '../common/endpoint.js';
import { systemClock, type Clock } from '../common/clock.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { AmplificationMode } from './amplification.js';
import { isIP } from 'node:net';
import type { BrokerBus } from './bus/bus.js';
import type { BrokerLimitsOptions } from './limits.js';
import type { Registry } from './registry/registry.js';
import type { SessionStore } from './sessions.js';
import { isWildcard } from './rfc5780.js';
import { checkAnnounce } from './family.js';
import type { WorkerLink } from './workers/worker-router.js';
import { checkWebSocketListens, type WebSocketListen } from './websocket.js';

/** Options of {@link createBroker}. */
export interface BrokerOptions {
  /**
   * Accept registrations without proof of key. Only for closed networks: anyone
   * can then take over any URI. The broker warns loudly at start. @default false
   */
  open?: boolean;
  /** Trust anchors (PEM) for peer certificates: URIs that are not self-certifying then need a certificate from this CA. */
  ca?: string;
  /** The broker's certificate (PEM). With `key`, peers that trust its CA can authenticate the broker. */
  cert?: string;
  /** The broker's private key (PEM). */
  key?: string;
  /** Most registration sessions held at once (memory bound). @default 1000000 */
  maxSessions?: number;
  /** Address to bind UDP and TCP to. @default '0.0.0.0' */
  host?: string;
  /** Port for both UDP and TCP (0 picks a free one). @default 3478 */
  port?: number;
  /** Where registrations live. @default a new in-memory registry */
  registry?: Registry;
  /**
   * Where registration sessions live (their keys are secrets). Brokers that share a
   * `registry` must share this too, so that a refresh may land on any of them.
   * @default a new in-memory table of at most `maxSessions`
   */
  sessions?: SessionStore;
  /**
   * How this broker reaches the other brokers sharing `registry` (a cluster, cluster.ts):
   * connection requests for recipients registered through another broker go through it,
   * and registrations record `bus.id`. The caller closes it after the broker. Without it,
   * a recipient registered through another broker cannot be reached from this one.
   * @default none (a broker on its own)
   */
  bus?: BrokerBus;
  /**
   * The address (`ip:port`) where peers reach this broker, sent as JOIN-AT to recipients
   * registered through another broker of the cluster, so they join the attempt here.
   * Needed with a `bus` when `host` is a wildcard (0.0.0.0, ::). Port 0: the port bound.
   * @default `host:port` when `host` is a specific address
   */
  joinAddress?: string;
  /** Longest registration lifetime a peer may ask for, in ms. @default 120000 */
  maxLifetimeMs?: number;
  /** How long the recipient has to join an attempt after the broker's connection request, in ms. @default 5000 */
  recipientTimeoutMs?: number;
  /** How long a TCP exchange may stay idle before the broker drops it, in ms. @default 15000 */
  exchangeIdleTimeoutMs?: number;
  /**
   * Longest life of a TCP exchange (any connection that is not a recipient's control
   * connection or a spliced relay), in ms, however busy it is. @default 30000
   */
  exchangeMaxLifetimeMs?: number;
  /**
   * Once the first byte of a STUN message arrived on a TCP connection, the whole message
   * must arrive within this many ms, or the connection is closed (every message, on
   * every connection, control connections included; the first message also has
   * limits `firstMessageTimeoutMs` from the accept). @default 5000
   */
  messageTimeoutMs?: number;
  /** How long a round-trip probe may take, in ms. @default 3000 */
  probeTimeoutMs?: number;
  /** Most attempts waiting for their recipient at once. @default 4096 */
  maxPendingAttempts?: number;
  /** SOFTWARE attribute value in responses. @default 'nattrav broker' */
  software?: string;
  /**
   * A second IP address of this host (RFC 5780 §3: the "alternate address"). With it the broker
   * also listens on `alternateHost:port` and `alternateHost:alternatePort` (UDP and TCP), sends
   * OTHER-ADDRESS in Binding responses, and honours CHANGE-REQUEST "change IP". `host` must then be
   * a specific address, not a wildcard. No default: without it only "change port" is honoured.
   */
  alternateHost?: string;
  /** The second port (RFC 5780 §3: the "alternate port"), always listened on (UDP and TCP). @default port + 1 */
  alternatePort?: number;
  /**
   * Bytes (both directions together) one relayed connection may carry before it is cut;
   * 0 = unlimited, only when you say so (a broker for your own peers). @default 1073741824 (1 GiB)
   */
  relayMaxBytes?: number;
  /**
   * Milliseconds one relayed connection may last before it is cut; 0 = unlimited, only
   * when you say so. @default 3600000 (1 hour)
   */
  relayMaxDurationMs?: number;
  /** Rate limits and caps against floods and bad input (limits.ts); any subset. @default BROKER_LIMITS_DEFAULTS */
  limits?: BrokerLimitsOptions;
  /**
   * Never answer an unauthenticated UDP request with more bytes than it had
   * (amplification factor <= 1). Standard STUN clients' bare 20-byte Binding
   * requests then get no answer; nattrav's own clients pad their requests and
   * are unaffected. Off, a Binding answer may be up to 2.5 times its request,
   * from byte budgets per source and for the whole broker (amplification.ts,
   * limits `amplificationAllowance*`). Not with `stunCompat`. @default false
   */
  strictAmplification?: boolean;
  /**
   * Give small Binding requests the full RFC 5780 answer (MAPPED-ADDRESS,
   * RESPONSE-ORIGIN and OTHER-ADDRESS besides XOR-MAPPED-ADDRESS), up to 124
   * bytes (amplification up to 6.2 for a bare request), from the same byte
   * budgets. Only coturn's `turnutils_natdiscovery` needs it to print what it
   * prints against coturn's server; it classifies NATs without it. Not with
   * `strictAmplification`. @default false
   */
  stunCompat?: boolean;
  /**
   * The clock of the broker's timers and deadlines: each attempt's steps (rendezvous.ts)
   * and the TCP connections' message deadlines, lifetimes and sweeps (tcp.ts). Tests
   * pass a fake one and move its time by hand. @default the system clock
   */
  clock?: Clock;
  /**
   * Set by `nattrav broker --workers N` in each worker process (workers/worker.ts): the
   * channel to the primary, which holds the shared state and routes what lands on the
   * wrong worker. Sockets are then bound shared (Node cluster), not exclusive. Not for
   * other callers: use {@link startBrokerWorkers}. @default undefined (one process)
   */
  workerLink?: WorkerLink;
  /**
   * WebSocket listeners (websocket.ts) for peers on networks that pass only the web:
   * each serves what the TCP port serves, wss with `cert`/`key` (e.g. port 443) or
   * plain ws (e.g. port 80). @default none
   */
  webSockets?: readonly WebSocketListen[];
  /**
   * This broker's addresses peers can reach it at (IP literals, at most one per family, on
   * `port`), for dual-stack recipients: a peer registering over one family is told the other
   * family's address (OTHER-FAMILY-BROKER) and registers its second family there (family.ts).
   * Needed with a wildcard `host` ('::' serves both families), whose addresses the broker
   * cannot see. @default none: peers learn the other family only from their broker list
   */
  announce?: readonly string[];
}

/** Fully resolved broker options. */
export type ResolvedBrokerOptions = Required<Omit<BrokerOptions, 'registry' | 'sessions' | 'alternateHost' | 'alternatePort' | 'limits' | 'ca' | 'cert' | 'key' | 'clock' | 'bus' | 'joinAddress' | 'workerLink'>> & {
  bus?: BrokerBus;
  /** Checked: an IP literal and a port (the port may be 0 until the broker is listening: then its bound port counts). */
  joinAddress?: { host: string; port: number };
  workerLink?: WorkerLink;
  clock: Clock;
  ca?: string;
  cert?: string;
  key?: string;
  registry?: Registry;
  sessions?: SessionStore;
  limits?: BrokerLimitsOptions;
  alternateHost?: string;
  alternatePort?: number;
};

/** Defaults of {@link BrokerOptions}, in one place. */
export const BROKER_DEFAULTS = {
  host: '0.0.0.0',
  clock: systemClock,
  /** RFC 8489 §18.4: the default STUN port. */
  port: 3478,
  /** Two minutes: a peer refreshing every 10 s can miss many refreshes before it lapses. */
  maxLifetimeMs: 120_000,
  /** A recipient answers in one UDP round trip plus one TCP handshake; 5 s covers a few lost datagrams. */
  recipientTimeoutMs: 5_000,
  /** An exchange is a few round trips; 15 s idle means the peer is gone. */
  exchangeIdleTimeoutMs: 15_000,
  /** A peer gives up on its exchange after 12 s (peer option exchangeTimeoutMs); 30 s is well past that. */
  exchangeMaxLifetimeMs: 30_000,
  /** Like undici's headersTimeout: a STUN message is at most a few KiB, one round trip on any usable path; 5 s is generous. */
  messageTimeoutMs: 5_000,
  /** One TCP round trip; 3 s means the path is unusable for a timed punch anyway. */
  probeTimeoutMs: 3_000,
  maxPendingAttempts: 4096,
  software: 'nattrav broker',
  open: false,
  strictAmplification: false,
  stunCompat: false,
  /** A session is a slot of about 100 bytes and a Map entry (sessions.ts); a registration with its session measured about 320 bytes at 1,000,000 (BENCHMARKS.md). */
  maxSessions: 1_000_000,
  /**
   * A broker serves strangers, and a relayed connection costs its operator twice its bytes.
   * 1 GiB covers what relays are for (a shell, a file of some hundred MB, a video call of
   * about an hour at 2 Mbit/s) while one stranger cannot run up more than 2 GiB of the
   * operator's traffic per attempt; 0 (unlimited) is for brokers of one's own peers.
   */
  relayMaxBytes: 1_073_741_824,
  /** One hour: an interactive session; a relay held open idle for days ties up two sockets. 0: unlimited. */
  relayMaxDurationMs: 3_600_000,
  webSockets: [],
  announce: [],
} as const satisfies ResolvedBrokerOptions;

/** Options that must be integers >= 1 (`port` and the relay quotas have their own rules). */
const POSITIVE_INTEGERS = [
  'maxLifetimeMs',
  'recipientTimeoutMs',
  'exchangeIdleTimeoutMs',
  'exchangeMaxLifetimeMs',
  'messageTimeoutMs',
  'probeTimeoutMs',
  'maxPendingAttempts',
  'maxSessions',
] as const satisfies ReadonlyArray<keyof ResolvedBrokerOptions>;
/** Node's timers hold at most 2^31 - 1 ms (about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Completes `options` with {@link BROKER_DEFAULTS} and checks every field, the one
 * option validator of the broker (limits are checked by limits.ts `resolveLimits`).
 * Throws ERR_INVALID_ARGUMENT naming the option and what to pass instead. Does not
 * touch `options`.
 */
export function resolveBrokerOptions(options: BrokerOptions): ResolvedBrokerOptions {
  const resolved = { ...BROKER_DEFAULTS, ...dropUndefined(options) } as ResolvedBrokerOptions;
  const bad = (key: string, want: string): never => {
    throw new NattravError(ErrorCode.InvalidArgument, `broker option ${key} must be ${want}, got ${describe((resolved as Record<string, unknown>)[key])}`);
  };
  for (const key of POSITIVE_INTEGERS) {
    const value = resolved[key];
    if (!Number.isSafeInteger(value) || value <= 0) bad(key, 'a positive integer');
    if (key.endsWith('Ms') && value > MAX_TIMER_MS) bad(key, `at most ${MAX_TIMER_MS} ms (about 24 days)`);
  }
  if (!Number.isSafeInteger(resolved.relayMaxBytes) || resolved.relayMaxBytes < 0) {
    bad('relayMaxBytes', 'a whole number of bytes (0 for unlimited)');
  }
  if (!Number.isSafeInteger(resolved.relayMaxDurationMs) || resolved.relayMaxDurationMs < 0 || resolved.relayMaxDurationMs > MAX_TIMER_MS) {
    bad('relayMaxDurationMs', `a whole number of ms up to ${MAX_TIMER_MS} (0 for unlimited)`);
  }
  if (typeof resolved.host !== 'string' || resolved.host === '') bad('host', "an IP address or host name (e.g. '0.0.0.0')");
  if (typeof resolved.software !== 'string') bad('software', 'a string');
  if (typeof resolved.open !== 'boolean') bad('open', 'true or false');
  for (const key of ['ca', 'cert', 'key'] as const) {
    if (resolved[key] !== undefined && typeof resolved[key] !== 'string') bad(key, 'a PEM string');
  }
  const clock = resolved.clock as Partial<Clock> | null;
  if (typeof clock !== 'object' || clock === null || typeof clock.now !== 'function' || typeof clock.setTimeout !== 'function' || typeof clock.clearTimeout !== 'function') {
    bad('clock', 'a Clock (now, setTimeout, clearTimeout)');
  }
  if (resolved.limits !== undefined && (typeof resolved.limits !== 'object' || resolved.limits === null)) bad('limits', 'an object of limits (see BROKER_LIMITS_DEFAULTS)');
  checkPort(resolved.port, 'broker port', true);
  if (resolved.alternatePort !== undefined) checkPort(resolved.alternatePort, 'broker alternatePort');
  if (resolved.alternateHost !== undefined && (resolved.alternateHost === '' || isWildcard(resolved.host))) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `broker alternateHost needs a specific primary host, not "${resolved.host}"; pass the host's first address as host and its second as alternateHost`,
    );
  }
  amplificationMode(resolved);
  resolved.announce = checkAnnounce(resolved.announce);
  resolved.webSockets = checkWebSocketListens(resolved.webSockets, resolved.cert !== undefined && resolved.key !== undefined);
  const bus = resolved.bus as Partial<BrokerBus> | undefined;
  if (bus !== undefined && (typeof bus !== 'object' || bus === null || typeof bus.id !== 'string' || typeof bus.send !== 'function' || typeof bus.onMessage !== 'function')) {
    bad('bus', 'a BrokerBus (id, send, onMessage, close)');
  }
  const join = (options as BrokerOptions).joinAddress;
  delete (resolved as { joinAddress?: unknown }).joinAddress;
  if (join !== undefined) {
    resolved.joinAddress = parseJoinAddress(join);
  } else if (bus !== undefined) {
    if (isWildcard(resolved.host)) {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option joinAddress (ip:port) is needed with a bus when host is the wildcard "${resolved.host}": peers registered through other brokers are told to join there`);
    }
    resolved.joinAddress = { host: resolved.host, port: resolved.port };
  }
  return resolved;
}

/** `ip:port` (IPv6 as `[ip]:port`) checked; throws ERR_INVALID_ARGUMENT saying what to pass. */
function parseJoinAddress(text: unknown): { host: string; port: number } {
  const match = typeof text === 'string' ? /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(text) : null;
  const host = match?.[1];
  const port = Number(match?.[2]);
  if (host === undefined || isIP(host) === 0 || !Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new NattravError(ErrorCode.InvalidArgument, `broker option joinAddress must be an IP address and port where peers reach this broker (e.g. 198.51.100.7:3478 or [2001:db8::7]:3478), got ${describe(text)}`);
  }
  return { host, port };
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function dropUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * The anti-amplification mode the options ask for (amplification.ts); throws
 * InvalidArgument for a non-boolean flag or for both flags at once.
 */
export function amplificationMode(options: Pick<ResolvedBrokerOptions, 'strictAmplification' | 'stunCompat'>): AmplificationMode {
  for (const key of ['strictAmplification', 'stunCompat'] as const) {
    if (typeof options[key] !== 'boolean') {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option ${key} must be true or false, got ${JSON.stringify(options[key])}`);
    }
  }
  if (options.strictAmplification && options.stunCompat) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      'broker options strictAmplification and stunCompat contradict each other (answers never larger than requests vs. full RFC 5780 answers to small requests); pass one of them',
    );
  }
  return options.strictAmplification ? 'strict' : options.stunCompat ? 'stun-compat' : 'minimal';
}
