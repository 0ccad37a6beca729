/**
 * The sockets a recipient's incoming attempts may hold at once, shared by all of
 * them (server.ts sets it up): each attempt reserves a few for its exchange and its
 * one punch, and strategies that open many (birthday, prediction, redials) take
 * each further socket from here, and stop opening when none is left.
 */

/** A counter of sockets in use against a fixed limit. */
export class SocketBudget {
  readonly limit: number;
  #inUse = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Sockets taken and not yet given back. */
  get inUse(): number {
    return this.#inUse;
  }

  /** Sockets that may still be taken. */
  get available(): number {
    return this.limit - this.#inUse;
  }

  /** Takes `count` sockets if that many are left; false (and nothing taken) otherwise. */
  tryTake(count = 1): boolean {
    if (this.#inUse + count > this.limit) return false;
    this.#inUse += count;
    return true;
  }

  /** Gives `count` sockets back. */
  release(count = 1): void {
    this.#inUse = Math.max(0, this.#inUse - count);
  }
}
