/**
 * Time and timers, injected where logic must be tested without waiting (pion/stun
 * `WithClock`, tailscale netcheck's `TimeNow`): production code uses
 * {@link systemClock}; a test passes a fake one and moves its time by hand.
 */
import { performance } from 'node:perf_hooks';
import { ErrorCode, NattravError } from '../errors.js';

/** A pending timer; only the clock that made it can clear it. */
export type TimerHandle = object;

/** A monotonic clock and the timers that run on it. */
export interface Clock {
  /** Milliseconds on a monotonic clock (only differences mean anything). */
  now(): number;
  /** Runs `callback` once, `ms` milliseconds from now. */
  setTimeout(callback: () => void, ms: number): TimerHandle;
  /** Cancels a timer of this clock; undefined or an already-run timer is ignored. */
  clearTimeout(handle: TimerHandle | undefined): void;
}

/** The process's clock: `performance.now()` and Node's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout | undefined),
};

/** A signal that aborts after `timeoutMs` on `clock`, and the way to stop its timer. */
export interface ClockDeadline {
  /** Aborts with ERR_TIMEOUT "timed out after N ms while <doing>". */
  readonly signal: AbortSignal;
  /** Clears the timer. Always call it (in `finally`). */
  dispose(): void;
}

/** Like `startPhase` (signal.ts), on an injected clock: the error names the limit that fired. */
export function clockDeadline(clock: Clock, timeoutMs: number, doing: string): ClockDeadline {
  const controller = new AbortController();
  const handle = clock.setTimeout(() => {
    controller.abort(new NattravError(ErrorCode.Timeout, `timed out after ${timeoutMs} ms while ${doing}`));
  }, timeoutMs);
  return { signal: controller.signal, dispose: () => clock.clearTimeout(handle) };
}
