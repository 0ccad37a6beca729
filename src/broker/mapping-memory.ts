/**
 * How each NAT maps TCP, remembered per public address (issue 13: a repeated attempt
 * from the same NAT does not wait for mapping probes). The rendezvous records the
 * mapping it classified from an attempt's probes under the side's public address; the
 * next attempt from there may schedule with it at once. Only 'eim' counts as known:
 * prediction needs the last port a sequential NAT gave out, and a random NAT's is worth
 * nothing. 'none' is never remembered: it comes from the side's own claim (PRIVATE-ENDPOINT
 * equal to its public endpoint), which each attempt reads from its own request at once,
 * and one peer's claim must not speak for the other hosts behind its address.
 *
 * One public address may front several hosts (CGNAT, a shared office NAT), and their NATs
 * need not map alike. So the memory is used only while the address looks uniform: when two
 * observations of it disagree (an 'eim' record and a 'random' or 'sequential' attempt, or a
 * late probe of an attempt scheduled with 'eim' that came from another port,
 * {@link MappingMemory.contradict}), the address is disputed for the TTL and every attempt
 * from it waits for its own probes again. A stranger behind the same address can dispute
 * it, which costs its neighbours the wait they would have without the memory, nothing more.
 *
 * It is broker memory a stranger can grow (every new source address adds a record), so
 * it is bounded: at most `maxEntries` records, each kept {@link MAPPING_MEMORY_TTL_MS};
 * at the bound the oldest record goes. No sockets; time comes in as `now`.
 */
import type { MappingKind } from '../nat/mapping.js';
import type { StunMessage } from '../wire/message.js';
import type { RoleName } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { MAX_PROBE_RECORDS, PROBE_RECORD_TTL_MS, type ProbeCheck } from './probe-book.js';

/** How long a NAT's mapping behaviour is remembered, in ms: NATs keep their behaviour, but a host moves to another NAT behind the same address seldom within minutes. */
export const MAPPING_MEMORY_TTL_MS = 10 * 60_000;
/** Records kept at most (memory bound: about 100 bytes each). */
export const MAX_MAPPING_MEMORY = 65_536;

interface Remembered {
  readonly mapping: MappingKind;
  readonly expires: number;
  /** Observations of the address disagreed: nothing is known ahead for it until `expires`. */
  readonly disputed: boolean;
}

/** True for a mapping an attempt can be scheduled with without fresh probes ('none' is read from each attempt's own request instead). */
export function knownAhead(mapping: MappingKind): boolean {
  return mapping.kind === 'eim';
}

/** Mapping behaviour by public address, bounded, each record for {@link MAPPING_MEMORY_TTL_MS}. */
export class MappingMemory {
  readonly #records = new Map<string, Remembered>();
  readonly #max: number;
  readonly #ttlMs: number;

  constructor(maxEntries: number = MAX_MAPPING_MEMORY, ttlMs: number = MAPPING_MEMORY_TTL_MS) {
    this.#max = maxEntries;
    this.#ttlMs = ttlMs;
  }

  /** Records held. */
  get size(): number {
    return this.#records.size;
  }

  /**
   * Remembers `mapping` for `address` from `now` on; an 'unknown' mapping (no probe came)
   * teaches nothing, and 'none' (the side's own claim) speaks for no other host: neither is
   * recorded (nor erases what was known). A kind that disagrees with the fresh record disputes the address.
   */
  record(address: string, mapping: MappingKind, now: number): void {
    if (mapping.kind === 'unknown' || mapping.kind === 'none') return;
    const before = this.#fresh(address, now);
    const disputed = before !== undefined && (before.disputed || before.mapping.kind !== mapping.kind);
    this.#set(address, { mapping, expires: now + this.#ttlMs, disputed });
  }

  /**
   * A probe of an attempt scheduled with what was known for `address` showed another mapping
   * (a port other than its exchange's, where 'eim' was known): the address is disputed.
   */
  contradict(address: string, now: number): void {
    const before = this.#fresh(address, now);
    if (before !== undefined) this.#set(address, { mapping: before.mapping, expires: now + this.#ttlMs, disputed: true });
  }

  /** The mapping remembered for `address`, if it is still fresh and {@link knownAhead}. */
  known(address: string, now: number): MappingKind | undefined {
    const record = this.#fresh(address, now);
    return record !== undefined && !record.disputed && knownAhead(record.mapping) ? record.mapping : undefined;
  }

