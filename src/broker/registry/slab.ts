/**
 * Fixed-size records in typed arrays, one slot per record, for the broker's per-peer
 * tables (a million registrations must not cost a million objects): slots are handed out
 * and taken back here; the tables keep their columns in {@link Column}s that grow with it.
 * Also the packings those tables share: IPv4 dotted quads as numbers, and key
 * fingerprints (base32 of 32 bytes) as bytes, each only where it round-trips exactly.
 */
import { base32 } from '../../security/keys.js';
import { packIPv4 } from '../../wire/address.js';

export { packIPv4 };

/** Slots at start (they double as needed). */
const INITIAL_SLOTS = 1_024;

/** A column of a slab: a typed array of `width` elements per slot. */
export class Column<T extends Float64Array | Uint32Array | Uint16Array | Uint8Array> {
  #array: T;
  readonly #width: number;
  readonly #make: (length: number) => T;

  constructor(make: (length: number) => T, width = 1) {
    this.#make = make;
    this.#width = width;
    this.#array = make(INITIAL_SLOTS * width);
  }

  /** The array (changes when the slab grows: do not keep it across {@link Slots.take}). */
  get array(): T {
    return this.#array;
  }

  /** Grows to hold `slots` slots, keeping what is there. */
  grow(slots: number): void {
    const next = this.#make(slots * this.#width);
    next.set(this.#array);
    this.#array = next;
  }
}

/** Hands out slot numbers 0..n, reusing freed ones first; grows the columns it was given. */
export class Slots {
  readonly #columns: ReadonlyArray<Column<Float64Array | Uint32Array | Uint16Array | Uint8Array>>;
  #free = new Uint32Array(INITIAL_SLOTS);
  #freeCount = 0;
  #next = 0;
  #capacity = INITIAL_SLOTS;

  constructor(columns: ReadonlyArray<Column<Float64Array | Uint32Array | Uint16Array | Uint8Array>>) {
    this.#columns = columns;
  }

  /** Slots ever handed out (the highest slot number + 1): scans go up to here. */
  get end(): number {
    return this.#next;
  }

  /** A free slot (its columns hold whatever was there before). */
  take(): number {
    if (this.#freeCount > 0) return this.#free[--this.#freeCount] as number;
    if (this.#next === this.#capacity) {
      this.#capacity *= 2;
      for (const column of this.#columns) column.grow(this.#capacity);
    }
    return this.#next++;
  }

  /** Gives `slot` back. */
  release(slot: number): void {
    if (this.#freeCount === this.#free.length) {
      const bigger = new Uint32Array(this.#free.length * 2);
      bigger.set(this.#free);
      this.#free = bigger;
    }
    this.#free[this.#freeCount++] = slot;
  }

  /** Forgets every slot (the columns keep their size). */
  clear(): void {
    this.#freeCount = 0;
    this.#next = 0;
  }
}

/**
 * Removes (with `remove`) every slot below `end` whose key in `keys` is set and whose
 * expiry in `expires` is at or before `now`; returns the earliest expiry left (Infinity
 * when none): until then another sweep would find nothing.
 */
export function sweepExpired(end: number, keys: ReadonlyArray<string | undefined>, expires: Float64Array, now: number, remove: (slot: number, key: string) => void): number {
  let next = Number.POSITIVE_INFINITY;
  for (let slot = 0; slot < end; slot++) {
    const key = keys[slot];
    if (key === undefined) continue;
    const at = expires[slot] as number;
    if (at <= now) remove(slot, key);
    else if (at < next) next = at;
  }
  return next;
}

/** Whether `hex` (lowercase, as Buffer's toString('hex') writes it) spells the `length` bytes at `offset`. */
export function hexEquals(bytes: Uint8Array, offset: number, length: number, hex: string): boolean {
  if (hex.length !== length * 2) return false;
  for (let i = 0; i < length; i++) {
    const byte = bytes[offset + i] as number;
    if (hex.charCodeAt(2 * i) !== HEX_DIGITS[byte >>> 4] || hex.charCodeAt(2 * i + 1) !== HEX_DIGITS[byte & 0xf]) return false;
  }
  return true;
}

const HEX_DIGITS = Array.from('0123456789abcdef', (c) => c.charCodeAt(0));

/** The dotted quad of {@link packIPv4}. */
export function unpackIPv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 0xff}.${(value >>> 8) & 0xff}.${value & 0xff}`;
}

/** Bytes of a key fingerprint (security/keys.ts: base32 of a SHA-256 digest). */
export const FINGERPRINT_BYTES = 32;
/** Its length in base32 characters. */
const FINGERPRINT_CHARS = Math.ceil((FINGERPRINT_BYTES * 8) / 5);
const BASE32_VALUES = new Map([...'abcdefghijklmnopqrstuvwxyz234567'].map((c, i) => [c.charCodeAt(0), i]));

/**
 * Writes the 32 bytes of a key fingerprint into `out` at `offset`; false (nothing
 * written that counts) unless `fingerprint` is exactly what {@link base32} makes of them.
 */
export function packFingerprint(fingerprint: string, out: Uint8Array, offset: number): boolean {
  if (fingerprint.length !== FINGERPRINT_CHARS) return false;
  let buffer = 0;
  let bits = 0;
  let at = offset;
  for (let i = 0; i < fingerprint.length; i++) {
    const value = BASE32_VALUES.get(fingerprint.charCodeAt(i));
    if (value === undefined) return false;
    buffer = ((buffer << 5) | value) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      if (at - offset < FINGERPRINT_BYTES) out[at++] = (buffer >>> bits) & 0xff;
    }
  }
  // The 4 bits past the 32 bytes must be zero, or the text would not come back the same.
  return at - offset === FINGERPRINT_BYTES && (buffer & ((1 << bits) - 1)) === 0;
}

/** The fingerprint text of 32 bytes at `offset`. */
export function unpackFingerprint(bytes: Uint8Array, offset: number): string {
  return base32(bytes.subarray(offset, offset + FINGERPRINT_BYTES));
}
