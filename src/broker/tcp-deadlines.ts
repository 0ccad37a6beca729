/**
 * The deadlines and the cap of the broker's TCP connections, as bookkeeping with an
 * injected clock (no sockets, no timers: tcp.ts feeds it bytes and sweeps it).
 *
 * Every connection must
 * 1. deliver its first whole STUN message within `firstMessageMs` of the accept;
 * 2. deliver every message it starts within `messageMs` of the message's first byte
 *    (a STARTTLS handshake counts as a message), so a client trickling a byte a
 *    second is closed however alive it looks;
 * 3. if it is an exchange (not a recipient's control connection, not a relay), end
 *    within `lifetimeMs` of the accept, however busy it is.
 *
 * At the cap (`maxConnections`), a new connection evicts one that has the least at
 * stake, in this order: one in the middle of a message (the oldest such message
 * first: honest peers send a message in one round trip), one that has not completed
 * a message yet (the oldest first), one that only asked for Bindings and is idle (the
 * longest idle first). Connections of attempts, control connections and relays are
 * never evicted. The per-source cap is never lifted by eviction; it counts a source by
 * its {@link sourceKey} (an IPv6 address by its /64).
 */
import { HEADER_LENGTH } from '../wire/constants.js';
import { sourceKey } from './source-key.js';

/** What a connection does, as far as its deadlines are concerned. */
export type ConnectionRole =
  /** No attempt yet: Bindings, mapping probes, or nothing. Evictable when idle. */
  | 'new'
  /** An initiator's or recipient's exchange: has a lifetime, never evicted. */
  | 'attempt'
  /** A recipient's control connection: lives as long as its registration. */
  | 'control'
  /** A relay: its quotas bound it (relay.ts); STUN deadlines no longer apply. */
  | 'relay';

/** Which deadline closed a connection. */
export type ConnectionExpiry = 'first-message-timeout' | 'message-timeout' | 'exchange-lifetime';

/** The limits the table applies, in ms and connections. */
export interface ConnectionLimits {
  readonly firstMessageMs: number;
  readonly messageMs: number;
  readonly lifetimeMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerSource: number;
}

/** What {@link ConnectionTable.admit} decided for a new connection. */
export type Admission<H> =
  | { readonly verdict: 'ok'; readonly evicted?: H }
  | { readonly verdict: 'per-source' | 'total' };

/**
 * Follows STUN framing over a byte stream (RFC 8489 §6.2.2: each message's length
 * is in its header) just far enough to tell whether a message is in progress. It
 * validates nothing: the connection's own decoder does, and closes on bad bytes.
 */
export class FrameTracker {
  readonly #header = Buffer.alloc(HEADER_LENGTH);
  #headerBytes = 0;
  #bodyLeft = 0;

  /** True between the first byte of a message and its last. */
  get inMessage(): boolean {
    return this.#headerBytes > 0;
  }

