/**
 * What keeps the broker's work and memory bounded whatever arrives: token
 * buckets per source IP address (held in a bounded LRU map, so a flood from
 * many addresses costs a fixed amount of memory), caps on connections and
 * registrations per source and in total, pending attempts per recipient URI,
 * and a throttled report of every limit that bit. Pure bookkeeping: no
 * sockets; the clock is injected. A source is counted by its sourceKey
 * (source-key.ts): an IPv6 address by its /64, which one attacker holds whole.
 */
import { ErrorCode, NattravError } from '../errors.js';
import { sourceKey } from './source-key.js';

/** A token bucket's shape: a sustained rate and the burst allowed on top of it. */
export interface RateSpec {
  /** Tokens added per second (sustained rate). */
  readonly perSecond: number;
  /** Most tokens the bucket holds (largest burst). */
  readonly burst: number;
}

/** The limits of one broker; every field has a generous default (see {@link BROKER_LIMITS_DEFAULTS}). */
export interface BrokerLimits {
  /** Buckets (source x kind) tracked at once; the least recently used is forgotten first. @default 65536 */
  readonly trackedBuckets: number;
  /** UDP Register requests (registrations and refreshes) per source address. @default { perSecond: 20, burst: 200 } */
  readonly udpRegister: RateSpec;
  /** UDP Binding requests per source address. @default { perSecond: 100, burst: 400 } */
  readonly udpBinding: RateSpec;
  /** Every other UDP datagram (responses, other methods, junk) per source address. @default { perSecond: 100, burst: 400 } */
  readonly udpOther: RateSpec;
  /** TCP connections accepted per source address. @default { perSecond: 100, burst: 400 } */
  readonly tcpAccept: RateSpec;
  /** TCP requests (any method) per source address. @default { perSecond: 400, burst: 2000 } */
  readonly tcpRequest: RateSpec;
  /** Connect and Join requests (registry lookups) per source address. @default { perSecond: 50, burst: 200 } */
  readonly connect: RateSpec;
  /** Connect requests per recipient URI, from all sources together. @default { perSecond: 20, burst: 100 } */
  readonly connectPerUri: RateSpec;
  /** Connect requests for one URI waiting at once (open initiator exchanges). @default 64 */
  readonly maxPendingPerUri: number;
  /** Relay requests per source address. @default { perSecond: 20, burst: 100 } */
  readonly relay: RateSpec;
  /** MappingProbe requests per source address. @default { perSecond: 100, burst: 400 } */
  readonly mappingProbe: RateSpec;
  /**
   * Expensive strategies scheduled for one recipient URI, in tokens: a prediction window costs 1,
   * a birthday run 8 (nat/plan.ts STRATEGY_COST); past it the attempt is relayed. @default { perSecond: 0.5, burst: 32 }
   */
  readonly expensivePerUri: RateSpec;
  /** The same budget per initiator source address. @default { perSecond: 0.25, burst: 32 } */
  readonly expensivePerSource: RateSpec;
  /** Live registrations (URIs) granted to one source address. @default 1024 */
  readonly maxRegistrationsPerSource: number;
  /** Live registrations granted in total. @default 1000000 */
  readonly maxRegistrations: number;
  /** Open TCP connections in total. @default 16384 */
  readonly maxConnections: number;
  /** Open TCP connections per source address. @default 512 */
  readonly maxConnectionsPerSource: number;
  /** A TCP connection must deliver its first complete STUN message within this many ms, or it is closed. @default 5000 */
  readonly firstMessageTimeoutMs: number;
  /** Bytes queued for a TCP peer that does not read; past this the connection is closed. @default 65536 */
  readonly maxWriteBufferBytes: number;
  /**
   * Bytes per second by which unauthenticated UDP answers may exceed their requests, from all sources
   * together: the budget that lets standard STUN clients' bare 20-byte Binding requests get an answer
   * (at most 2.5 times the request; see amplification.ts). `{ perSecond: 0, burst: 0 }` makes every
   * answer at most as large as its request, as the broker option `strictAmplification` does.
   * @default { perSecond: 262144, burst: 262144 }
   */
  readonly amplificationAllowance: RateSpec;
  /** The same budget per source address (per possible victim). @default { perSecond: 4096, burst: 16384 } */
  readonly amplificationAllowancePerSource: RateSpec;
  /** 'limited' events emitted per second at most (each kind and source at most once a second). @default 20 */
  readonly limitedEventsPerSecond: number;
}

/** Options of the broker's limits: any subset of {@link BrokerLimits}. */
export type BrokerLimitsOptions = Partial<BrokerLimits>;

