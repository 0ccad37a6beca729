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
    // A recipient without a NAT accepts after a RST instead (two reachable hosts refuse each other's SYNs).
    listenOnRefusal: ctx.role === 'recipient' && exchange.mapping.kind === 'none',
  });
  try {
    await ctx.verify(socket);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
};
