/**
 * How each NAT maps TCP, remembered per public address (issue 13: a repeated attempt
 * from the same NAT does not wait for mapping probes). The rendezvous records the
 * mapping it classified from an attempt's probes under the side's public address; the
 * next attempt from there may schedule with it at once. Only the kinds that need no
 * fresh port observation count as known ('none', 'eim'): prediction needs the last
 * port a sequential NAT gave out, and a random NAT's is worth nothing.
 *
 * It is broker memory a stranger can grow (every new source address adds a record), so
 * it is bounded: at most `maxEntries` records, each kept {@link MAPPING_MEMORY_TTL_MS};
 * at the bound the oldest record goes. No sockets; time comes in as `now`.
 */
import type { MappingKind } from '../nat/mapping.js';

/** How long a NAT's mapping behaviour is remembered, in ms: NATs keep their behaviour, but a host moves to another NAT behind the same address seldom within minutes. */
export const MAPPING_MEMORY_TTL_MS = 10 * 60_000;
/** Records kept at most (memory bound: about 100 bytes each). */
export const MAX_MAPPING_MEMORY = 65_536;

interface Remembered {
  readonly mapping: MappingKind;
  readonly expires: number;
}

/** True for a mapping an attempt can be scheduled with without fresh probes. */
export function knownAhead(mapping: MappingKind): boolean {
  return mapping.kind === 'none' || mapping.kind === 'eim';
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
   * teaches nothing and is not recorded (nor does it erase what was known).
   */
  record(address: string, mapping: MappingKind, now: number): void {
    if (mapping.kind === 'unknown') return;
    // Re-inserted at the end: the map stays in expiry order, so the oldest is first.
    this.#records.delete(address);
    this.#prune(now);
    while (this.#records.size >= this.#max) {
      const oldest = this.#records.keys().next();
      if (oldest.done === true) break;
      this.#records.delete(oldest.value);
    }
    this.#records.set(address, { mapping, expires: now + this.#ttlMs });
  }

  /** The mapping remembered for `address`, if it is still fresh and {@link knownAhead}. */
  known(address: string, now: number): MappingKind | undefined {
    const record = this.#records.get(address);
    if (record === undefined) return undefined;
    if (record.expires <= now) {
      this.#records.delete(address);
      return undefined;
    }
    return knownAhead(record.mapping) ? record.mapping : undefined;
  }

  /** Drops expired records from the front (records are in expiry order). */
  #prune(now: number): void {
    for (const [address, record] of this.#records) {
      if (record.expires > now) break;
      this.#records.delete(address);
    }
  }
}
