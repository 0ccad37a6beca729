/**
 * Adaptive keepalive: a recipient measures how long its NAT keeps an idle UDP mapping
 * (nat/lifetime.ts) in the background, after its first registration (never before: the
 * registration does not wait), and sets its refresh interval from it:
 *
 * - never above {@link KEEPALIVE_LIFETIME_SHARE} (80%) of the measured lifetime,
 * - never below {@link KEEPALIVE_FLOOR_MS} (5 s), which wins over the 80% rule for a
 *   NAT that forgets in under 6.25 s,
 * - never above `maxMs` (the default {@link ADAPTIVE_KEEPALIVE_DEFAULTS}.maxMs, 60 s,
 *   unless the user allows longer), nor above half the registration lifetime the broker
 *   granted, so a refresh always comes before the broker forgets us, one lost refresh included.
 *
 * Until measured, the configured starting interval holds (today's 10 s default). The
 * lifetime asked of the broker follows the interval ({@link PEER_DEFAULTS}.lifetimeFactor
 * times it). A measurement is remembered per public address ({@link LifetimeMemory}) so a
 * restart behind the same NAT adapts at once. Should a refresh come back with another
 * public port while adapted (the NAT forgot the mapping sooner than measured), the
 * starting interval is restored (until the public address changes) and the memory of that
 * address dropped. A measurement that
 * failed (a broker without RESPONSE-PORT, a network that drops the probes) is not repeated
 * on every refresh: the same public address measures again only after
 * {@link MEASURE_RETRY_MIN_MS} (5 min), doubling per failure up to {@link MEASURE_RETRY_MAX_MS}
 * (1 h); another public address measures at once.
 */
import { EventEmitter } from 'node:events';
import { systemClock, type Clock } from '../common/clock.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { measureMappingLifetime, type MappingLifetime } from '../nat/lifetime.js';
import { dgramLifetimeIo } from '../nat/lifetime-io.js';
import type { TransportAddress } from '../wire/types.js';
import { PEER_DEFAULTS } from './options.js';
import type { RegisteredEvent } from './registration.js';

/** The share of the measured lifetime a keepalive interval may reach. */
export const KEEPALIVE_LIFETIME_SHARE = 0.8;
/** The shortest keepalive interval, in ms, whatever the NAT: more often would load the broker for little. */
export const KEEPALIVE_FLOOR_MS = 5_000;

/**
 * After a failed measurement, the same public address measures again this late, in ms: a
 * measurement costs ~7 sockets and ~20 packets, and what made it fail (a broker that cannot
 * answer RESPONSE-PORT, probes dropped on the way) rarely changes within minutes.
 */
export const MEASURE_RETRY_MIN_MS = 5 * 60_000;
/** The wait after failed measurements doubles up to this, in ms: a peer that runs for days still notices a broker that learned RESPONSE-PORT. */
export const MEASURE_RETRY_MAX_MS = 60 * 60_000;
/** Public addresses whose failures are remembered, at most (the oldest is forgotten first). */
const FAILURES_REMEMBERED = 16;

/** Defaults of adaptive keepalive, each with its reason. */
export const ADAPTIVE_KEEPALIVE_DEFAULTS = {
  /**
   * The longest adapted interval, in ms: a broker restart or a dead broker of a cluster is
   * noticed within one interval, so a minute bounds that; raise it (`keepaliveMaxMs`) for
   * fewer packets behind a NAT with long timeouts.
   */
  maxMs: 60_000,
  /** How long a measurement is remembered for its public address, in ms: NAT settings rarely change, but a peer that runs for months measures again. */
  rememberMs: 60 * 60_000,
} as const;

/**
 * The keepalive interval for a measured `lifetime` (see the module comment), in ms, at
 * most `maxMs`. `grantedMs`, the registration lifetime the broker granted, caps it at half.
 */
export function keepaliveFromLifetime(lifetime: Pick<MappingLifetime, 'lifetimeMs' | 'upperMs'>, maxMs: number, grantedMs = Number.POSITIVE_INFINITY): number {
  // A mapping that died sooner than another lived (an inconsistent NAT): trust the shorter.
  const lifetimeMs = Math.min(lifetime.lifetimeMs, lifetime.upperMs ?? Number.POSITIVE_INFINITY);
  const share = Math.floor(KEEPALIVE_LIFETIME_SHARE * lifetimeMs);
  return Math.max(KEEPALIVE_FLOOR_MS, Math.min(share, maxMs, Math.floor(grantedMs / 2)));
}

