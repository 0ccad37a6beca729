/**
 * The recipient's book of the broker's ConnectionRequests: which to act on, which
 * are copies to answer again, which to ignore. Pure (no sockets, no timers).
 *
 * Under a session every request carries a SEQUENCE (rising per broker) covered by
 * its integrity. Each number is acted on once; numbers up to {@link REQUEST_WINDOW}
 * below the highest seen are still accepted the first time (requests sent close
 * together may arrive out of order), older ones never, so a captured request
 * cannot be replayed. The broker retransmits a request until it hears from us:
 * a copy (same sequence, same attempt) gets the same answer again and nothing more.
 * Under a session a request without SEQUENCE is ignored (registration.ts). In open
 * mode (no session: a SEQUENCE without integrity proves nothing) requests are told
 * apart by attempt ID only.
 */

/** Requests remembered (and the width of the sequence window). */
export const REQUEST_WINDOW = 1024;

/** Our answer to one request: accepted, or refused with a reason. */
export type RequestAnswer = { readonly accepted: true } | { readonly accepted: false; readonly reason: string };

/** What to do with a request. */
export type RequestVerdict =
  | { readonly kind: 'new' }
  | { readonly kind: 'copy'; readonly answer: RequestAnswer }
  | { readonly kind: 'ignore'; readonly why: 'replayed' | 'too old' };

interface Entry {
  readonly sequence: number | undefined;
  readonly answer: RequestAnswer;
}

/** The requests of one session (a new session starts a new book). */
export class ConnectionRequestBook {
  /** Attempt ID (hex) -> what we answered, oldest first. */
  readonly #byAttempt = new Map<string, Entry>();
  readonly #sequences = new Set<number>();
  /** Sequences at or below this are no longer remembered, so never accepted. */
  #floor = 0;
  #highest = 0;

  /** What to do with a request for `attempt` carrying `sequence` (undefined: none). */
  check(attempt: string, sequence: number | undefined): RequestVerdict {
    const entry = this.#byAttempt.get(attempt);
    if (entry !== undefined) return entry.sequence === sequence ? { kind: 'copy', answer: entry.answer } : { kind: 'ignore', why: 'replayed' };
    if (sequence === undefined) return { kind: 'new' };
    if (sequence <= this.#floor || sequence <= this.#highest - REQUEST_WINDOW) return { kind: 'ignore', why: 'too old' };
    if (this.#sequences.has(sequence)) return { kind: 'ignore', why: 'replayed' };
    return { kind: 'new' };
  }

  /** Records the answer to a request {@link check} called new. */
  record(attempt: string, sequence: number | undefined, answer: RequestAnswer): void {
    this.#byAttempt.set(attempt, { sequence, answer });
    if (sequence !== undefined) {
      this.#sequences.add(sequence);
      this.#highest = Math.max(this.#highest, sequence);
    }
    while (this.#byAttempt.size > REQUEST_WINDOW) {
      const [oldest, evicted] = this.#byAttempt.entries().next().value as [string, Entry];
      this.#byAttempt.delete(oldest);
      if (evicted.sequence !== undefined) {
        this.#sequences.delete(evicted.sequence);
        this.#floor = Math.max(this.#floor, evicted.sequence);
      }
    }
  }
}
