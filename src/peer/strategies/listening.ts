/**
 * The strategies where one side can simply listen:
 * - `public`: the recipient has a public address; it listens, the initiator connects.
 * - `reversal`: the initiator has a public address; the broker has asked the
 *   recipient to dial it instead (P2PWG connection reversal).
 * - `lan`: both sit behind the same public address; the recipient listens and
 *   the initiator connects to its private endpoints.
 * The listener uses the exchange's local port (the one the broker and the peer
 * know); the dialer retries refused connects until the listener is up. Through a
 * proxy or tunnel (a non-direct Dialer) the dialling side connects with it, once.
 */
import type { Server } from 'node:net';
import { ErrorCode, NattravError } from '../../errors.js';
import type { TransportAddress } from '../../wire/types.js';
import type { Dialer } from '../dialer.js';
import { sleep } from '../../common/signal.js';
import type { StrategyName } from '../../nat/strategy.js';
import { dialUntilConnected, listenOn, plainAddress } from '../sockets.js';
import { SocketRace } from './race.js';
import type { StrategyContext, StrategyRunner } from './types.js';

/** After a refusal (listener not up yet), dial again this soon, in ms. */
const REDIAL_MS = 100;

/** Which side listens in each listening strategy. */
const LISTENER: Partial<Record<StrategyName, 'initiator' | 'recipient'>> = {
  public: 'recipient',
  reversal: 'initiator',
  lan: 'recipient',
};

function runner(strategy: StrategyName): StrategyRunner {
  return async (ctx) => {
    const race = new SocketRace(ctx);
    if (LISTENER[strategy] === ctx.role) {
      await accept(ctx, race);
    } else {
      const targets = strategy === 'lan' ? ctx.exchange.peerPrivateEndpoints : [ctx.exchange.peerPublicEndpoint];
      await sleep(ctx.exchange.startDelayMs, ctx.signal).catch(() => undefined);
      const proxy = ctx.dialer?.kind === 'direct' ? undefined : ctx.dialer;
      for (const target of targets) {
        void (proxy === undefined ? dialUntilConnected(race, ctx.signal, target, { retryMs: REDIAL_MS, mayDial: () => race.mayOpen() }) : dialThrough(proxy, ctx.signal, race, target));
      }
      if (targets.length === 0) race.fail(new Error('the peer reported no private endpoint'));
    }
    return race.result;
  };
}

/** One connect to `target` through `dialer` (a proxy's CONNECT); its failure fails the race. */
export async function dialThrough(dialer: Dialer, signal: AbortSignal, race: SocketRace, target: TransportAddress): Promise<void> {
  try {
    race.add(await dialer.dial({ host: target.address, port: target.port }, signal), true);
  } catch (err) {
    // Reaching the peer failed, not the broker: another strategy (the relay) may still work.
    race.fail(new NattravError(ErrorCode.ConnectFailed, `cannot connect to the peer through ${dialer.kind}: ${(err as Error).message}`, { cause: err }));
  }
}

async function accept(ctx: StrategyContext, race: SocketRace): Promise<void> {
  const { exchange } = ctx;
  const allowed = new Set([exchange.peerPublicEndpoint.address, ...exchange.peerPrivateEndpoints.map((e) => e.address)]);
  let server: Server;
  try {
    server = await listenOn(exchange.localAddress, exchange.localPort, ctx.signal);
  } catch (err) {
    race.fail(err);
    return;
  }
  server.on('connection', (socket) => {
    if (!allowed.has(plainAddress(socket.remoteAddress))) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    race.add(socket, true);
  });
  race.result.finally(() => server.close()).catch(() => undefined);
}

/** `public`: the recipient listens. */
export const publicStrategy: StrategyRunner = runner('public');
/** `reversal`: the initiator listens; the recipient dials. */
export const reversal: StrategyRunner = runner('reversal');
/** `lan`: the recipient listens; the initiator dials its private endpoints. */
export const lan: StrategyRunner = runner('lan');