/** Defaults of {@link BrokerLimits}, in one place. */
export const BROKER_LIMITS_DEFAULTS: BrokerLimits = {
  /**
   * 128 Ki buckets of ~150 bytes, about 20 MB at worst. Held in two generations (LruMap), so an
   * idle bucket is forgotten (its burst refilled) only after 64 Ki newer sources, as a strict LRU
   * of 64 Ki would: a spoofing flooder needs as many fake sources as before to reset one.
   */
  trackedBuckets: 131_072,
  /** A peer refreshes every 10 s; 200 at once covers a NAT with many peers starting together. */
  udpRegister: { perSecond: 20, burst: 200 },
  /** netcheck and coturn's natdiscovery send a few dozen at most. */
  udpBinding: { perSecond: 100, burst: 400 },
  udpOther: { perSecond: 100, burst: 400 },
  /** Each connect opens an exchange and a mapping probe, up to 4 attempts: 20 concurrent connects need ~160. */
  tcpAccept: { perSecond: 100, burst: 400 },
  tcpRequest: { perSecond: 400, burst: 2000 },
  /** 20 concurrent connects from one NAT address with retries stay far below. */
  connect: { perSecond: 50, burst: 200 },
  /** A recipient cannot usefully accept more; 20 concurrent connects with retries fit in the burst. */
  connectPerUri: { perSecond: 20, burst: 100 },
  maxPendingPerUri: 64,
  relay: { perSecond: 20, burst: 100 },
  mappingProbe: { perSecond: 100, burst: 400 },
  /**
   * A birthday run makes the recipient open up to 2048 connections: four at once (an initiator
   * behind a random NAT trying every cone NAT type of the lab in a row needs three), then one
   * per 16 s per recipient and one per 32 s per initiator, so forged retries cannot turn it into
   * a flood. Prediction windows (4 connections) are cheap enough for 32 at once, then one per 2 s.
   */
  expensivePerUri: { perSecond: 0.5, burst: 32 },
  expensivePerSource: { perSecond: 0.25, burst: 32 },
  /** A large NAT (CGN) may hide many peers behind one address. */
  maxRegistrationsPerSource: 1024,
  /** About 320 bytes each with their sessions, measured at 1,000,000 (registry/memory.ts, sessions.ts, BENCHMARKS.md): some 370 MB when full. */
  maxRegistrations: 1_000_000,
  /** File descriptors are the real bound; 16 Ki sockets with 4 KiB of STUN buffer each is ~64 MB at worst. */
  maxConnections: 16_384,
  maxConnectionsPerSource: 512,
  /** Like undici's headersTimeout: one small message needs one round trip, 5 s is generous. */
  firstMessageTimeoutMs: 5_000,
  /** Sixteen maximal STUN messages. */
  maxWriteBufferBytes: 65_536,
  /**
   * A bare Binding's answer exceeds its request by 24 bytes (44 for 20), so 256 KiB/s answers some
   * 10,900 standard STUN clients a second (a browser's ICE agent sends a handful per call), and caps
   * what the whole broker adds to anyone's traffic at about 2 Mbit/s (after a burst of 256 KiB).
   */
  amplificationAllowance: { perSecond: 262_144, burst: 262_144 },
  /**
   * Above what the per-source Binding rate (udpBinding: 100/s, burst 400) can draw with 2.5 x 20-byte
   * answers (30 bytes each: 3,000 B/s, burst 12,000), so a busy NAT address is cut by the packet rate,
   * never by bytes; one victim receives at most 4 KiB/s (after 16 KiB) more than the requests sent in its name.
   */
  amplificationAllowancePerSource: { perSecond: 4_096, burst: 16_384 },
  limitedEventsPerSecond: 20,
};

/** Which limit bit. */
export type LimitKind =
  | 'udp-register'
  | 'udp-binding'
  | 'udp-other'
  | 'tcp-accept'
  | 'tcp-request'
  | 'connect'
  | 'connect-per-uri'
  | 'pending-per-uri'
  | 'relay'
  | 'mapping-probe'
  | 'expensive-per-uri'
  | 'expensive-per-source'
  | 'registrations-per-source'
  | 'registrations'
  | 'connections'
  | 'connections-per-source'
  | 'first-message-timeout'
  /** A TCP connection did not finish a message (or a TLS handshake) within `messageTimeoutMs` of its first byte. */
  | 'message-timeout'
  /** A TCP exchange reached `exchangeMaxLifetimeMs`. */
  | 'exchange-lifetime'
  /** At the connection cap, an idle or half-sent connection (`source`) was closed to make room (tcp-deadlines.ts). */
  | 'evicted'
  | 'write-buffer'
  | 'amplification';