  /**
   * The kind of mapping remembered for `address` (any kind recorded: 'eim', 'sequential',
   * 'random'), if it is still fresh and undisputed. Not for punching: a sequential or random
   * NAT's next port is not known ahead ({@link MappingMemory.known}). It tells what only the
   * kind decides, e.g. that two symmetric NATs leave only the relay (schedule.ts relayCertain).
   */
  behaviour(address: string, now: number): MappingKind | undefined {
    const record = this.#fresh(address, now);
    return record !== undefined && !record.disputed ? record.mapping : undefined;
  }

  /** The record of `address` unless it expired (an expired one is dropped). */
  #fresh(address: string, now: number): Remembered | undefined {
    const record = this.#records.get(address);
    if (record === undefined || record.expires > now) return record;
    this.#records.delete(address);
    return undefined;
  }

  /** Stores `record`, re-inserted at the end: the map stays in expiry order, so the oldest is first. */
  #set(address: string, record: Remembered): void {
    this.#records.delete(address);
    this.#prune(record.expires - this.#ttlMs);
    while (this.#records.size >= this.#max) {
      const oldest = this.#records.keys().next();
      if (oldest.done === true) break;
      this.#records.delete(oldest.value);
    }
    this.#records.set(address, record);
  }

  /** Drops expired records from the front (records are in expiry order). */
  #prune(now: number): void {
    for (const [address, record] of this.#records) {
      if (record.expires > now) break;
      this.#records.delete(address);
    }
  }
}

/** How long a check of a remembered mapping waits for the attempt's late probe, in ms (as long as the probe book keeps a record). */
export const LATE_PROBE_WAIT_MS = PROBE_RECORD_TTL_MS;

interface Expected {
  /** The exchange's public endpoint: a probe from its address and another port contradicts 'eim'. */
  readonly exchange: TransportAddress;
  /** The kind the side was scheduled with: 'eim' keeps the exchange's port, a symmetric kind does not. */
  readonly kind: MappingKind['kind'];
  /** The probe's integrity check (the side's key), if the side has one. */
  readonly check: ProbeCheck | undefined;
  readonly expires: number;
}

/**
 * The sides of attempts scheduled with a remembered mapping before their own probes came (the
 * warm path answers at once): the probe that comes late still checks the memory. For 'eim', one
 * from the exchange's address but another port disputes it (mapping-memory.ts
 * MappingMemory.contradict); for a remembered symmetric kind (an attempt relayed at once,
 * rendezvous.ts), one from the exchange's own port does.
 * Bounded like the probe book; each check is kept {@link LATE_PROBE_WAIT_MS}.
 */
export class LateProbeChecks {
  readonly #expected = new Map<string, Expected>();
  readonly #max: number;

  constructor(maxEntries: number = MAX_PROBE_RECORDS) {
    this.#max = maxEntries;
  }

  /** Checks held. */
  get size(): number {
    return this.#expected.size;
  }

  /** The side `role` of `attempt` was scheduled with `kind` (@default 'eim') remembered for `exchange`'s address; its probe has not come yet. */
  expect(attempt: string, role: RoleName, exchange: TransportAddress, check: ProbeCheck | undefined, now: number, kind: MappingKind['kind'] = 'eim'): void {
    for (const [key, entry] of this.#expected) {
      if (entry.expires > now && this.#expected.size < this.#max) break;
      this.#expected.delete(key);
    }
    this.#expected.set(`${attempt}/${role}`, { exchange, kind, check, expires: now + LATE_PROBE_WAIT_MS });
  }

  /** A probe of (`attempt`, `role`) came from `endpoint`: when it is the awaited one and its port contradicts the kind, `memory` is told. */
  observe(attempt: string, role: RoleName, endpoint: TransportAddress, probe: StunMessage, memory: MappingMemory, now: number): void {
    const key = `${attempt}/${role}`;
    const entry = this.#expected.get(key);
    if (entry === undefined || entry.expires <= now || endpoint.address !== entry.exchange.address) return;
    if (entry.check !== undefined && !entry.check(probe)) return;
    this.#expected.delete(key);
    const keptPort = endpoint.port === entry.exchange.port;
    if (keptPort !== (entry.kind === 'eim')) memory.contradict(endpoint.address, now);
  }
}
