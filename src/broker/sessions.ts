/**
 * Registration sessions: after a peer proved its key, refreshes and connection
 * requests are protected with a session key (see security/proof.ts). A URI has at
 * most one session; the store is found by (URI, session ID), so that a store shared
 * by brokers (Redis, registry/redis-sessions.ts) keeps each URI's state in one place.
 * The memory table here is bounded: at most `max` sessions; expired ones go first.
 */
import { randomBytes } from 'node:crypto';
import { SESSION_ID_LENGTH } from '../security/proof.js';
import { Column, FINGERPRINT_BYTES, packFingerprint, hexEquals, packIPv4, Slots, sweepExpired, unpackFingerprint, unpackIPv4 } from './registry/slab.js';

/** An endpoint a session's holder was verified at. */
export interface SessionEndpoint {
  readonly address: string;
  readonly port: number;
}

/** One peer's registration session, as read from its store (a snapshot: change it through the store). */
export interface Session {
  readonly id: string;
  readonly uri: string;
  /** The session key (a secret: integrity of refreshes and connection requests). */
  readonly key: Buffer;
  /** Fingerprint of the key that proved itself. */
  readonly keyFingerprint: string;
  /** Highest SEQUENCE accepted so far. */
  readonly lastSequence: number;
  /** When the session lapses (milliseconds since the epoch), like its registration. */
  readonly expiresAt: number;
  /**
   * The source the session's holder was last verified at: where it proved its key, or a
   * new address it echoed a routability token from (register.ts). Its registration and
   * connection requests go nowhere else.
   */
  readonly endpoint: SessionEndpoint;
}

/** What {@link SessionStore.advance} decided: the number was taken, was not above the last one, or the session is gone. */
export type SequenceVerdict = 'accepted' | 'replayed' | 'unknown';

/**
 * Where a broker keeps registration sessions. Implementations: {@link SessionTable}
 * (memory, one broker) and `RedisSessionStore` (shared by brokers). A session counts
 * only while live (`expiresAt` after the store's clock) and only under its own ID:
 * opening a new session for a URI ends the old one.
 */
export interface SessionStore {
  /** Opens a session for `uri` held at `endpoint` (replacing the URI's previous one); undefined when the store is full of live sessions. */
  open(uri: string, key: Buffer, keyFingerprint: string, expiresAt: number, endpoint: SessionEndpoint): Promise<Session | undefined>;
  /** The live session `id` of `uri`. */
  find(uri: string, id: string): Promise<Session | undefined>;
  /** The live session holding `uri`. */
  byUri(uri: string): Promise<Session | undefined>;
  /**
   * Takes `sequence` for `session` if it is above every number taken so far, atomically:
   * of two brokers handed the same number at once, exactly one gets 'accepted'.
   */
  advance(session: Session, sequence: number): Promise<SequenceVerdict>;
  /**
   * The next SEQUENCE of a ConnectionRequest sent under `session` (1, 2, ...), atomically:
   * every broker sharing the store draws from the one counter, so requests of two brokers
   * to one recipient never share a number (the recipient acts on each number once, in a
   * window of its highest: rendezvous.ts). Undefined when the session is gone.
   */
  nextRequestSequence(session: Session): Promise<number | undefined>;
  /** Moves the live `session` to `endpoint` and extends it to `expiresAt`; false when it is gone. */
  renew(session: Session, endpoint: SessionEndpoint, expiresAt: number): Promise<boolean>;
  /** Ends `session` (a withdrawal): its ID opens nothing any more, so its messages, replayed or not, are refused. False when it was gone. */
  end(session: Session): Promise<boolean>;
  /** Ends the session holding `uri`, whichever it is. */
  drop(uri: string): Promise<void>;
  /** Releases resources. Idempotent. */
  close(): Promise<void>;
}

/** A new random session ID (hex), {@link SESSION_ID_LENGTH} bytes. */
export function newSessionId(): string {
  return randomBytes(SESSION_ID_LENGTH).toString('hex');
}

/** A session kept whole (one that does not pack: an endpoint that is not IPv4, a key of another size, ...). */
interface Entry {
  readonly id: string;
  readonly key: Buffer;
  readonly keyFingerprint: string;
  lastSequence: number;
  /** The last ConnectionRequest SEQUENCE drawn ({@link SessionStore.nextRequestSequence}). */
  requestSequence: number;
  expiresAt: number;
  endpoint: SessionEndpoint;
}

/** Bytes of a session key as proof.ts makes it (HKDF-SHA256 output); others are kept whole. */
const PACKED_KEY_BYTES = 32;
/** Flags of a slot. */
const WHOLE = 1;
/** How often, at most, a full table sweeps expired sessions before refusing one, in ms (see registration-cap.ts). */
const FULL_SWEEP_INTERVAL_MS = 100;
/** How often, at most, opening a session sweeps expired ones otherwise (memory only: lookups ignore them), in ms. */
const SWEEP_INTERVAL_MS = 5_000;

