/** `direct`: TCP simultaneous open between two endpoint-independent mappings (see ../punch.ts). */
import { simultaneousOpen } from '../punch.js';
import type { StrategyRunner } from './types.js';

/** Runs the simultaneous open from the exchange's local port and verifies the peer. */
export const direct: StrategyRunner = async (ctx) => {
  const { exchange } = ctx;
  const socket = await simultaneousOpen({
    localAddress: exchange.localAddress,
    localPort: exchange.localPort,
    remote: exchange.peerPublicEndpoint,
    startDelayMs: exchange.startDelayMs,
    signal: ctx.signal,
    // After a RST the recipient accepts instead, for good without a NAT, awhile behind one: two hosts that
    // both answer early SYNs with RSTs (no NAT, full cone, restricted cone) refuse each other in lockstep.
    onRefusal: ctx.role === 'initiator' ? 'redial' : exchange.mapping.kind === 'none' ? 'listen' : 'listen-awhile',
  });
  try {
    await ctx.verify(socket);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
};
