/**
 * Registration sessions: after a peer proved its key, refreshes and connection
 * requests are protected with a session key (see security/proof.ts). A URI has at
 * most one session; the store is found by (URI, session ID), so that a store shared
 * by brokers (Redis, registry/redis-sessions.ts) keeps each URI's state in one place.
 * The memory table here is bounded: at most `max` sessions; expired ones go first.
 */
import { randomBytes } from 'node:crypto';
import { SESSION_ID_LENGTH } from '../security/proof.js';

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

interface Entry {
  readonly id: string;
  readonly key: Buffer;
  readonly keyFingerprint: string;
  lastSequence: number;
  /** The last ConnectionRequest SEQUENCE drawn under this session. */
  requestSequence: number;
  expiresAt: number;
  endpoint: SessionEndpoint;
}

/** The broker's sessions in this process's memory, by URI; at most `max` of them. */
export class SessionTable implements SessionStore {
  readonly #byUri = new Map<string, Entry>();
  readonly #max: number;
  readonly #now: () => number;

  constructor(max: number, now: () => number = Date.now) {
    this.#max = max;
    this.#now = now;
  }

  /** Number of sessions held (expired ones included until pruned). */
  get size(): number {
    return this.#byUri.size;
  }

  async open(uri: string, key: Buffer, keyFingerprint: string, expiresAt: number, endpoint: SessionEndpoint): Promise<Session | undefined> {
    this.#prune();
    if (!this.#byUri.has(uri) && this.#byUri.size >= this.#max) return undefined;
    const entry: Entry = { id: newSessionId(), key, keyFingerprint, lastSequence: 0, requestSequence: 0, expiresAt, endpoint: { address: endpoint.address, port: endpoint.port } };
    this.#byUri.set(uri, entry);
    return snapshot(uri, entry);
  }

  async find(uri: string, id: string): Promise<Session | undefined> {
    const entry = this.#live(uri, id);
    return entry === undefined ? undefined : snapshot(uri, entry);
  }

  async byUri(uri: string): Promise<Session | undefined> {
    const entry = this.#byUri.get(uri);
    return entry === undefined ? undefined : this.find(uri, entry.id);
  }

  async advance(session: Session, sequence: number): Promise<SequenceVerdict> {
    const entry = this.#live(session.uri, session.id);
    if (entry === undefined) return 'unknown';
    if (sequence <= entry.lastSequence) return 'replayed';
    entry.lastSequence = sequence;
    return 'accepted';
  }

  async nextRequestSequence(session: Session): Promise<number | undefined> {
    const entry = this.#live(session.uri, session.id);
    if (entry === undefined) return undefined;
    entry.requestSequence++;
    return entry.requestSequence;
  }

  async renew(session: Session, endpoint: SessionEndpoint, expiresAt: number): Promise<boolean> {
    const entry = this.#live(session.uri, session.id);
    if (entry === undefined) return false;
    entry.endpoint = { address: endpoint.address, port: endpoint.port };
    entry.expiresAt = expiresAt;
    return true;
  }

  async end(session: Session): Promise<boolean> {
    if (this.#byUri.get(session.uri)?.id !== session.id) return false;
    return this.#byUri.delete(session.uri);
  }

  async drop(uri: string): Promise<void> {
    this.#byUri.delete(uri);
  }

  async close(): Promise<void> {
    this.#byUri.clear();
  }

  #live(uri: string, id: string): Entry | undefined {
    const entry = this.#byUri.get(uri);
    return entry !== undefined && entry.id === id && entry.expiresAt > this.#now() ? entry : undefined;
  }

  #prune(): void {
    const now = this.#now();
    for (const [uri, entry] of this.#byUri) {
      if (entry.expiresAt <= now) this.#byUri.delete(uri);
    }
  }
}

function snapshot(uri: string, entry: Entry): Session {
  return { id: entry.id, uri, key: entry.key, keyFingerprint: entry.keyFingerprint, lastSequence: entry.lastSequence, expiresAt: entry.expiresAt, endpoint: entry.endpoint };
}
