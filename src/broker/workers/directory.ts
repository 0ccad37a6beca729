/**
 * The primary's attempt directory for `--workers`: which worker runs which attempt (the
 * one that took its Connect), so that a Join, MappingProbe or Relay landing on another
 * worker is sent to it. A message for an attempt nobody has claimed yet waits a little
 * (a mapping probe may overtake its Connect, whose lookups take a few IPC round trips);
 * when still nobody has, it goes back to its worker (`unrouted`), which serves it as one
 * process serves an unknown attempt. Bounded in entries and in waiting messages.
 */
import type { IpcMessage } from './ipc.js';

/** How long a routed message waits for its attempt's owner, in ms: a Connect's registry lookups take well under this. */
export const ROUTE_WAIT_MS = 1_000;
/** How long the directory remembers an attempt's owner, in ms: past the recipient's 5 s, the probes and the relay's join window. */
export const OWNER_TTL_MS = 60_000;
/** Attempts remembered at most (least recently claimed go first). */
export const MAX_OWNERS = 65_536;
/** Messages waiting for an owner at most; past it they go back at once. */
export const MAX_WAITING = 4_096;

interface Waiting {
  readonly message: IpcMessage;
  readonly from: number;
  readonly timer: NodeJS.Timeout;
}

/** Attempt ID (hex) -> worker slot, and the messages waiting for one. */
export class AttemptDirectory {
  readonly #owners = new Map<string, { slot: number; expires: number }>();
  readonly #waiting = new Map<string, Waiting[]>();
  #waitingCount = 0;
  readonly #post: (to: number, message: IpcMessage) => void;
  readonly #now: () => number;

  /** `post`: sends a message to the worker in a slot. */
  constructor(post: (to: number, message: IpcMessage) => void, now: () => number = Date.now) {
    this.#post = post;
    this.#now = now;
  }

  /** The slot of the worker running `attempt`, if known. */
  owner(attempt: string): number | undefined {
    const entry = this.#owners.get(attempt);
    if (entry === undefined || entry.expires <= this.#now()) return undefined;
    return entry.slot;
  }

  /** The worker in `slot` took the Connect of `attempt`: messages waiting for it go there now. */
  own(attempt: string, slot: number): void {
    this.#owners.delete(attempt);
    if (this.#owners.size >= MAX_OWNERS) this.#owners.delete(this.#owners.keys().next().value as string);
    this.#owners.set(attempt, { slot, expires: this.#now() + OWNER_TTL_MS });
    const waiting = this.#waiting.get(attempt);
    if (waiting === undefined) return;
    this.#waiting.delete(attempt);
    this.#waitingCount -= waiting.length;
    for (const w of waiting) {
      clearTimeout(w.timer);
      this.#post(slot, { ...w.message, nt: 'routed', from: w.from });
    }
  }

  /** A worker (`from`) routes `message` (`nt: 'route'`, with `attempt` and `ref`) to the attempt's owner. */
  route(message: IpcMessage, from: number): void {
    const attempt = message['attempt'] as string;
    const owner = this.owner(attempt);
    if (owner !== undefined) {
      this.#post(owner, { ...message, nt: 'routed', from });
      return;
    }
    if (this.#waitingCount >= MAX_WAITING) {
      this.#post(from, { nt: 'unrouted', ref: message['ref'] });
      return;
    }
    const timer = setTimeout(() => this.#giveUp(attempt, timer), ROUTE_WAIT_MS);
    const list = this.#waiting.get(attempt) ?? [];
    list.push({ message, from, timer });
    this.#waiting.set(attempt, list);
    this.#waitingCount++;
  }

  /** The worker in `slot` died: its attempts died with it. */
  forgetWorker(slot: number): void {
    for (const [attempt, entry] of this.#owners) if (entry.slot === slot) this.#owners.delete(attempt);
  }

  /** Drops everything (the primary stops). */
  close(): void {
    for (const list of this.#waiting.values()) for (const w of list) clearTimeout(w.timer);
    this.#waiting.clear();
    this.#waitingCount = 0;
    this.#owners.clear();
  }

  /** Nobody claimed the attempt in time: the message goes back to its worker, to be served there. */
  #giveUp(attempt: string, timer: NodeJS.Timeout): void {
    const list = this.#waiting.get(attempt);
    if (list === undefined) return;
    const index = list.findIndex((w) => w.timer === timer);
    if (index < 0) return;
    const [w] = list.splice(index, 1) as [Waiting];
    this.#waitingCount--;
    if (list.length === 0) this.#waiting.delete(attempt);
    this.#post(w.from, { nt: 'unrouted', ref: w.message['ref'] });
  }
}
