/**
 * The rising SEQUENCE of the broker's ConnectionRequests, per recipient URI: the
 * recipient acts on each number once (peer/connection-requests.ts), so every request a
 * broker sends for one URI needs a new, higher number. One counter serves the whole
 * broker: the rendezvous's own in one process, the primary's for `--workers`.
 */

/** URIs whose SEQUENCE is kept at most (memory bound; least recently used go first). */
export const MAX_SEQUENCE_URIS = 65_536;

/** The last ConnectionRequest SEQUENCE per URI. */
export class SequenceCounter {
  /** Insertion order = least recently used first. */
  readonly #sequences = new Map<string, number>();

  /** The next ConnectionRequest SEQUENCE for `uri` (32 bits; wraps after four billion requests, far beyond a session's life). */
  next(uri: string): number {
    const next = ((this.#sequences.get(uri) ?? 0) % 0xffffffff) + 1;
    this.#sequences.delete(uri);
    // Bounded: the URIs asked for least recently are forgotten first (a forgotten URI starts again at 1,
    // which its recipient's book accepts only in a new session; the old session's requests are long gone).
    if (this.#sequences.size >= MAX_SEQUENCE_URIS) this.#sequences.delete(this.#sequences.keys().next().value as string);
    this.#sequences.set(uri, next);
    return next;
  }
}
