/**
 * `predicted`: at least one sequential symmetric NAT (each new flow gets the
 * next port, `step` apart). The broker names that side by the last port it
 * saw (the exchange and its mapping probe, right before this attempt); the
 * next flow will get last + step (P2PWG "N+1").
 *
 * Each side opens one socket per predicted peer port, in order, from the
 * exchange's local port: towards a sequential peer, ports last+step ...
 * last+W*step; towards a cone peer, its one endpoint. Our own k-th flow then
 * leaves from our k-th next port, which is what the peer aims at. Aiming at a
 * window of W ports tolerates W-1 flows that another program opens in between
 * on a sequential NAT facing a cone.
 */
import { sleep } from '../../common/signal.js';
import type { TransportAddress } from '../../wire/types.js';
import { dialUntilConnected } from '../sockets.js';
import { SocketRace } from './race.js';
import type { StrategyRunner } from './types.js';

/** Predicted ports per side. */
export const PREDICTION_WINDOW = 4;

/** The peer endpoints to aim at, in order. */
export function predictedTargets(peer: TransportAddress, peerMapping: { kind: string; step?: number }, window = PREDICTION_WINDOW): TransportAddress[] {
  if (peerMapping.kind !== 'sequential' || peerMapping.step === undefined) return [peer];
  const step = peerMapping.step;
  return Array.from({ length: window }, (_, k) => ({ ...peer, port: peer.port + (k + 1) * step })).filter((t) => t.port <= 65535);
}

/** After a refusal, dial again this soon, in ms. */
const REDIAL_MS = 50;

/**
 * Runs the prediction from the exchange's local port. A refused SYN (a full
 * cone forwards our SYN to a host whose matching socket is not open yet, and it
 * answers RST) is dialled again: from a cone side the mapping is unchanged; from
 * a sequential side each new flow takes the next port, which the peer's window
 * still covers, so those re-dials stop at the window.
 */
export const predicted: StrategyRunner = async (ctx) => {
  const { exchange } = ctx;
  const race = new SocketRace(ctx);
  await sleep(exchange.startDelayMs, ctx.signal).catch(() => undefined);
  const targets = predictedTargets(exchange.peerPublicEndpoint, exchange.peerMapping);
  const local = { address: exchange.localAddress, port: exchange.localPort };
  const ownSequential = exchange.mapping.kind === 'sequential';
  // A sequential NAT facing a cone needs one flow at a time (each takes the next predicted port of ours).
  const slots = ownSequential && targets.length === 1 ? 1 : targets.length;
  let flows = 0;
  // Each dial from a sequential NAT is a new flow on the next port; stop at the window.
  const mayDial = (): boolean => race.mayOpen() && (!ownSequential || flows++ < PREDICTION_WINDOW);
  for (let k = 0; k < slots; k++) {
    void dialUntilConnected(race, ctx.signal, targets[k] as TransportAddress, { local, retryMs: REDIAL_MS, mayDial });
  }
  return race.result;
};
