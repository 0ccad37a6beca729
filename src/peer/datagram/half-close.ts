/**
 * Half-close of a datagram channel, as TCP's FIN: `end()` on one side says "nothing more
 * from me". Its END packet (sealed like data) carries the counter of that first END, so the
 * other side knows which packets came before it; it is sent again shortly after and then
 * with every keepalive, since a datagram can be lost. The other side reports the end
 * (`'end'`) once every packet sent before it arrived, or {@link END_GRACE_MS} after the END
 * when one of them was lost for good, so reordering on the way never cuts the last
 * datagrams off. When both sides have ended, the channel closes; a CLOSE that reaches a
 * side which ended, before the peer's END was reported, counts as that END (the last side
 * to end closes at once, and its last datagrams may still be behind its CLOSE).
 *
 * Sans-IO: the channel sends the packets and gives the clock; this decides when.
 */
import type { Clock, TimerHandle } from '../../common/clock.js';

/** After the peer's END, how long to wait for packets it sent before that END, in ms. */
export const END_GRACE_MS = 1_000;
/** When our END is sent again after the first one, in ms from it (then it rides every keepalive). */
export const END_RESEND_MS: readonly number[] = [100, 400];

/** What the half-close asks of its channel. */
export interface HalfCloseHooks {
  /** Send an END naming `first`, the counter our first END went out with (undefined: this is the first). */
  sendEnd(first: number | undefined): number;
  /** The peer ended and everything it sent before arrived (or the grace ran out): emit 'end'. */
  peerEnded(): void;
  /** Both sides ended: close the channel. */
  bothEnded(): void;
}

/** The half-close state of one channel. */
export class HalfClose {
  readonly #clock: Clock;
  readonly #hooks: HalfCloseHooks;
  /** The counter of our first END; undefined while we still send. */
  #ours: number | undefined;
  /** The counter of the peer's first END, from its payload. */
  #theirs: number | undefined;
  #reported = false;
  #grace: TimerHandle | undefined;
  readonly #resends: TimerHandle[] = [];

  constructor(clock: Clock, hooks: HalfCloseHooks) {
    this.#clock = clock;
    this.#hooks = hooks;
  }

  /** Whether our side ended (end() was called). */
  get ended(): boolean {
    return this.#ours !== undefined;
  }

  /** The counter our first END went out with (a CLOSE after it names it too); undefined while we still send. */
  get firstEnd(): number | undefined {
    return this.#ours;
  }

  /** Whether the peer's end was reported. */
  get peerEnded(): boolean {
    return this.#reported;
  }

  /** Our side ends: the first END goes out now, and again after each of {@link END_RESEND_MS}. Idempotent. */
  end(): void {
    if (this.#ours !== undefined) return;
    this.#ours = this.#hooks.sendEnd(undefined);
    for (const ms of END_RESEND_MS) this.#resends.push(this.#clock.setTimeout(() => this.resend(), ms));
    if (this.#reported) this.#hooks.bothEnded();
  }

  /** Sends our END again (the channel calls it instead of a KEEPALIVE once we ended). */
  resend(): void {
    if (this.#ours !== undefined) this.#hooks.sendEnd(this.#ours);
  }

  /**
   * A sealed packet of the peer was taken: `end` is the first-END counter an END packet
   * carries (undefined for any other packet). `seenAllBelow` tells whether every packet
   * below a counter arrived.
   */
  taken(end: number | undefined, seenAllBelow: (limit: number) => boolean): void {
    if (this.#reported) return;
    if (end !== undefined) this.#theirs ??= end;
    const theirs = this.#theirs;
    if (theirs === undefined) return;
    if (seenAllBelow(theirs)) this.#report();
    else this.#grace ??= this.#clock.setTimeout(() => this.#report(), END_GRACE_MS);
  }

  /** Stops the timers (the channel closed). */
  stop(): void {
    for (const timer of [this.#grace, ...this.#resends]) this.#clock.clearTimeout(timer);
    this.#resends.length = 0;
  }

  #report(): void {
    if (this.#reported) return;
    this.#reported = true;
    this.#clock.clearTimeout(this.#grace);
    this.#hooks.peerEnded();
    if (this.#ours !== undefined) this.#hooks.bothEnded();
  }
}

/** The first-END counter an END packet names (its own counter when malformed, never beyond it). */
export function endCounter(payload: Buffer, counter: number): number {
  if (payload.length !== 8) return counter;
  return Math.min(Number(payload.readBigUInt64BE(0)), counter);
}

/** The payload of an END, or of a CLOSE sent after our END: the counter of our first END. */
export function endPayload(first: number): Buffer {
  const payload = Buffer.alloc(8);
  payload.writeBigUInt64BE(BigInt(first));
  return payload;
}