/** The rate-limited kinds and the option naming each one's {@link RateSpec}. */
const RATE_KINDS = {
  'udp-register': 'udpRegister',
  'udp-binding': 'udpBinding',
  'udp-other': 'udpOther',
  'tcp-accept': 'tcpAccept',
  'tcp-request': 'tcpRequest',
  connect: 'connect',
  'connect-per-uri': 'connectPerUri',
  relay: 'relay',
  'mapping-probe': 'mappingProbe',
  'expensive-per-uri': 'expensivePerUri',
  'expensive-per-source': 'expensivePerSource',
} as const satisfies Partial<Record<LimitKind, keyof BrokerLimits>>;

/** Kinds keyed by the recipient URI; every other kind is keyed by a source address through {@link sourceKey} (an IPv6 source by its /64). */
const PER_URI_KINDS: ReadonlySet<string> = new Set<RateKind>(['connect-per-uri', 'expensive-per-uri']);

/** A kind limited by a token bucket per key. */
export type RateKind = keyof typeof RATE_KINDS;

/** Validates and completes limit options; throws InvalidArgument naming the bad field. */
export function resolveLimits(options: BrokerLimitsOptions = {}): BrokerLimits {
  const resolved: BrokerLimits = { ...BROKER_LIMITS_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  const bad = (key: string, value: unknown, want: string): never => {
    throw new NattravError(ErrorCode.InvalidArgument, `broker limit ${key} must be ${want}, got ${JSON.stringify(value)}`);
  };
  for (const [key, value] of Object.entries(resolved) as Array<[keyof BrokerLimits, BrokerLimits[keyof BrokerLimits]]>) {
    if (typeof value === 'number') {
      if (!Number.isInteger(value) || value <= 0) bad(key, value, 'a positive integer');
    } else if (
      typeof value !== 'object' || value === null ||
      !Number.isFinite(value.perSecond) || value.perSecond < 0 || !Number.isFinite(value.burst) || value.burst < 0
    ) {
      bad(key, value, '{ perSecond, burst } with finite numbers >= 0');
    }
  }
  return resolved;
}

/** A token bucket; the clock is passed in. */
export class TokenBucket {
  #tokens: number;
  #last: number;
  readonly #spec: RateSpec;

  constructor(spec: RateSpec, now: number) {
    this.#spec = spec;
    this.#tokens = spec.burst;
    this.#last = now;
  }

  /** Tokens available at `now`. */
  available(now: number): number {
    if (now > this.#last) {
      this.#tokens = Math.min(this.#spec.burst, this.#tokens + ((now - this.#last) / 1000) * this.#spec.perSecond);
      this.#last = now;
    }
    return this.#tokens;
  }

  /** Takes `n` tokens if there are that many; false (and nothing taken) otherwise. */
  take(n: number, now: number): boolean {
    if (this.available(now) < n) return false;
    this.#tokens -= n;
    return true;
  }
}

/**
 * A Map that holds at most `max` entries, forgetting the least recently used first,
 * in generations (as a 2-generation cache does): new and used entries go to the young
 * generation of up to max / 2; when it is full, it becomes the old one and the old one
 * is forgotten whole. So an entry used within the last max / 2 insertions is kept, and
 * a lookup of a young entry (the busy ones) costs one Map lookup, nothing moved.
 */
export class LruMap<K, V> {
  #young = new Map<K, V>();
  #old = new Map<K, V>();
  readonly #half: number;
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
    this.#half = Math.max(1, Math.floor(max / 2));
  }

  /** Entries held. */
  get size(): number {
    return this.#young.size + this.#old.size;
  }

  /** The value for `key`, marking it recently used. */
  get(key: K): V | undefined {
    const young = this.#young.get(key);
    if (young !== undefined) return young;
    const old = this.#old.get(key);
    if (old !== undefined) {
      this.#old.delete(key);
      this.#insert(key, old);
    }
    return old;
  }

  /** Stores `value`, forgetting the old generation when the young one is full. */
  set(key: K, value: V): void {
    if (this.#young.has(key)) {
      this.#young.set(key, value);
      return;
    }
    this.#old.delete(key);
    this.#insert(key, value);
  }

  #insert(key: K, value: V): void {
    if (this.#young.size >= this.#half) {
      this.#old = this.#max >= 2 ? this.#young : new Map();
      this.#young = new Map();
    }
    this.#young.set(key, value);
  }
}

/** Token buckets per (kind, key) in one bounded LRU map ({@link LruMap}). */
export class RateLimiter {
  readonly #limits: BrokerLimits;
  readonly #buckets: LruMap<string, TokenBucket>;
  readonly #now: () => number;
  /** The bucket looked up last, its kind and key. */
  #lastBucket: TokenBucket | undefined;
  #lastKind = '';
  #lastKey = '';

