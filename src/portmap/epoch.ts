/**
 * Gateway reboot detection from the epoch field every NAT-PMP and PCP response carries
 * (RFC 6886 §3.6, RFC 6887 §8.5). Pure: the caller passes its own clock readings.
 */

/** One response's epoch and when (client clock, ms) it arrived. */
export interface EpochObservation {
  /** The gateway's epoch field, seconds. */
  readonly epochSeconds: number;
  /** The client's monotonic clock when the response arrived, ms. */
  readonly atMs: number;
}

/** Which rule to apply. */
export type EpochRule = 'nat-pmp' | 'pcp';

/**
 * True when `current` shows the gateway lost its mapping state since `previous`
 * (a reboot, or a restarted daemon): then every mapping must be made again.
 *
 * - NAT-PMP (RFC 6886 §3.6): the epoch must have grown by at least 7/8 of the client's
 *   elapsed time, less 2 seconds of slack.
 * - PCP (RFC 6887 §8.5): the epoch must not go back by more than 1 second, and the server's and
 *   client's deltas must agree within 2 seconds plus 1/16.
 */
export function epochLost(rule: EpochRule, previous: EpochObservation | undefined, current: EpochObservation): boolean {
  if (previous === undefined) return false;
  const clientDeltaS = Math.max(0, (current.atMs - previous.atMs) / 1000);
  if (rule === 'nat-pmp') {
    const expected = previous.epochSeconds + (clientDeltaS * 7) / 8;
    return current.epochSeconds < expected - 2;
  }
  if (current.epochSeconds < previous.epochSeconds - 1) return true;
  const serverDeltaS = current.epochSeconds - previous.epochSeconds;
  return clientDeltaS + 2 < serverDeltaS - serverDeltaS / 16 || serverDeltaS + 2 < clientDeltaS - clientDeltaS / 16;
}
