/** Small socket helpers shared by the strategies. */
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { sleep } from '../../common/signal.js';
import { ErrorCode, NattravError } from '../../errors.js';
import type { TransportAddress } from '../../wire/types.js';
import type { SocketRace } from './race.js';

/** How soon to try listening again while the exchange socket still holds the port, in ms. */
const PORT_BUSY_RETRY_MS = 25;

/** Starts a connect to `remote`, optionally from a fixed local address and port (SO_REUSEADDR is set by libuv). */
export function dial(remote: TransportAddress, local?: { address: string; port: number }): Socket {
  const socket = netConnect({
    host: remote.address,
    port: remote.port,
    // A nattrav connection half-closes like TCP: the peer's FIN ends only its direction.
    allowHalfOpen: true,
    ...(local === undefined ? {} : { localAddress: local.address, localPort: local.port }),
  });
  socket.setNoDelay(true);
  return socket;
}

/**
 * Dials `target` into `race`; after a refusal (the far side not ready, or a
 * full cone's host answering RST) dials again after `retryMs`, until the race
 * settles, `signal` aborts, or `mayDial()` says no more.
 */
export async function dialUntilConnected(
  race: SocketRace,
  signal: AbortSignal,
  target: TransportAddress,
  options: { local?: { address: string; port: number }; retryMs: number; mayDial?: () => boolean },
): Promise<void> {
  while (!race.settled && !signal.aborted && (options.mayDial?.() ?? true)) {
    const socket = dial(target, options.local);
    race.add(socket);
    const refused = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(false));
      socket.once('close', () => resolve(true));
    });
    if (!refused) return;
    await sleep(options.retryMs, signal).catch(() => undefined);
  }
}

/** Listens on `address:port`, retrying while the port is still held by our closing exchange. */
export async function listenOn(address: string, port: number, signal: AbortSignal): Promise<Server> {
  for (;;) {
    try {
      return await new Promise<Server>((resolve, reject) => {
        const server = createServer({ allowHalfOpen: true });
        server.once('error', reject);
        server.listen({ host: address, port }, () => {
          server.off('error', reject);
          resolve(server);
        });
      });
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE') {
        throw new NattravError(ErrorCode.ConnectFailed, `cannot listen on ${address}:${port}: ${(err as Error).message}`, { cause: err, address, port });
      }
      await sleep(PORT_BUSY_RETRY_MS, signal);
    }
  }
}

/** An IPv4-mapped IPv6 address as plain IPv4. */
export function plainAddress(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '');
}