/**
 * The broker's sessions in this process's memory, by URI; at most `max` of them. Compact
 * (registry/slab.ts): a session is a slot of typed arrays (ID, key, key fingerprint,
 * sequence, expiry, IPv4 endpoint: about 100 bytes) plus one Map entry for its URI.
 * Expired sessions are swept when a session is opened, at most every few seconds (every
 * 100 ms when the table is full), never by a scan per registration.
 */
export class SessionTable implements SessionStore {
  readonly #slotOf = new Map<string, number>();
  readonly #uris: Array<string | undefined> = [];
  readonly #ids = new Column((n) => new Uint8Array(n), SESSION_ID_LENGTH);
  readonly #keys = new Column((n) => new Uint8Array(n), PACKED_KEY_BYTES);
  readonly #fingerprints = new Column((n) => new Uint8Array(n), FINGERPRINT_BYTES);
  readonly #sequences = new Column((n) => new Float64Array(n));
  readonly #requestSequences = new Column((n) => new Float64Array(n));
  readonly #expires = new Column((n) => new Float64Array(n));
  readonly #ips = new Column((n) => new Uint32Array(n));
  readonly #ports = new Column((n) => new Uint16Array(n));
  readonly #flags = new Column((n) => new Uint8Array(n));
  readonly #slots = new Slots([this.#ids, this.#keys, this.#fingerprints, this.#sequences, this.#requestSequences, this.#expires, this.#ips, this.#ports, this.#flags]);
  readonly #whole = new Map<number, Entry>();
  readonly #max: number;
  readonly #now: () => number;
  #nextExpiry = Number.POSITIVE_INFINITY;
  #lastSweep = Number.NEGATIVE_INFINITY;

  constructor(max: number, now: () => number = Date.now) {
    this.#max = max;
    this.#now = now;
  }

  /** Number of sessions held (expired ones included until swept). */
  get size(): number {
    return this.#slotOf.size;
  }

