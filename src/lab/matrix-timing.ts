/**
 * The least time a direct connection between two NATed peers can take in a lab whose site links
 * each add `d` ms one way (the broker's link adds none), counted from the initiator's
 * `connect()`. Each step is a number of one-way link crossings: a message between a peer and the
 * broker crosses one delayed link (d), a message between the two peers crosses two (2d).
 * The minimum is that of a warm recipient (one holding a standby exchange, the default:
 * broker/standby.ts); a recipient without one (declined, or the broker at its cap) takes the
 * cold path, which is counted too.
 */

/** One step of the rendezvous and its cost in one-way delays. */
export interface SetupStep {
  /** What happens. */
  readonly step: string;
  /** Delayed one-way link crossings on the critical path. */
  readonly crossings: number;
  /** `crossings * d`, ms. */
  readonly ms: number;
}

/** The minimum setup time of a direct connection, step by step. */
export interface MinimumSetup {
  /** One-way delay per site link, ms. */
  readonly delayMs: number;
  readonly steps: readonly SetupStep[];
  /** Crossings until both TCP sockets are established. */
  readonly establishedCrossings: number;
  /** Crossings until the Hello exchange is done (what `setupMs` measures). */
  readonly totalCrossings: number;
  /** `totalCrossings * d`, ms. */
  readonly totalMs: number;
  /** The same for a cold recipient (no standby: ConnectionRequest, Join and Probe on the path). */
  readonly cold: { readonly steps: readonly SetupStep[]; readonly totalCrossings: number; readonly totalMs: number };
}

/**
 * The attempt's proofs after the simultaneous open (the last step of both paths): without
 * TLS both peers write theirs the moment the connection is up, so they cross, one peer
 * one-way delay (peer/hello.ts); it was a request and its answer (4) before.
 */
const HELLO_CROSSINGS = 2;

/** The critical path with a warm recipient (README "Standby exchanges"), in one-way link crossings. */
const warmPath: ReadonlyArray<readonly [string, number]> = [
  ['initiator -> broker TCP handshake (SYN, SYN/ACK)', 2],
  ['Connect(URI, CONNECT-RTT) to the broker', 1],
  ["answers to both at once (the recipient's down its standby)", 1],
  ['the SYNs cross both NATs (each crosses two links)', 2],
  ['SYN/ACKs of the simultaneous open', 2],
  ['the two proofs (Hello) cross, written at once by both', HELLO_CROSSINGS],
];

/** The critical path with a cold recipient (README "How a connection is made"), in one-way link crossings. */
const coldPath: ReadonlyArray<readonly [string, number]> = [
  ['initiator -> broker TCP handshake (SYN, SYN/ACK)', 2],
  ['Connect(URI) to the broker', 1],
  ['ConnectionRequest to the recipient over its UDP registration', 1],
  ['recipient -> broker TCP handshake', 2],
  ['Join(attempt ID) to the broker', 1],
  ['Probe round trip on both exchanges (in parallel)', 2],
  ['answers with the peer endpoints and start delays', 1],
  ['the SYNs cross both NATs (each crosses two links)', 2],
  ['SYN/ACKs of the simultaneous open', 2],
  ['the two proofs (Hello) cross, written at once by both', HELLO_CROSSINGS],
];

/** Computes {@link MinimumSetup} for a one-way delay of `delayMs` per site link. */
export function minimumSetup(delayMs: number): MinimumSetup {
  const count = (path: ReadonlyArray<readonly [string, number]>): { steps: SetupStep[]; totalCrossings: number; totalMs: number } => {
    const steps = path.map(([step, crossings]) => ({ step, crossings, ms: crossings * delayMs }));
    const totalCrossings = steps.reduce((sum, s) => sum + s.crossings, 0);
    return { steps, totalCrossings, totalMs: totalCrossings * delayMs };
  };
  const warm = count(warmPath);
  return { delayMs, ...warm, establishedCrossings: warm.totalCrossings - HELLO_CROSSINGS, cold: count(coldPath) };
}