  constructor(limits: BrokerLimits, now: () => number = Date.now) {
    this.#limits = limits;
    this.#buckets = new LruMap(limits.trackedBuckets);
    this.#now = now;
  }

  /** Buckets held (bounded by `trackedBuckets`). */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes `n` tokens (default 1) from the bucket of `kind` for `key`; false when the limit bit. */
  take(kind: RateKind, key: string, n = 1): boolean {
    return this.bucket(kind, key).take(n, this.#now());
  }

  /** The bucket of `kind` for `key` (a URI, or a source address counted by its {@link sourceKey}), created full. */
  bucket(kind: RateKind | 'amplification', key: string): TokenBucket {
    // A flood comes from one source: its bucket again, without building the key (nothing was
    // looked up since, so nothing was inserted or evicted: it is still the one in the map).
    if (this.#lastBucket !== undefined && this.#lastKind === kind && this.#lastKey === key) return this.#lastBucket;
    const id = `${kind}|${PER_URI_KINDS.has(kind) ? key : sourceKey(key)}`;
    let bucket = this.#buckets.get(id);
    if (bucket === undefined) {
      const spec = kind === 'amplification' ? this.#limits.amplificationAllowancePerSource : this.#limits[RATE_KINDS[kind]];
      bucket = new TokenBucket(spec, this.#now());
      this.#buckets.set(id, bucket);
    }
    this.#lastKind = kind;
    this.#lastKey = key;
    this.#lastBucket = bucket;
    return bucket;
  }
}

/** Counts open things per key with a per-key and a total cap; a key's entry exists only while its count is positive. */
export class CountCap {
  readonly #counts = new Map<string, number>();
  readonly #perKey: number;
  readonly #total: number;
  #sum = 0;

  constructor(perKey: number, total: number) {
    this.#perKey = perKey;
    this.#total = total;
  }

  /** How many are open in total. */
  get total(): number {
    return this.#sum;
  }

  /** Counts one more for `key`, or says which cap it would break. */
  acquire(key: string): 'ok' | 'per-key' | 'total' {
    if (this.#sum >= this.#total) return 'total';
    const count = this.#counts.get(key) ?? 0;
    if (count >= this.#perKey) return 'per-key';
    this.#counts.set(key, count + 1);
    this.#sum++;
    return 'ok';
  }

  /** Counts one less for `key` (after a successful {@link CountCap.acquire}). */
  release(key: string): void {
    const count = this.#counts.get(key);
    if (count === undefined) return;
    if (count <= 1) this.#counts.delete(key);
    else this.#counts.set(key, count - 1);
    this.#sum--;
  }
}

/** A limit that bit, as the broker reports it. */
export interface LimitedReport {
  readonly kind: LimitKind;
  /** The source IP address (or, for per-URI kinds, the initiator's address). */
  readonly source: string;
  /** The recipient URI, for per-URI kinds. */
  readonly uri?: string;
}

/** How often one (kind, source) pair may be reported, in ms: a flood is one line a second, not one per packet. */
const REPORT_INTERVAL_MS = 1_000;
/** (kind, source) pairs remembered for throttling. */
const REPORT_KEYS = 4_096;

/** Throttles limit reports: each (kind, source) once per {@link REPORT_INTERVAL_MS}, and `perSecond` in all. */
export class LimitReporter {
  readonly #last = new LruMap<string, number>(REPORT_KEYS);
  readonly #global: TokenBucket;
  readonly #now: () => number;
  readonly #emit: (report: LimitedReport) => void;
  /** Limits that bit since start, reported or not, by kind. */
  readonly counts = new Map<LimitKind, number>();

  constructor(perSecond: number, emit: (report: LimitedReport) => void, now: () => number = Date.now) {
    this.#global = new TokenBucket({ perSecond, burst: perSecond }, now());
    this.#emit = emit;
    this.#now = now;
  }

  /** Notes that a limit bit and reports it unless throttled. Never throws. */
  report(report: LimitedReport): void {
    this.counts.set(report.kind, (this.counts.get(report.kind) ?? 0) + 1);
    const now = this.#now();
    const key = `${report.kind}|${report.source}`;
    const last = this.#last.get(key);
    if (last !== undefined && now - last < REPORT_INTERVAL_MS) return;
    if (!this.#global.take(1, now)) return;
    this.#last.set(key, now);
    try {
      this.#emit(report);
    } catch {
      // A listener's failure must not turn into the broker's.
    }
  }
}
