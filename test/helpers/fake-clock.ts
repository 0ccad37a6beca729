/** A fake {@link Clock} for unit tests: time moves only when the test says so. */
import type { Clock, TimerHandle } from '../../src/common/clock.js';

interface FakeTimer {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
}

/** Lets every pending promise reaction run (one macrotask turn). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Time starts at `start` and only {@link FakeClock.advance} moves it. */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Set<FakeTimer>();

  constructor(start = 1_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): TimerHandle {
    const timer: FakeTimer = { due: this.#now + Math.max(0, ms), seq: this.#seq++, callback };
    this.#timers.add(timer);
    return timer;
  }

  clearTimeout(handle: TimerHandle | undefined): void {
    if (handle !== undefined) this.#timers.delete(handle as FakeTimer);
  }

  /** Timers still pending. */
  get pending(): number {
    return this.#timers.size;
  }

  /** When the next timer is due, or undefined without timers. */
  get nextDue(): number | undefined {
    let next: number | undefined;
    for (const t of this.#timers) if (next === undefined || t.due < next) next = t.due;
    return next;
  }

  /**
   * Moves time forward by `ms`, running each timer due on the way at its own time
   * (in order), and lets the promise reactions it starts settle before the next one.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      let first: FakeTimer | undefined;
      for (const t of this.#timers) if (t.due <= target && (first === undefined || t.due < first.due || (t.due === first.due && t.seq < first.seq))) first = t;
      if (first === undefined) break;
      this.#timers.delete(first);
      this.#now = first.due;
      first.callback();
      await settle();
    }
    this.#now = target;
    await settle();
  }
}
