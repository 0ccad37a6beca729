/**
 * `portmap`: the recipient's gateway forwards a mapped port to its listener (../portmap-agent.ts),
 * so the initiator, behind any NAT, symmetric included, connects there with a plain connect, as
 * in `public`. The recipient takes from its listener the connections that come from the
 * initiator's public address (or a private one it listed); the Hello then proves each is the
 * initiator of this attempt, and TLS follows as on every path.
 */
import { dialUntilConnected, plainAddress } from '../sockets.js';
import { inboundPath } from './inbound.js';
import type { StrategyRunner } from './types.js';

/** After a refusal, dial again this soon, in ms. */
const REDIAL_MS = 100;

/** Runs `portmap` for either role: the initiator dials the mapped endpoint, the recipient takes inbound connections. */
export const portmap: StrategyRunner = inboundPath({
  inbound: (ctx) => ctx.mappedInbound,
  missing: 'the broker chose portmap but this recipient holds no port mapping',
  claim: (inbound, { exchange }, take) => {
    const allowed = new Set([exchange.peerPublicEndpoint.address, ...exchange.peerPrivateEndpoints.map((e) => e.address)]);
    return inbound.claim((socket) => take(socket, () => allowed.has(plainAddress(socket.remoteAddress))));
  },
  // PEER-PUBLIC-ENDPOINT is the recipient's mapped endpoint for this path (broker/schedule.ts).
  dial: (ctx, race) => void dialUntilConnected(race, ctx.signal, ctx.exchange.peerPublicEndpoint, { retryMs: REDIAL_MS, mayDial: () => race.mayOpen() }),
});
