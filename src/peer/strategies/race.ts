/**
 * Many candidate sockets, one winner: every candidate that connects is
 * verified (Hello); the first verified wins, every other candidate is closed,
 * and a later success cancels nothing that already won. Each candidate holds
 * one socket of the context's budget (socket-budget.ts) until it closes or wins;
 * strategies ask {@link SocketRace.mayOpen} before they open one.
 */
import type { Socket } from 'node:net';
import { abortError } from '../../common/signal.js';
import { ErrorCode, NattravError, isNattravError } from '../../errors.js';
import type { StrategyContext } from './types.js';

/** Collects candidate sockets for one strategy run. */
export class SocketRace {
  readonly #ctx: StrategyContext;
  readonly #candidates = new Set<Socket>();
  /** Gives a candidate's socket back to the budget (once: on close, or when it wins and leaves the attempt). */
  readonly #holds = new WeakMap<Socket, () => void>();
  #winner: Socket | undefined;
  #settled = false;
  #lastError: unknown;
  #resolve!: (socket: Socket) => void;
  #reject!: (err: unknown) => void;
  /** Settles with the winner, or with the abort error when the signal fires first. */
  readonly result: Promise<Socket>;

  constructor(ctx: StrategyContext) {
    this.#ctx = ctx;
    this.result = new Promise<Socket>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    const onAbort = (): void => this.#finish(undefined, this.#timeoutWithCause());
    if (ctx.signal.aborted) onAbort();
    else ctx.signal.addEventListener('abort', onAbort, { once: true });
    this.result.finally(() => ctx.signal.removeEventListener('abort', onAbort)).catch(() => undefined);
  }

  /** True once a winner was chosen or the race was given up. */
  get settled(): boolean {
    return this.#settled;
  }

  /** Number of candidates still open. */
  get open(): number {
    return this.#candidates.size;
  }

  /**
   * True when the budget has a socket left for one more candidate. When not, the
   * reason is kept as the race's last error (a timeout then names it).
   */
  mayOpen(): boolean {
    const budget = this.#ctx.sockets;
    if (budget === undefined || budget.available > 0) return true;
    this.#lastError = new Error(`socket budget exhausted: incoming attempts hold all ${budget.limit} sockets (maxAttemptSockets)`);
    return false;
  }

  /** Adds a socket that is connecting (or connected, or accepted); false when it was closed at once (race over, or no socket left in the budget). */
  add(socket: Socket, alreadyConnected = false): boolean {
    if (this.#settled || !this.mayOpen()) {
      socket.destroy();
      return false;
    }
    const budget = this.#ctx.sockets;
    if (budget !== undefined) {
      budget.tryTake();
      let held = true;
      const giveBack = (): void => {
        if (held) budget.release();
        held = false;
      };
      socket.once('close', giveBack);
      this.#holds.set(socket, giveBack);
    }
    this.#candidates.add(socket);
    socket.on('error', (err: Error) => {
      this.#lastError = err;
      this.#drop(socket);
    });
    socket.once('close', () => this.#candidates.delete(socket));
    const verify = (): void => {
      this.#ctx.verify(socket).then(
        () => this.#finish(socket),
        (err: unknown) => {
          this.#lastError = err;
          this.#drop(socket);
          // The other peer itself answered with a security mode unlike ours: no other candidate can do better.
          if (isNattravError(err, ErrorCode.TlsRequired) || isNattravError(err, ErrorCode.PlainRequired)) this.#finish(undefined, err);
        },
      );
    };
    if (alreadyConnected) verify();
    else socket.once('connect', verify);
    return true;
  }

  /** Closes one candidate. */
  drop(socket: Socket): void {
    this.#drop(socket);
  }

  /** Gives up with `err` (nothing more will be added and nothing is pending). */
  fail(err: unknown): void {
    this.#finish(undefined, err);
  }

  #drop(socket: Socket): void {
    this.#candidates.delete(socket);
    if (socket !== this.#winner) socket.destroy();
  }

  #timeoutWithCause(): NattravError {
    const reason = abortError(this.#ctx.signal);
    if (this.#lastError === undefined || reason.code !== ErrorCode.Timeout) return reason;
    const last = this.#lastError as { code?: string; message?: string };
    return new NattravError(reason.code, `${reason.message} (last error: ${last.code ?? last.message ?? String(last)})`, { cause: this.#lastError });
  }

  #finish(winner: Socket | undefined, err?: unknown): void {
    if (this.#settled) {
      if (winner !== undefined && winner !== this.#winner) winner.destroy();
      return;
    }
    this.#settled = true;
    this.#winner = winner;
    for (const socket of this.#candidates) if (socket !== winner) socket.destroy();
    this.#candidates.clear();
    if (winner !== undefined) {
      // The winner becomes the application's connection: it no longer counts against the attempts.
      this.#holds.get(winner)?.();
      winner.removeAllListeners('error');
      this.#resolve(winner);
    } else this.#reject(err);
  }
}
