/**
 * Abort and timeout plumbing: every async operation takes the caller's signal
 * and combines it with its own named time limit, so the error says which limit fired.
 */
import { ErrorCode, NattravError } from '../errors.js';

/** One phase of an operation: a combined signal, and the error to report if it fires. */
export interface Phase {
  /** Aborts when the caller's signal aborts or the phase's time limit passes. */
  readonly signal: AbortSignal;
  /** The error to throw now that {@link Phase.signal} has aborted. */
  error(): NattravError;
  /** Clears the timer. Always call it (in `finally`). */
  dispose(): void;
}

/**
 * Starts a phase limited by `timeoutMs` and by `parent`. On timeout the error is
 * `ERR_TIMEOUT` "timed out after N ms while <doing>"; on the caller's abort it is `ERR_ABORTED`.
 */
export function startPhase(parent: AbortSignal | undefined, timeoutMs: number, doing: string): Phase {
  const timer = new AbortController();
  const handle = setTimeout(() => {
    timer.abort(new NattravError(ErrorCode.Timeout, `timed out after ${timeoutMs} ms while ${doing}`));
  }, timeoutMs);
  // Not unref'd: a pending phase must keep the process alive until it settles or times out.
  const signal = parent === undefined ? timer.signal : AbortSignal.any([parent, timer.signal]);
  return {
    signal,
    error: () => abortError(signal),
    dispose: () => clearTimeout(handle),
  };
}

/** The {@link NattravError} that describes why `signal` aborted. */
export function abortError(signal: AbortSignal): NattravError {
  const reason: unknown = signal.reason;
  if (reason instanceof NattravError) return reason;
  return new NattravError(ErrorCode.Aborted, 'the operation was aborted', { cause: reason });
}

/** Throws the abort error when `signal` has already aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abortError(signal);
}

/** Resolves after `ms`, or rejects with the abort error as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(abortError(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(handle);
      reject(abortError(signal as AbortSignal));
    };
    const handle = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Settles like `promise`, but rejects with the abort error as soon as `signal` aborts.
 * `onAbort` runs first, to release whatever the promise was waiting on.
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal, onAbort?: () => void): Promise<T> {
  if (signal.aborted) {
    onAbort?.();
    promise.catch(() => undefined);
    return Promise.reject(abortError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const listener = (): void => {
      onAbort?.();
      reject(abortError(signal));
    };
    signal.addEventListener('abort', listener, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', listener);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', listener);
        reject(err);
      },
    );
  });
}