/** Measurements by public address, each kept for a while (see the module comment). */
export class LifetimeMemory {
  readonly #entries = new Map<string, { lifetime: MappingLifetime; at: number }>();

  constructor(
    readonly rememberMs: number = ADAPTIVE_KEEPALIVE_DEFAULTS.rememberMs,
    readonly clock: Clock = systemClock,
  ) {}

  /** The measurement for `publicAddress`, unless none or too old. */
  recall(publicAddress: string): MappingLifetime | undefined {
    const entry = this.#entries.get(publicAddress);
    if (entry === undefined) return undefined;
    if (this.clock.now() - entry.at >= this.rememberMs) {
      this.#entries.delete(publicAddress);
      return undefined;
    }
    return entry.lifetime;
  }

  /** Remembers `lifetime` for `publicAddress`. */
  remember(publicAddress: string, lifetime: MappingLifetime): void {
    this.#entries.set(publicAddress, { lifetime, at: this.clock.now() });
  }

  /** Forgets `publicAddress` (its measurement proved wrong). */
  forget(publicAddress: string): void {
    this.#entries.delete(publicAddress);
  }
}

/** This process's memory of measured lifetimes (every server of the process shares it). */
export const processLifetimeMemory = new LifetimeMemory();

/** What 'keepalive' reports: the interval changed, and why. */
export interface KeepaliveEvent {
  /** The refresh interval now in use, in ms. */
  readonly keepaliveMs: number;
  /** The registration lifetime now asked of the broker, in ms. */
  readonly lifetimeMs: number;
  /** 'measured' (just now), 'remembered' (measured earlier from this public address), 'reset' (the NAT forgot sooner than measured: back to the start). */
  readonly source: 'measured' | 'remembered' | 'reset';
  /** The measurement behind it (absent for 'reset'). */
  readonly lifetime?: MappingLifetime;
  /** The public address it was measured from. */
  readonly publicAddress: string;
}

/** Where the adapter sets the interval (PeerRegistration.setKeepalive). */
export interface KeepaliveTarget {
  setKeepalive(keepaliveMs: number, lifetimeMs: number): void;
}

/** Options of {@link KeepaliveAdapter}. */
export interface KeepaliveAdapterOptions {
  /** The interval until measured, in ms. */
  readonly startMs: number;
  /** The registration lifetime asked until measured, in ms (also the least asked afterwards). */
  readonly startLifetimeMs: number;
  /** The longest adapted interval, in ms. @default ADAPTIVE_KEEPALIVE_DEFAULTS.maxMs */
  readonly maxMs?: number;
  /** @default processLifetimeMemory */
  readonly memory?: LifetimeMemory;
  /** Measures from a fresh socket towards `broker`. @default measureMappingLifetime over dgram sockets */
  readonly measure?: (broker: TransportAddress, maxLifetimeMs: number, signal: AbortSignal) => Promise<MappingLifetime>;
  /** When a failed measurement may be repeated. @default systemClock */
  readonly clock?: Clock;
}

/** The silences tested: up to what the longest allowed interval needs (it is 80% of it), and at least 2 × the floor. */
export function measureCeilingMs(maxMs: number): number {
  return Math.max(2 * KEEPALIVE_FLOOR_MS, Math.ceil(maxMs / KEEPALIVE_LIFETIME_SHARE));
}

const defaultMeasure = (broker: TransportAddress, maxLifetimeMs: number, signal: AbortSignal): Promise<MappingLifetime> =>
  measureMappingLifetime({ io: dgramLifetimeIo(broker), maxMs: maxLifetimeMs, signal });

/**
 * Follows a registration's 'registered' events and sets its interval (see the module
 * comment). Emits 'keepalive' (KeepaliveEvent) when it changes, and 'failed' (NattravError)
 * once per failed measurement (the interval then stays; the same public address measures
 * again after a backoff, {@link MEASURE_RETRY_MIN_MS} doubling to {@link MEASURE_RETRY_MAX_MS};
 * another public address at once).
 */
export class KeepaliveAdapter extends EventEmitter {
  readonly #target: KeepaliveTarget;
  readonly #options: KeepaliveAdapterOptions;
  readonly #maxMs: number;
  readonly #memory: LifetimeMemory;
  readonly #closing = new AbortController();
  /** The public address measured (or being measured) from, and what it gave. */
  #measuredFor: string | undefined;
  /** Public addresses a measurement runs from now. */
  readonly #measuring = new Set<string>();
  /** Per public address: failed measurements in a row, and when the next may start (clock ms). */
  readonly #failures = new Map<string, { count: number; retryAt: number }>();
  readonly #clock: Clock;
  #lifetime: MappingLifetime | undefined;
  #publicPort: number | undefined;
  #keepaliveMs: number;
  #grantedMs = Number.POSITIVE_INFINITY;

