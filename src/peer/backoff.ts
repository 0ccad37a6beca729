/**
 * When a recipient talks to its broker, decided without sockets (sans-IO): the
 * keepalive schedule of a registration and the capped exponential backoff with
 * jitter of its retries. The I/O (one registration or refresh) is a function the
 * caller passes; time comes from an injected {@link Clock}, so the whole schedule is
 * tested on a fake clock.
 *
 * The states and what moves between them:
 *
 * 1. `starting`: the first registration. Success -> `registered` ('first').
 *    Failure -> with `once`, or an error no retry can cure ({@link KeepaliveLoopOptions.isFinal}),
 *    `start()` rejects and the loop is `closed`; otherwise the next try comes after
 *    the backoff delay (capped at `policy.maxMs`), reported by `onRetry`.
 * 2. `registered`: a refresh every `keepaliveMs`. Success -> still `registered`
 *    ('refresh'), or, when the broker had forgotten us and a new proof of key made a
 *    new session (or another broker of several took over within the try: `lost` says
 *    why), `onLost` then 'again'. Failure (or {@link KeepaliveLoop.interrupt},
 *    e.g. the control connection closed) -> `lost`, `onLost` once.
 * 3. `lost`: tries again after the backoff delay, capped at `keepaliveMs` (a registered
 *    peer sends that often anyway, and the registration is back within one keepalive
 *    interval after the broker is). Success -> `registered` ('again').
 *
 * A retry's delay counts from when the failed try started (a try that timed out has
 * used up part of it), never earlier than its end: so while lost, tries start at least
 * every `keepaliveMs` (as long as one try takes less).
 * 4. `closed` (close()): no more tries; an attempt in flight is ignored when it settles.
 */
import { systemClock, type Clock, type TimerHandle } from '../common/clock.js';
import { ErrorCode, NattravError } from '../errors.js';
import { PEER_DEFAULTS } from './options.js';

/** Capped exponential backoff with jitter. */
export interface BackoffPolicy {
  /** The delay after the first failure, in ms; doubled after each further one. */
  readonly initialMs: number;
  /** The longest delay, in ms. */
  readonly maxMs: number;
  /** The fraction of each delay drawn at random, 0 to 1: a delay d becomes d × (1 − jitter × r), r in [0, 1). */
  readonly jitter: number;
}

/**
 * The retry policy of registrations: 1 s doubling to 60 s (a broker that is down for
 * long is asked once a minute, not hammered), half of each delay random so that peers
 * a broker restart cut off all at once do not come back all at once.
 */
export const REGISTRATION_BACKOFF: BackoffPolicy = { initialMs: PEER_DEFAULTS.retryInitialMs, maxMs: PEER_DEFAULTS.retryMaxMs, jitter: 0.5 };

/** The delay after `failures` (≥ 1) consecutive failures, in ms, at most `capMs`; `random` returns a number in [0, 1). */
export function backoffDelayMs(policy: BackoffPolicy, failures: number, random: () => number, capMs = policy.maxMs): number {
  const doublings = Math.min(Math.max(failures, 1) - 1, 30);
  const full = Math.min(capMs, policy.maxMs, policy.initialMs * 2 ** doublings);
  return Math.round(full * (1 - policy.jitter * random()));
}

/** The loop's state (see the module comment). */
export type KeepaliveState = 'idle' | 'starting' | 'registered' | 'lost' | 'closed';

/** Why a registration succeeded: the first one, a refresh that kept it, or registered again after it was lost. */
export type RegistrationKind = 'first' | 'refresh' | 'again';

/** What one attempt granted. */
export interface AttemptResult<T> {
  readonly info: T;
  /** The broker had forgotten the registration we held (restart, expiry) and a new proof of key made a new one. */
  readonly renewed: boolean;
  /** With `renewed`: why the registration held was lost (e.g. its broker stopped answering and another one took it), for onLost. */
  readonly lost?: unknown;
}

/** A failed try that will be retried. */
export interface RegistrationRetry {
  /** Why the try failed. */
  readonly error: unknown;
  /** Consecutive failures so far (1 after the first). */
  readonly failures: number;
  /** When the next try comes, in ms from now. */
  readonly delayMs: number;
  /** 'start': no registration yet; 'lost': the registration was lost and is being made again. */
  readonly phase: 'start' | 'lost';
}

/** Options of {@link KeepaliveLoop}. */
export interface KeepaliveLoopOptions<T> {
  /** One registration or refresh (the I/O). */
  readonly attempt: () => Promise<AttemptResult<T>>;
  /** Time between refreshes, in ms. */
  readonly keepaliveMs: number;
  /**
   * When given, the time until the next refresh, in ms, asked after each success (a peer with
   * several brokers refreshes early enough to move within one keepalive). @default keepaliveMs
   */
  readonly refreshMs?: () => number;
  /** @default {@link REGISTRATION_BACKOFF} */
  readonly policy?: BackoffPolicy;
  /** True: the first registration's failure is final (fail fast). @default false */
  readonly once?: boolean;
  /** Errors no retry can cure (our own configuration): the first registration's failure with one is final. @default none */
  readonly isFinal?: (error: unknown) => boolean;
  /** @default {@link systemClock} */
  readonly clock?: Clock;
  /** @default Math.random */
  readonly random?: () => number;
  /** Each success. */
  readonly onRegistered?: (info: T, kind: RegistrationKind) => void;
  /** Once per loss of a registration we held, with the reason. */
  readonly onLost?: (error: unknown) => void;
  /** Each failure that will be retried. */
  readonly onRetry?: (retry: RegistrationRetry) => void;
}

