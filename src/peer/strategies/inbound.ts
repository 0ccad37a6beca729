/**
 * The frame that `portmap` and `socks5-bind` share: the recipient takes the connections an
 * inbound listener it holds (a gateway mapping, a BIND at its SOCKS5 proxy) offers to its
 * claim, and the initiator, after the start delay, dials PEER-PUBLIC-ENDPOINT.
 */
import type { Socket } from 'node:net';
import { sleep } from '../../common/signal.js';
import { SocketRace } from './race.js';
import type { StrategyContext, StrategyRunner } from './types.js';

/**
 * Takes `socket` into `race` when the race is still open, `belongs()` says the socket is this
 * attempt's, and the race may open another candidate; false leaves it to others (or refuses it).
 */
export type InboundTake = (socket: Socket, belongs: () => boolean) => boolean;

/** How a path with an inbound listener runs on each side. */
export interface InboundPath<I> {
  /** The recipient's listener for this path, when it holds one. */
  readonly inbound: (ctx: StrategyContext) => I | undefined;
  /** Why the attempt fails on a recipient that holds none. */
  readonly missing: string;
  /** Registers the attempt's claim at `inbound`, which hands connections to `take`; returns the release function. */
  readonly claim: (inbound: I, ctx: StrategyContext, take: InboundTake) => () => void;
  /** The initiator's dialing, started after the start delay. */
  readonly dial: (ctx: StrategyContext, race: SocketRace) => void;
}

/** A strategy runner for `path`: the recipient claims inbound connections, the initiator dials. */
export function inboundPath<I>(path: InboundPath<I>): StrategyRunner {
  return async (ctx) => {
    const race = new SocketRace(ctx);
    const { exchange } = ctx;
    if (ctx.role === 'recipient') {
      const inbound = path.inbound(ctx);
      if (inbound === undefined) {
        race.fail(new Error(path.missing));
      } else {
        const release = path.claim(inbound, ctx, (socket, belongs) => {
          if (race.settled || !belongs() || !race.mayOpen()) return false;
          socket.setNoDelay(true);
          race.add(socket, true);
          return true;
        });
        race.result.finally(release).catch(() => undefined);
      }
    } else {
      await sleep(exchange.startDelayMs, ctx.signal).catch(() => undefined);
      path.dial(ctx, race);
    }
    return race.result;
  };
}