  constructor(target: KeepaliveTarget, options: KeepaliveAdapterOptions) {
    super();
    this.#target = target;
    this.#options = options;
    this.#maxMs = options.maxMs ?? ADAPTIVE_KEEPALIVE_DEFAULTS.maxMs;
    this.#memory = options.memory ?? processLifetimeMemory;
    this.#keepaliveMs = options.startMs;
    this.#clock = options.clock ?? systemClock;
  }

  /** The interval in use, in ms. */
  get keepaliveMs(): number {
    return this.#keepaliveMs;
  }

  /** Each registration: measure once per public address (UDP only), keep the interval under half the granted lifetime, notice a mapping that died. */
  registered(event: RegisteredEvent): void {
    if (this.#closing.signal.aborted || event.transport !== 'udp') return;
    const address = event.publicEndpoint.address;
    const portChanged = this.#publicPort !== undefined && this.#publicPort !== event.publicEndpoint.port;
    this.#publicPort = event.publicEndpoint.port;
    this.#grantedMs = event.lifetimeMs;
    if (portChanged && event.kind !== 'first' && this.#lifetime !== undefined && address === this.#measuredFor) {
      // The NAT gave a new port between two refreshes: our mapping died sooner than measured.
      this.#memory.forget(address);
      this.#lifetime = undefined;
      this.#apply(this.#options.startMs, 'reset', address);
      return;
    }
    if (address !== this.#measuredFor) {
      this.#measuredFor = address;
      this.#lifetime = undefined;
      const remembered = this.#memory.recall(address);
      if (remembered !== undefined) this.#adopt(remembered, 'remembered', address, true);
      else this.#measureIfDue(event.brokerAddress, address);
      return;
    }
    if (this.#lifetime !== undefined) this.#adopt(this.#lifetime, 'measured', address, false);
    // A failed measurement is repeated after its backoff; after a reset the starting interval holds until the address changes.
    else if (this.#failures.has(address)) this.#measureIfDue(event.brokerAddress, address);
  }

  /** Stops a measurement in progress. Idempotent. */
  close(): void {
    this.#closing.abort(new NattravError(ErrorCode.Closed, 'the server closed'));
  }

  /** Measures from `address` unless a measurement runs from it or its last one failed too recently. */
  #measureIfDue(broker: TransportAddress, address: string): void {
    const failed = this.#failures.get(address);
    if (this.#measuring.has(address) || (failed !== undefined && this.#clock.now() < failed.retryAt)) return;
    this.#measuring.add(address);
    void this.#measure(broker, address).finally(() => this.#measuring.delete(address));
  }

  async #measure(broker: TransportAddress, address: string): Promise<void> {
    const measure = this.#options.measure ?? defaultMeasure;
    try {
      const lifetime = await measure(broker, measureCeilingMs(this.#maxMs), this.#closing.signal);
      this.#failures.delete(address);
      if (this.#closing.signal.aborted || this.#measuredFor !== address) return;
      this.#memory.remember(address, lifetime);
      this.#adopt(lifetime, 'measured', address, true);
    } catch (err) {
      if (this.#closing.signal.aborted) return;
      this.#failedFrom(address);
      this.emit('failed', isNattravError(err) ? err : new NattravError(ErrorCode.Protocol, `measuring the mapping lifetime failed: ${String(err)}`, { cause: err }));
    }
  }

  /** Counts a failed measurement from `address`: the next from it waits 5 min, doubling per failure to 1 h. */
  #failedFrom(address: string): void {
    const count = (this.#failures.get(address)?.count ?? 0) + 1;
    const waitMs = Math.min(MEASURE_RETRY_MIN_MS * 2 ** (count - 1), MEASURE_RETRY_MAX_MS);
    this.#failures.delete(address);
    this.#failures.set(address, { count, retryAt: this.#clock.now() + waitMs });
    const oldest = this.#failures.keys().next().value;
    if (this.#failures.size > FAILURES_REMEMBERED && oldest !== undefined) this.#failures.delete(oldest);
  }

  /**
   * Sets the interval from `lifetime`. A new measurement (`fresh`) ignores the grant seen so
   * far: it answered the lifetime asked before, not the one that follows the new interval.
   * The refreshes after it bring the broker's answer to the new ask, and a grant below twice
   * the interval then lowers it.
   */
  #adopt(lifetime: MappingLifetime, source: 'measured' | 'remembered', address: string, fresh: boolean): void {
    this.#lifetime = lifetime;
    if (fresh) this.#grantedMs = Number.POSITIVE_INFINITY;
    const keepaliveMs = keepaliveFromLifetime(lifetime, this.#maxMs, this.#grantedMs);
    if (keepaliveMs !== this.#keepaliveMs || fresh) this.#apply(keepaliveMs, source, address, lifetime);
  }

  #apply(keepaliveMs: number, source: KeepaliveEvent['source'], address: string, lifetime?: MappingLifetime): void {
    this.#keepaliveMs = keepaliveMs;
    const lifetimeMs = Math.max(this.#options.startLifetimeMs, PEER_DEFAULTS.lifetimeFactor * keepaliveMs);
    this.#target.setKeepalive(keepaliveMs, lifetimeMs);
    this.emit('keepalive', { keepaliveMs, lifetimeMs, source, publicAddress: address, ...(lifetime === undefined ? {} : { lifetime }) } satisfies KeepaliveEvent);
  }
}

/** Adaptive keepalive as a server runs it: on or off, its bounds, and whether a loopback broker was asked for explicitly. */
export interface AdaptiveKeepaliveSettings {
  /** The interval until measured, in ms. */
  readonly startMs: number;
  /** The lifetime asked until measured, in ms. */
  readonly startLifetimeMs: number;
  /** The longest adapted interval, in ms. */
  readonly maxMs: number;
  /** True when the user turned it on explicitly: then also towards a broker on loopback. */
  readonly explicit: boolean;
}

/**
 * Reads `adaptiveKeepalive` and `keepaliveMaxMs` of the server options (ERR_INVALID_ARGUMENT
 * names a bad one). Adapting is on unless `adaptiveKeepalive: false`, or `keepaliveMs` was
 * given (a fixed interval) without `adaptiveKeepalive: true`.
 */
export function adaptiveKeepaliveSettings(
  options: { readonly adaptiveKeepalive?: boolean; readonly keepaliveMaxMs?: number; readonly keepaliveMs?: number },
  startMs: number,
  startLifetimeMs: number,
): AdaptiveKeepaliveSettings | false {
  const { adaptiveKeepalive, keepaliveMaxMs } = options;
  if (adaptiveKeepalive !== undefined && typeof adaptiveKeepalive !== 'boolean') {
    throw new NattravError(ErrorCode.InvalidArgument, `adaptiveKeepalive: expected true or false, got ${String(adaptiveKeepalive)}`);
  }
  if (keepaliveMaxMs !== undefined && (!Number.isInteger(keepaliveMaxMs) || keepaliveMaxMs < KEEPALIVE_FLOOR_MS)) {
    throw new NattravError(ErrorCode.InvalidArgument, `keepaliveMaxMs: expected an integer of at least ${KEEPALIVE_FLOOR_MS} (the shortest keepalive), got ${String(keepaliveMaxMs)}`);
  }
  const on = adaptiveKeepalive ?? options.keepaliveMs === undefined;
  if (!on) return false;
  return { startMs, startLifetimeMs, maxMs: keepaliveMaxMs ?? ADAPTIVE_KEEPALIVE_DEFAULTS.maxMs, explicit: adaptiveKeepalive === true };
}

/** Loopback brokers have no NAT in front of them to measure: adapt towards one only when asked explicitly. */
function loopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

/**
 * Starts adapting `registration`'s interval (a no-op returning undefined when `settings` is
 * false); `emit` passes on 'keepalive' and 'keepaliveFailed' (the server's events).
 */
export function adaptKeepalive(
  registration: KeepaliveTarget & EventEmitter,
  settings: AdaptiveKeepaliveSettings | false,
  emit: (event: 'keepalive' | 'keepaliveFailed', payload: KeepaliveEvent | NattravError) => void,
): KeepaliveAdapter | undefined {
  if (settings === false) return undefined;
  const adapter = new KeepaliveAdapter(registration, settings);
  adapter.on('keepalive', (event: KeepaliveEvent) => emit('keepalive', event));
  adapter.on('failed', (err: NattravError) => emit('keepaliveFailed', err));
  // Before the server's own listener: the interval is set before the loop reads it.
  registration.prependListener('registered', (event: RegisteredEvent) => {
    if (settings.explicit || !loopback(event.brokerAddress.address)) adapter.registered(event);
  });
  return adapter;
}
