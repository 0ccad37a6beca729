/**
 * `portmap`: the recipient's gateway forwards a mapped port to its listener (../portmap-agent.ts),
 * so the initiator, behind any NAT, symmetric included, connects there with a plain connect, as
 * in `public`. The recipient takes from its listener the connections that come from the
 * initiator's public address (or a private one it listed); the Hello then proves each is the
 * initiator of this attempt, and TLS follows as on every path.
 */
import { sleep } from '../../common/signal.js';
import { dialUntilConnected, plainAddress } from '../sockets.js';
import { SocketRace } from './race.js';
import type { StrategyRunner } from './types.js';

/** After a refusal, dial again this soon, in ms. */
const REDIAL_MS = 100;

/** Runs `portmap` for either role: the initiator dials the mapped endpoint, the recipient takes inbound connections. */
export const portmap: StrategyRunner = async (ctx) => {
  const race = new SocketRace(ctx);
  const { exchange } = ctx;
  if (ctx.role === 'recipient') {
    const inbound = ctx.mappedInbound;
    if (inbound === undefined) {
      race.fail(new Error('the broker chose portmap but this recipient holds no port mapping'));
    } else {
      const allowed = new Set([exchange.peerPublicEndpoint.address, ...exchange.peerPrivateEndpoints.map((e) => e.address)]);
      const release = inbound.claim((socket) => {
        if (race.settled || !allowed.has(plainAddress(socket.remoteAddress)) || !race.mayOpen()) return false;
        socket.setNoDelay(true);
        race.add(socket, true);
        return true;
      });
      race.result.finally(release).catch(() => undefined);
    }
  } else {
    // PEER-PUBLIC-ENDPOINT is the recipient's mapped endpoint for this path (broker/schedule.ts).
    await sleep(exchange.startDelayMs, ctx.signal).catch(() => undefined);
    void dialUntilConnected(race, ctx.signal, exchange.peerPublicEndpoint, { retryMs: REDIAL_MS, mayDial: () => race.mayOpen() });
  }
  return race.result;
};
