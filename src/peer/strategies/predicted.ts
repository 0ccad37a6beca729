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
import { dial } from './dial.js';
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

/** Runs the prediction from the exchange's local port. */
export const predicted: StrategyRunner = async (ctx) => {
  const { exchange } = ctx;
  const race = new SocketRace(ctx);
  await sleep(exchange.startDelayMs, ctx.signal).catch(() => undefined);
  const targets = predictedTargets(exchange.peerPublicEndpoint, exchange.peerMapping);
  // A sequential NAT facing a cone needs as many flows as the cone side has targets (one per predicted port of ours).
  const flows = exchange.mapping.kind === 'sequential' && targets.length === 1 ? 1 : targets.length;
  for (let k = 0; k < flows && !race.settled; k++) {
    race.add(dial(targets[k] as TransportAddress, { address: exchange.localAddress, port: exchange.localPort }));
  }
  return race.result;
};
