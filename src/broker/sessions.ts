/**
 * Registration sessions: after a peer proved its key, refreshes and connection
 * requests are protected with a session key (see security/proof.ts). Bounded:
 * at most `max` sessions; expired ones go first.
 */
import { randomBytes } from 'node:crypto';
import { SESSION_ID_LENGTH } from '../security/proof.js';

/** One peer's registration session. */
export interface Session {
  readonly id: string;
  readonly uri: string;
  readonly key: Buffer;
  /** Fingerprint of the key that proved itself. */
  readonly keyFingerprint: string;
  /** Highest SEQUENCE accepted so far. */
  lastSequence: number;
  expiresAt: number;
  /**
   * The source the session's holder was last verified at: where it proved its key, or a
   * new address it echoed a routability token from (register.ts). Its registration and
   * connection requests go nowhere else.
   */
  endpoint: { readonly address: string; readonly port: number };
}

/** The broker's sessions, by ID and by URI. */
export class SessionTable {
  readonly #byId = new Map<string, Session>();
  readonly #byUri = new Map<string, Session>();
  readonly #max: number;
  readonly #now: () => number;

  constructor(max: number, now: () => number = Date.now) {
    this.#max = max;
    this.#now = now;
  }

  /** Number of sessions held. */
  get size(): number {
    return this.#byId.size;
  }

  /** Opens a session for `uri` held at `endpoint` (replacing the URI's previous one); undefined when full of live sessions. */
  open(uri: string, key: Buffer, keyFingerprint: string, expiresAt: number, endpoint: Session['endpoint']): Session | undefined {
    this.#prune();
    const previous = this.#byUri.get(uri);
    if (previous !== undefined) this.#byId.delete(previous.id);
    else if (this.#byId.size >= this.#max) return undefined;
    const session: Session = { id: randomBytes(SESSION_ID_LENGTH).toString('hex'), uri, key, keyFingerprint, lastSequence: 0, expiresAt, endpoint };
    this.#byId.set(session.id, session);
    this.#byUri.set(uri, session);
    return session;
  }

  /** The live session with this ID. */
  byId(id: string): Session | undefined {
    const session = this.#byId.get(id);
    return session !== undefined && session.expiresAt > this.#now() ? session : undefined;
  }

  /** The live session holding `uri`. */
  byUri(uri: string): Session | undefined {
    const session = this.#byUri.get(uri);
    return session !== undefined && session.expiresAt > this.#now() ? session : undefined;
  }

  /** Ends `session` (a withdrawal): its ID opens nothing any more, so its messages, replayed or not, are refused. */
  end(session: Session): void {
    if (this.#byId.get(session.id) === session) this.#byId.delete(session.id);
    if (this.#byUri.get(session.uri) === session) this.#byUri.delete(session.uri);
  }

  /** Ends the session holding `uri`. */
  drop(uri: string): void {
    const session = this.#byUri.get(uri);
    if (session === undefined) return;
    this.#byUri.delete(uri);
    this.#byId.delete(session.id);
  }

  #prune(): void {
    const now = this.#now();
    for (const [id, session] of this.#byId) {
      if (session.expiresAt > now) continue;
      this.#byId.delete(id);
      if (this.#byUri.get(session.uri) === session) this.#byUri.delete(session.uri);
    }
  }
}