  async open(uri: string, key: Buffer, keyFingerprint: string, expiresAt: number, endpoint: SessionEndpoint): Promise<Session | undefined> {
    this.#sweepIfDue(!this.#slotOf.has(uri) && this.#slotOf.size >= this.#max ? FULL_SWEEP_INTERVAL_MS : SWEEP_INTERVAL_MS);
    if (!this.#slotOf.has(uri) && this.#slotOf.size >= this.#max) return undefined;
    let slot = this.#slotOf.get(uri);
    if (slot === undefined) {
      slot = this.#slots.take();
      this.#slotOf.set(uri, slot);
      this.#uris[slot] = uri;
    }
    const id = newSessionId();
    this.#sequences.array[slot] = 0;
    this.#requestSequences.array[slot] = 0;
    this.#expires.array[slot] = expiresAt;
    if (expiresAt < this.#nextExpiry) this.#nextExpiry = expiresAt;
    const ip = packIPv4(endpoint.address);
    const packs =
      key.length === PACKED_KEY_BYTES && ip >= 0 && Number.isInteger(endpoint.port) && endpoint.port >= 0 && endpoint.port <= 0xffff &&
      packFingerprint(keyFingerprint, this.#fingerprints.array, slot * FINGERPRINT_BYTES);
    if (packs) {
      this.#ids.array.set(Buffer.from(id, 'hex'), slot * SESSION_ID_LENGTH);
      this.#keys.array.set(key, slot * PACKED_KEY_BYTES);
      this.#ips.array[slot] = ip;
      this.#ports.array[slot] = endpoint.port;
      this.#flags.array[slot] = 0;
      this.#whole.delete(slot);
    } else {
      this.#flags.array[slot] = WHOLE;
      this.#whole.set(slot, { id, key, keyFingerprint, lastSequence: 0, requestSequence: 0, expiresAt, endpoint: { address: endpoint.address, port: endpoint.port } });
    }
    return this.#snapshot(slot, uri);
  }

  async find(uri: string, id: string): Promise<Session | undefined> {
    const slot = this.#live(uri, id);
    return slot < 0 ? undefined : this.#snapshot(slot, uri);
  }

  async byUri(uri: string): Promise<Session | undefined> {
    const slot = this.#slotOf.get(uri);
    return slot === undefined ? undefined : this.find(uri, this.#idAt(slot));
  }

  async advance(session: Session, sequence: number): Promise<SequenceVerdict> {
    const slot = this.#live(session.uri, session.id);
    if (slot < 0) return 'unknown';
    const whole = this.#whole.get(slot);
    const last = whole === undefined ? (this.#sequences.array[slot] as number) : whole.lastSequence;
    if (sequence <= last) return 'replayed';
    if (whole === undefined) this.#sequences.array[slot] = sequence;
    else whole.lastSequence = sequence;
    return 'accepted';
  }

  async nextRequestSequence(session: Session): Promise<number | undefined> {
    const slot = this.#live(session.uri, session.id);
    if (slot < 0) return undefined;
    const whole = this.#whole.get(slot);
    if (whole !== undefined) return ++whole.requestSequence;
    const next = (this.#requestSequences.array[slot] as number) + 1;
    this.#requestSequences.array[slot] = next;
    return next;
  }

  async renew(session: Session, endpoint: SessionEndpoint, expiresAt: number): Promise<boolean> {
    const slot = this.#live(session.uri, session.id);
    if (slot < 0) return false;
    this.#expires.array[slot] = expiresAt;
    if (expiresAt < this.#nextExpiry) this.#nextExpiry = expiresAt;
    let whole = this.#whole.get(slot);
    const ip = packIPv4(endpoint.address);
    if (whole === undefined && ip >= 0 && Number.isInteger(endpoint.port) && endpoint.port >= 0 && endpoint.port <= 0xffff) {
      this.#ips.array[slot] = ip;
      this.#ports.array[slot] = endpoint.port;
      return true;
    }
    if (whole === undefined) {
      // Moved to an address that does not pack: keep this session whole from now on.
      const { id, key, keyFingerprint, lastSequence } = this.#snapshot(slot, session.uri);
      whole = { id, key, keyFingerprint, lastSequence, requestSequence: this.#requestSequences.array[slot] as number, expiresAt, endpoint };
      this.#whole.set(slot, whole);
      this.#flags.array[slot] = WHOLE;
    }
    whole.endpoint = { address: endpoint.address, port: endpoint.port };
    whole.expiresAt = expiresAt;
    return true;
  }

  async end(session: Session): Promise<boolean> {
    const slot = this.#slotOf.get(session.uri);
    if (slot === undefined || !this.#hasId(slot, session.id)) return false;
    this.#remove(slot, session.uri);
    return true;
  }

  async drop(uri: string): Promise<void> {
    const slot = this.#slotOf.get(uri);
    if (slot !== undefined) this.#remove(slot, uri);
  }

  async close(): Promise<void> {
    this.#slotOf.clear();
    this.#uris.length = 0;
    this.#whole.clear();
    this.#slots.clear();
  }

  /** The slot of `uri`'s live session `id`, or -1. */
  #live(uri: string, id: string): number {
    const slot = this.#slotOf.get(uri);
    if (slot === undefined || (this.#expires.array[slot] as number) <= this.#now() || !this.#hasId(slot, id)) return -1;
    return slot;
  }

  /** Whether `slot`'s session ID is `id` (hex), without building a string. */
  #hasId(slot: number, id: string): boolean {
    const whole = this.#whole.get(slot);
    if (whole !== undefined) return whole.id === id;
    return hexEquals(this.#ids.array, slot * SESSION_ID_LENGTH, SESSION_ID_LENGTH, id);
  }

  #idAt(slot: number): string {
    const whole = this.#whole.get(slot);
    if (whole !== undefined) return whole.id;
    return Buffer.from(this.#ids.array.buffer, this.#ids.array.byteOffset + slot * SESSION_ID_LENGTH, SESSION_ID_LENGTH).toString('hex');
  }

  #snapshot(slot: number, uri: string): Session {
    const whole = this.#whole.get(slot);
    if (whole !== undefined) return { id: whole.id, uri, key: whole.key, keyFingerprint: whole.keyFingerprint, lastSequence: whole.lastSequence, expiresAt: whole.expiresAt, endpoint: whole.endpoint };
    const keyAt = slot * PACKED_KEY_BYTES;
    return {
      id: this.#idAt(slot),
      uri,
      key: Buffer.from(this.#keys.array.subarray(keyAt, keyAt + PACKED_KEY_BYTES)),
      keyFingerprint: unpackFingerprint(this.#fingerprints.array, slot * FINGERPRINT_BYTES),
      lastSequence: this.#sequences.array[slot] as number,
      expiresAt: this.#expires.array[slot] as number,
      endpoint: { address: unpackIPv4(this.#ips.array[slot] as number), port: this.#ports.array[slot] as number },
    };
  }

  #sweepIfDue(intervalMs: number): void {
    const now = this.#now();
    if (now < this.#nextExpiry || now - this.#lastSweep < intervalMs) return;
    this.#lastSweep = now;
    this.#nextExpiry = sweepExpired(this.#slots.end, this.#uris, this.#expires.array, now, (slot, uri) => this.#remove(slot, uri));
  }

  #remove(slot: number, uri: string): void {
    this.#slotOf.delete(uri);
    this.#uris[slot] = undefined;
    this.#whole.delete(slot);
    this.#slots.release(slot);
  }
}
