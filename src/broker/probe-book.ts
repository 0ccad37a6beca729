/**
 * The mapping-probe book: the public endpoints the broker saw on its alternate
 * port for each side of each attempt (README "Strategies"). A probe names its
 * attempt and role, and may arrive before the broker has seen that side's
 * exchange, so observations are kept until the attempt takes them; once the
 * rendezvous knows the exchange's source address, only probes from that
 * address count (a probe from anywhere else says nothing about that peer's
 * NAT and is ignored). Probes carry integrity (under the initiator's MAPPING-KEY,
 * the recipient's session key): once the attempt names the key of a side, only
 * probes that verify under it count, those that came before included, so a probe
 * forged from the peer's own public address (a neighbour behind the same NAT) can
 * neither take the real probe's place nor tell the broker a mapping. Bounded: at most `maxRecords` records of at most
 * {@link MAX_OBSERVATIONS} observations each; records nobody waits for expire.
 * No sockets; time and timers come from the injected clock.
 */
import type { Clock, TimerHandle } from '../common/clock.js';
import type { StunMessage } from '../wire/message.js';
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
export type ProbeOutcome = 'recorded' | 'ignored' | 'forged' | 'full';

/** Checks a probe's integrity under the key of its side. */
export type ProbeCheck = (probe: StunMessage) => boolean;

/** One probe: where it came from, and the request (checked when its side's key becomes known). */
interface Observation {
  readonly endpoint: TransportAddress;
  readonly probe: StunMessage;
}

/** The probes of one side of one attempt. */
interface ProbeRecord {
  observations: Observation[];
  /** The integrity check of this side, once the attempt named its key; before, probes are kept unchecked. */
  check: ProbeCheck | undefined;
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
  observe(attempt: string, role: RoleName, endpoint: TransportAddress, probe: StunMessage): ProbeOutcome {
    const record = this.#record(`${attempt}/${role}`);
    if (record === undefined) return 'full';
    if (record.check !== undefined && !record.check(probe)) return 'forged';
    if (record.source !== undefined && endpoint.address !== record.source) return 'ignored';
    // Unchecked probes do not hold an address's place: a forged one must not keep the real one out.
    const fromThere = record.check === undefined ? 0 : count(record, endpoint.address);
    if (fromThere >= MAPPING_PROBES || record.observations.length >= MAX_OBSERVATIONS) return 'ignored';
    record.observations.push({ endpoint, probe });
    if (record.source !== undefined && fromThere + 1 >= MAPPING_PROBES) for (const wake of [...record.waiters]) wake();
    return 'recorded';
  }

  /**
   * From now on probes of (`attempt`, `role`) count only when `check` passes; those
   * kept so far are checked now (a side without a key is never checked).
   */
  require(attempt: string, role: RoleName, check: ProbeCheck): void {
    const record = this.#record(`${attempt}/${role}`, true) as ProbeRecord;
    record.check = check;
    record.observations = record.observations.filter((o) => check(o.probe));
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

  /** The integrity check (`attempt`, `role`)'s probes must pass, once required. */
  checkOf(attempt: string, role: RoleName): ProbeCheck | undefined {
    return this.#records.get(`${attempt}/${role}`)?.check;
  }

  /** Removes the record of (`attempt`, `role`) and returns its observations from `source`. */
  take(attempt: string, role: RoleName, source: string): TransportAddress[] {
    const key = `${attempt}/${role}`;
    const record = this.#records.get(key);
    this.#records.delete(key);
    return (record?.observations ?? []).filter((o) => o.endpoint.address === source).map((o) => o.endpoint);
  }

  /** The record for `key`, created if there is room (always, with `force`: a waiter's attempt is already counted). */
  #record(key: string, force = false): ProbeRecord | undefined {
    const existing = this.#records.get(key);
    if (existing !== undefined) return existing;
    this.#prune();
    if (!force && this.#records.size >= this.#max) return undefined;
    const record: ProbeRecord = { observations: [], check: undefined, source: undefined, expires: this.#clock.now() + PROBE_RECORD_TTL_MS, waiters: new Set() };
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
  return record.observations.filter((o) => o.endpoint.address === source).length;
}