/** Runs a registration's keepalives and retries on a clock (see the module comment). */
export class KeepaliveLoop<T> {
  readonly #options: KeepaliveLoopOptions<T>;
  readonly #clock: Clock;
  readonly #policy: BackoffPolicy;
  #state: KeepaliveState = 'idle';
  #failures = 0;
  #timer: TimerHandle | undefined;
  /** When the current (or last) try started, on the clock. */
  #triedAt = 0;
  /** True while a try is on the wire. */
  #running = false;
  /** refreshNow() was asked while a try ran: refresh again once it succeeds. */
  #again = false;
  #first: { resolve: (info: T) => void; reject: (error: unknown) => void } | undefined;

  constructor(options: KeepaliveLoopOptions<T>) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#policy = options.policy ?? REGISTRATION_BACKOFF;
  }

  /** The current state. */
  get state(): KeepaliveState {
    return this.#state;
  }

  /** Starts; resolves with the first registration, or rejects with the failure that ended the start. */
  start(): Promise<T> {
    if (this.#state !== 'idle') return Promise.reject(new NattravError(ErrorCode.Closed, `the keepalive loop is already ${this.#state}`));
    this.#state = 'starting';
    const first = new Promise<T>((resolve, reject) => {
      this.#first = { resolve, reject };
    });
    this.#run();
    return first;
  }

  /** The registration was lost outside a refresh (e.g. its control connection closed): go `lost` and retry after the backoff delay. */
  interrupt(error: unknown): void {
    if (this.#state !== 'registered') return;
    this.#clock.clearTimeout(this.#timer);
    this.#triedAt = this.#clock.now(); // the delay counts from now: no try failed
    this.#lose(error);
  }

  /** Stops for good; a pending start() rejects with `error`. Idempotent. */
  close(error: unknown): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#clock.clearTimeout(this.#timer);
    this.#first?.reject(error);
    this.#first = undefined;
  }

  /**
   * Refreshes now instead of at the next keepalive (what we register changed, e.g. a port
   * mapping appeared): only while registered; while a try is running, right after it
   * succeeds (it may have carried the old value). The keepalive interval then counts from
   * this try.
   */
  refreshNow(): void {
    if (this.#running) this.#again = true;
    if (this.#state !== 'registered' || this.#running) return;
    this.#clock.clearTimeout(this.#timer);
    this.#run();
  }

  #run(): void {
    const from = this.#state;
    this.#running = true;
    this.#triedAt = this.#clock.now();
    this.#options.attempt().then(
      (result) => {
        this.#running = false;
        this.#succeeded(from, result);
      },
      (error: unknown) => {
        this.#running = false;
        this.#failed(from, error);
      },
    );
  }

  #after(delayMs: number): void {
    this.#timer = this.#clock.setTimeout(() => this.#run(), delayMs);
  }

  #succeeded(from: KeepaliveState, { info, renewed, lost }: AttemptResult<T>): void {
    if (this.#state !== from) return; // closed (or interrupted) while the attempt ran
    this.#failures = 0;
    this.#state = 'registered';
    if (from === 'starting') {
      this.#options.onRegistered?.(info, 'first');
      this.#first?.resolve(info);
      this.#first = undefined;
    } else if (from === 'registered' && renewed) {
      this.#options.onLost?.(lost ?? new NattravError(ErrorCode.BrokerError, 'the broker no longer knew our registration (it restarted, or the lifetime ran out); registered again with a new proof of key'));
      this.#options.onRegistered?.(info, 'again');
    } else {
      this.#options.onRegistered?.(info, from === 'lost' ? 'again' : 'refresh');
    }
    // onRegistered may have closed us.
    if (this.#state !== 'registered') return;
    const again = this.#again;
    this.#again = false;
    this.#after(again ? 0 : (this.#options.refreshMs?.() ?? this.#options.keepaliveMs));
  }

  #failed(from: KeepaliveState, error: unknown): void {
    this.#again = false;
    if (this.#state !== from) return;
    if (from === 'starting' && (this.#options.once === true || this.#options.isFinal?.(error) === true)) {
      this.#state = 'closed';
      this.#first?.reject(error);
      this.#first = undefined;
      return;
    }
    if (from === 'registered') {
      this.#lose(error);
      return;
    }
    this.#retry(error, from === 'starting' ? 'start' : 'lost');
  }

  #lose(error: unknown): void {
    this.#state = 'lost';
    this.#failures = 0;
    this.#options.onLost?.(error);
    if (this.#state === 'lost') this.#retry(error, 'lost');
  }

  #retry(error: unknown, phase: 'start' | 'lost'): void {
    this.#failures++;
    const cap = phase === 'lost' ? this.#options.keepaliveMs : this.#policy.maxMs;
    const spent = this.#clock.now() - this.#triedAt;
    const delayMs = Math.max(0, backoffDelayMs(this.#policy, this.#failures, this.#options.random ?? Math.random, cap) - spent);
    this.#options.onRetry?.({ error, failures: this.#failures, delayMs, phase });
    if (this.#state !== 'closed') this.#after(delayMs);
  }
}
