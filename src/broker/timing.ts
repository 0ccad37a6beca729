/**
 * When each peer should send its SYN. The broker sends both final responses at
 * the same instant; a peer receives its response one one-way delay (≈ RTT/2)
 * later. Each waits so that both SYNs leave at the moment the slower peer hears
 * from the broker: the two SYNs then cross between the NATs (TRAVERSAL-NOTES:
 * the first to arrive is dropped, the second crosses the mapping it opened).
 */

/** Start delays in milliseconds for the two sides of an attempt. */
export interface StartDelays {
  readonly initiatorMs: number;
  readonly recipientMs: number;
}

/** Computes {@link StartDelays} from the round-trip times the broker measured to each peer. */
export function startDelays(initiatorRttMs: number, recipientRttMs: number): StartDelays {
  const a = Math.max(0, initiatorRttMs) / 2;
  const b = Math.max(0, recipientRttMs) / 2;
  const slowest = Math.max(a, b);
  return { initiatorMs: Math.round(slowest - a), recipientMs: Math.round(slowest - b) };
}