  /** Feeds bytes; returns how many messages they completed. */
  push(chunk: Uint8Array): number {
    let completed = 0;
    let i = 0;
    while (i < chunk.length) {
      if (this.#headerBytes < HEADER_LENGTH) {
        const n = Math.min(HEADER_LENGTH - this.#headerBytes, chunk.length - i);
        this.#header.set(chunk.subarray(i, i + n), this.#headerBytes);
        this.#headerBytes += n;
        i += n;
        if (this.#headerBytes < HEADER_LENGTH) break;
        this.#bodyLeft = this.#header.readUInt16BE(2); // the message length (RFC 8489 §5)
      }
      const n = Math.min(this.#bodyLeft, chunk.length - i);
      this.#bodyLeft -= n;
      i += n;
      if (this.#bodyLeft === 0) {
        this.#headerBytes = 0;
        completed++;
      }
    }
    return completed;
  }
}

interface Entry<H> {
  readonly handle: H;
  readonly source: string;
  readonly acceptedAt: number;
  readonly frames: FrameTracker;
  role: ConnectionRole;
  /** When the message (or TLS handshake) in progress started. */
  partialSince: number | undefined;
  /** When the last whole message arrived; undefined before the first. */
  lastMessageAt: number | undefined;
}

/** The broker's open TCP connections by handle (the raw socket in tcp.ts). */
export class ConnectionTable<H> {
  readonly #limits: ConnectionLimits;
  readonly #now: () => number;
  readonly #all = new Map<H, Entry<H>>();
  readonly #perSource = new Map<string, number>();
  // Each of these is in the order its deadline or eviction rank runs out (Map keeps insertion order).
  /** In the middle of a message, by when it started. */
  readonly #partial = new Map<H, Entry<H>>();
  /** No whole message yet, by accept time. */
  readonly #unserved = new Map<H, Entry<H>>();
  /** Role 'new' with a whole message served, by its last message. */
  readonly #idle = new Map<H, Entry<H>>();
  /** Roles 'new' and 'attempt', by accept time. */
  readonly #living = new Map<H, Entry<H>>();

  constructor(limits: ConnectionLimits, now: () => number) {
    this.#limits = limits;
    this.#now = now;
  }

  /** Connections held. */
  get size(): number {
    return this.#all.size;
  }

  /** How often to call {@link ConnectionTable.expired}: a quarter of the shortest deadline, 10 ms to 1 s. */
  get sweepIntervalMs(): number {
    const { firstMessageMs, messageMs, lifetimeMs } = this.#limits;
    return Math.min(1_000, Math.max(10, Math.floor(Math.min(firstMessageMs, messageMs, lifetimeMs) / 4)));
  }

  /**
   * May a connection from `source` open? At the total cap it evicts one (see the
   * module comment): the caller closes `evicted`, which the table has forgotten already.
   */
  admit(source: string): Admission<H> {
    if ((this.#perSource.get(sourceKey(source)) ?? 0) >= this.#limits.maxConnectionsPerSource) return { verdict: 'per-source' };
    if (this.#all.size < this.#limits.maxConnections) return { verdict: 'ok' };
    const victim = first(this.#partial) ?? first(this.#unserved) ?? first(this.#idle);
    if (victim === undefined) return { verdict: 'total' };
    this.remove(victim.handle);
    return { verdict: 'ok', evicted: victim.handle };
  }

  /** Starts tracking an admitted connection. */
  add(handle: H, source: string): void {
    if (this.#all.has(handle)) return;
    const entry: Entry<H> = { handle, source, acceptedAt: this.#now(), frames: new FrameTracker(), role: 'new', partialSince: undefined, lastMessageAt: undefined };
    this.#all.set(handle, entry);
    const key = sourceKey(source);
    this.#perSource.set(key, (this.#perSource.get(key) ?? 0) + 1);
    this.#unserved.set(handle, entry);
    this.#living.set(handle, entry);
  }

  /** Bytes of STUN arrived on the connection (decrypted ones, after STARTTLS). */
  received(handle: H, chunk: Uint8Array): void {
    const entry = this.#all.get(handle);
    if (entry === undefined || entry.role === 'relay') return;
    const now = this.#now();
    const wasPartial = entry.partialSince !== undefined;
    const completed = entry.frames.push(chunk);
    if (completed > 0) {
      entry.lastMessageAt = now;
      this.#unserved.delete(handle);
      if (entry.role === 'new') {
        this.#idle.delete(handle);
        this.#idle.set(handle, entry);
      }
    }
    if (entry.frames.inMessage) {
      // A new message started in this chunk (or the old one goes on): its own deadline.
      if (!wasPartial || completed > 0) this.#setPartial(entry, now);
    } else if (wasPartial) {
      this.#setPartial(entry, undefined);
    }
  }

  /** A TLS handshake started (STARTTLS): it must finish within `messageMs`, like a message. */
  handshaking(handle: H): void {
    const entry = this.#all.get(handle);
    if (entry !== undefined) this.#setPartial(entry, this.#now());
  }

  /** The TLS handshake finished: the stream is between messages again. */
  handshaken(handle: H): void {
    const entry = this.#all.get(handle);
    if (entry !== undefined) this.#setPartial(entry, undefined);
  }

  /** The connection took on `role` (see {@link ConnectionRole}); roles only move away from 'new'. */
  setRole(handle: H, role: ConnectionRole): void {
    const entry = this.#all.get(handle);
    if (entry === undefined || entry.role === role) return;
    entry.role = role;
    this.#idle.delete(handle);
    if (role === 'control' || role === 'relay') this.#living.delete(handle);
    if (role === 'relay') {
      this.#unserved.delete(handle);
      this.#setPartial(entry, undefined);
    }
  }

  /** Forgets a connection (it closed). Idempotent. */
  remove(handle: H): void {
    const entry = this.#all.get(handle);
    if (entry === undefined) return;
    this.#all.delete(handle);
    const key = sourceKey(entry.source);
    const left = (this.#perSource.get(key) ?? 1) - 1;
    if (left <= 0) this.#perSource.delete(key);
    else this.#perSource.set(key, left);
    this.#partial.delete(handle);
    this.#unserved.delete(handle);
    this.#idle.delete(handle);
    this.#living.delete(handle);
  }

  /** The connections whose deadline passed at `now`, with which one; the table forgets them (the caller closes them). */
  expired(now: number = this.#now()): Array<{ handle: H; source: string; expiry: ConnectionExpiry }> {
    const out: Array<{ handle: H; source: string; expiry: ConnectionExpiry }> = [];
    const sweep = (map: Map<H, Entry<H>>, since: (entry: Entry<H>) => number, limitMs: number, expiry: ConnectionExpiry): void => {
      for (const entry of map.values()) {
        if (since(entry) + limitMs > now) break; // ordered: the rest are younger
        out.push({ handle: entry.handle, source: entry.source, expiry });
        this.remove(entry.handle);
      }
    };
    sweep(this.#partial, (e) => e.partialSince ?? now, this.#limits.messageMs, 'message-timeout');
    sweep(this.#unserved, (e) => e.acceptedAt, this.#limits.firstMessageMs, 'first-message-timeout');
    sweep(this.#living, (e) => e.acceptedAt, this.#limits.lifetimeMs, 'exchange-lifetime');
    return out;
  }

  #setPartial(entry: Entry<H>, since: number | undefined): void {
    entry.partialSince = since;
    this.#partial.delete(entry.handle);
    if (since !== undefined) this.#partial.set(entry.handle, entry);
  }
}

function first<V>(map: Map<unknown, V>): V | undefined {
  return map.values().next().value;
}
