/**
 * Whether a `connect` ever reached its broker. {@link ReachWatch} passes every dial on to
 * the peer's dialer and notes the first one that connected, and what each failed or cut
 * off dial tried: when the connect's time limit runs out before any dial reached the
 * broker, the broker was unreachable (ERR_BROKER_UNREACHABLE, exit 4, naming each step
 * tried and why), not slow to answer (ERR_TIMEOUT).
 */
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import { DIRECT_DIALER, type Dialer } from './dialer.js';

/** A dialer that remembers whether it reached a broker; see the module comment. */
export class ReachWatch implements Dialer {
  readonly #inner: Dialer;
  #reached = false;
  /** What the dials that did not connect tried, in order: one entry per step. */
  readonly #steps: string[] = [];
  #last: HostPort | undefined;

  /** Watches `inner` (undefined: the direct dialer). */
  constructor(inner: Dialer | undefined) {
    this.#inner = inner ?? DIRECT_DIALER;
  }

  /** The inner dialer's kind (it may change: the web fallback's). */
  get kind(): string {
    return this.#inner.kind;
  }

  async dial(target: HostPort, signal: AbortSignal): Promise<Socket> {
    const started = performance.now();
    this.#last = target;
    try {
      const socket = await this.#inner.dial(target, signal);
      this.#reached = true;
      return socket;
    } catch (err) {
      const steps = this.#inner.stepsTried?.(target);
      if (steps !== undefined && steps.length > 0) this.#steps.push(...steps);
      else if (signal.aborted) this.#steps.push(`${this.#inner.kind === 'direct' ? 'tcp' : this.#inner.kind} ${where(target)}: no connection within ${Math.round(performance.now() - started)} ms`);
      else this.#steps.push(err instanceof Error ? err.message : String(err));
      throw err;
    }
  }

  /**
   * ERR_BROKER_UNREACHABLE for a connect whose `timeoutMs` ran out before any dial reached
   * a broker, naming each step tried and why (`brokers` when no dial had started: the
   * names were still being resolved); undefined once a dial reached one.
   */
  neverReached(timeoutMs: number, brokers: string): NattravError | undefined {
    if (this.#reached) return undefined;
    const tried = this.#steps.length > 0 ? `tried: ${this.#steps.join('; ')}` : `no connection was started (resolving ${brokers})`;
    const target = this.#last;
    return new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: not reached within ${timeoutMs} ms; ${tried}`, target === undefined ? {} : { address: target.host, port: target.port });
  }
}

function where(target: HostPort): string {
  return formatEndpoint({ address: target.host, port: target.port });
}

/**
 * Why a connect stopped when its whole-operation signal aborted: `stopped` (the phase's
 * error) when the caller's own `signal` aborted it, or when a dial had reached a broker;
 * when the time limit ran out before any had, {@link ReachWatch.neverReached}'s error.
 */
export function whyStopped(stopped: NattravError, signal: AbortSignal | undefined, reach: ReachWatch, timeoutMs: number, brokers: string): NattravError {
  if (signal?.aborted === true || stopped.code !== ErrorCode.Timeout) return stopped;
  return reach.neverReached(timeoutMs, brokers) ?? stopped;
}
