/**
 * The mapping-probe book: the public endpoints the broker saw on its alternate
 * port for each side of each attempt (README "Strategies"). A probe names its
 * attempt and role, and may arrive before the broker has seen that side's
 * exchange, so observations are kept until the attempt takes them; once the
 * rendezvous knows the exchange's source address, only probes from that
 * address count (a probe from anywhere else says nothing about that peer's
 * NAT and is ignored). Bounded: at most `maxRecords` records of at most
 * {@link MAX_OBSERVATIONS} observations each; records nobody waits for expire.
 * No sockets; time and timers come from the injected clock.
 */
import type { Clock, TimerHandle } from '../common/clock.js';
import type { RoleName } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';

/** Mapping probes a peer sends per attempt (with its exchange: two observations from one local port). */
export const MAPPING_PROBES = 1;
/** Observations kept per record, from distinct source addresses, before the exchange's own is known. */
export const MAX_OBSERVATIONS = 4;
/** Records kept for attempts, at most (memory bound). */
export const MAX_PROBE_RECORDS = 8192;
/** How long a record nobody waits for is kept, in ms: an attempt takes its probes within seconds. */
export const PROBE_RECORD_TTL_MS = 30_000;

/** What became of an observation. */
export type ProbeOutcome = 'recorded' | 'ignored' | 'full';

/** The probes of one side of one attempt. */
interface ProbeRecord {
  readonly observations: TransportAddress[];
  /** The exchange's source address, once a waiter named it: probes from elsewhere are ignored. */
  source: string | undefined;
  readonly expires: number;
  readonly waiters: Set<() => void>;
}

/** Mapping-probe observations by attempt and role. */
export class ProbeBook {
  readonly #records = new Map<string, ProbeRecord>();
  readonly #clock: Clock;
  readonly #max: number;

  constructor(clock: Clock, maxRecords: number = MAX_PROBE_RECORDS) {
    this.#clock = clock;
    this.#max = maxRecords;
  }

  /** Records held. */
  get size(): number {
    return this.#records.size;
  }

  /**
   * A probe for (`attempt`, `role`) came from `endpoint`. 'ignored': it came from
   * another address than the side's exchange, repeats its address, or the record is
   * full; 'full': the book holds {@link MAX_PROBE_RECORDS} records (refuse the probe).
   */
  observe(attempt: string, role: RoleName, endpoint: TransportAddress): ProbeOutcome {
    const record = this.#record(`${attempt}/${role}`);
    if (record === undefined) return 'full';
    if (record.source !== undefined && endpoint.address !== record.source) return 'ignored';
    const fromThere = record.observations.filter((o) => o.address === endpoint.address).length;
    if (fromThere >= MAPPING_PROBES || record.observations.length >= MAX_OBSERVATIONS) return 'ignored';
    record.observations.push(endpoint);
    if (record.source !== undefined && fromThere + 1 >= MAPPING_PROBES) for (const wake of [...record.waiters]) wake();
    return 'recorded';
  }

  /**
   * Resolves when (`attempt`, `role`) has {@link MAPPING_PROBES} observations from
   * `source` (the side's exchange address), or after `timeoutMs`. From now on
   * probes from other addresses are ignored. Never rejects.
   */
  wait(attempt: string, role: RoleName, source: string, timeoutMs: number): Promise<void> {
    const record = this.#record(`${attempt}/${role}`, true) as ProbeRecord;
    record.source = source;
    if (count(record, source) >= MAPPING_PROBES) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: TimerHandle | undefined;
      const wake = (): void => {
        this.#clock.clearTimeout(timer);
        record.waiters.delete(wake);
        resolve();
      };
      record.waiters.add(wake);
      timer = this.#clock.setTimeout(wake, timeoutMs);
    });
  }

  /** Removes the record of (`attempt`, `role`) and returns its observations from `source`. */
  take(attempt: string, role: RoleName, source: string): TransportAddress[] {
    const key = `${attempt}/${role}`;
    const record = this.#records.get(key);
    this.#records.delete(key);
    return (record?.observations ?? []).filter((o) => o.address === source);
  }

  /** The record for `key`, created if there is room (always, with `force`: a waiter's attempt is already counted). */
  #record(key: string, force = false): ProbeRecord | undefined {
    const existing = this.#records.get(key);
    if (existing !== undefined) return existing;
    this.#prune();
    if (!force && this.#records.size >= this.#max) return undefined;
    const record: ProbeRecord = { observations: [], source: undefined, expires: this.#clock.now() + PROBE_RECORD_TTL_MS, waiters: new Set() };
    this.#records.set(key, record);
    return record;
  }

  /** Drops expired records nobody waits for; records are in creation order, so it stops at the first live one. */
  #prune(): void {
    const now = this.#clock.now();
    for (const [key, record] of this.#records) {
      if (record.expires > now) break;
      if (record.waiters.size === 0) this.#records.delete(key);
    }
  }
}

function count(record: ProbeRecord, source: string): number {
  return record.observations.filter((o) => o.address === source).length;
}
