/**
 * Live registrations granted by this broker, for its caps (limits.ts `maxRegistrations`,
 * `maxRegistrationsPerSource`): URI -> (source, expiry), with the count per source. Kept
 * compactly (registry/slab.ts): a URI is a slot holding its expiry and a source number;
 * each source address is held once, with its count. A source is counted by its
 * {@link sourceKey} (an IPv6 address by its /64).
 */
import { Column, Slots, sweepExpired } from './registry/slab.js';
import { sourceKey } from './source-key.js';

/**
 * How often, at most, a full cap sweeps expired entries, in ms: a flood of refused
 * registrations at the cap must not scan a million entries each. An entry can so count
 * for up to this long after it expired.
 */
export const CAP_SWEEP_INTERVAL_MS = 100;

/** Bounded by `max` (new URIs are refused when full of live entries; expired ones are swept first). */
export class RegistrationCap {
  readonly #slotOf = new Map<string, number>();
  readonly #uris: Array<string | undefined> = [];
  readonly #expires = new Column((n) => new Float64Array(n));
  readonly #sourceOf = new Column((n) => new Uint32Array(n));
  readonly #slots = new Slots([this.#expires, this.#sourceOf]);
  /** Source address -> its number; the number's count and address. */
  readonly #sourceIds = new Map<string, number>();
  readonly #sourceCount = new Column((n) => new Uint32Array(n));
  readonly #sourceNames: Array<string | undefined> = [];
  readonly #sourceSlots = new Slots([this.#sourceCount]);
  readonly #maxPerSource: number;
  readonly #max: number;
  /** No entry expires before this (a lower bound): until then a sweep would find nothing. */
  #nextExpiry = Number.POSITIVE_INFINITY;
  #lastSweep = Number.NEGATIVE_INFINITY;

  constructor(maxPerSource: number, max: number) {
    this.#maxPerSource = maxPerSource;
    this.#max = max;
  }

  /** Registrations tracked (live or not yet swept). */
  get size(): number {
    return this.#slotOf.size;
  }

  /** May the source at `address` register (or refresh) `uri` at `now`? A refresh of its own URI always may. */
  admit(uri: string, address: string, now: number): 'ok' | 'per-source' | 'total' {
    const source = sourceKey(address);
    const slot = this.#slotOf.get(uri);
    if (slot !== undefined && this.#sourceNames[this.#sourceOf.array[slot] as number] === source && (this.#expires.array[slot] as number) > now) return 'ok';
    if (this.#count(source) >= this.#maxPerSource || this.#slotOf.size >= this.#max) this.#sweepIfDue(now);
    if (this.#count(source) >= this.#maxPerSource) return 'per-source';
    if (this.#slotOf.size >= this.#max && !this.#slotOf.has(uri)) return 'total';
    return 'ok';
  }

  /** Records that the source at `address` holds `uri` until `expiresAt` (replacing whoever held it). */
  record(uri: string, address: string, expiresAt: number): void {
    const source = sourceKey(address);
    let slot = this.#slotOf.get(uri);
    if (slot === undefined) {
      slot = this.#slots.take();
      this.#slotOf.set(uri, slot);
      this.#uris[slot] = uri;
    } else {
      this.#release(this.#sourceOf.array[slot] as number);
    }
    const id = this.#acquire(source);
    this.#sourceOf.array[slot] = id;
    this.#expires.array[slot] = expiresAt;
    if (expiresAt < this.#nextExpiry) this.#nextExpiry = expiresAt;
  }

  /** Forgets `uri` (its registration was dropped). */
  forget(uri: string): void {
    const slot = this.#slotOf.get(uri);
    if (slot !== undefined) this.#remove(slot, uri);
  }

  /** Drops every expired entry. */
  sweep(now: number): void {
    this.#lastSweep = now;
    this.#nextExpiry = sweepExpired(this.#slots.end, this.#uris, this.#expires.array, now, (slot, uri) => this.#remove(slot, uri));
  }

  #sweepIfDue(now: number): void {
    if (now >= this.#nextExpiry && now - this.#lastSweep >= CAP_SWEEP_INTERVAL_MS) this.sweep(now);
  }

  #count(source: string): number {
    const id = this.#sourceIds.get(source);
    return id === undefined ? 0 : (this.#sourceCount.array[id] as number);
  }

  #acquire(source: string): number {
    let id = this.#sourceIds.get(source);
    if (id === undefined) {
      id = this.#sourceSlots.take();
      this.#sourceIds.set(source, id);
      this.#sourceNames[id] = source;
      this.#sourceCount.array[id] = 0;
    }
    this.#sourceCount.array[id] = (this.#sourceCount.array[id] as number) + 1;
    return id;
  }

  #release(id: number): void {
    const left = (this.#sourceCount.array[id] as number) - 1;
    this.#sourceCount.array[id] = left;
    if (left > 0) return;
    const name = this.#sourceNames[id];
    if (name !== undefined) this.#sourceIds.delete(name);
    this.#sourceNames[id] = undefined;
    this.#sourceSlots.release(id);
  }

  #remove(slot: number, uri: string): void {
    this.#slotOf.delete(uri);
    this.#uris[slot] = undefined;
    this.#release(this.#sourceOf.array[slot] as number);
    this.#slots.release(slot);
  }
}
