/**
 * A synchronous fake {@link Clock} for unit tests: time starts at 0 and moves only when the
 * test says, and `advance` runs the timers due on the way at once, without awaiting promise
 * reactions between them (fake-clock.ts is the one that lets them settle).
 */
import type { Clock, TimerHandle } from '../../src/common/clock.js';

/** A clock whose time moves only when the test says. */
export class SyncFakeClock implements Clock {
  #now = 0;
  #timers: Array<{ at: number; run: () => void; handle: TimerHandle }> = [];
  now(): number {
    return this.#now;
  }
  setTimeout(run: () => void, ms: number): TimerHandle {
    const handle = {};
    this.#timers.push({ at: this.#now + ms, run, handle });
    return handle;
  }
  clearTimeout(handle: TimerHandle | undefined): void {
    this.#timers = this.#timers.filter((t) => t.handle !== handle);
  }
  /** Timers still pending. */
  get pending(): number {
    return this.#timers.length;
  }
  /** Moves time forward by `ms`, running each timer due on the way at its own time (earliest first). */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const next = this.#timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at)[0];
      if (next === undefined) break;
      this.#timers.splice(this.#timers.indexOf(next), 1);
      this.#now = next.at;
      next.run();
    }
    this.#now = until;
  }
}
