/**
 * Socket helpers below both the punch (punch.ts) and the strategies (strategies/):
 * dialing and listening on a fixed local port, and reading one STUN message off
 * the start of a stream. They import nothing of the peer's, so the peer's modules
 * form no import cycle through them.
 */
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { abortError, sleep } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import { StunStreamDecoder } from '../wire/framing.js';
import type { StunMessage } from '../wire/message.js';
import type { TransportAddress } from '../wire/types.js';

/** Where {@link dialUntilConnected} puts its sockets: a strategy's race (strategies/race.ts). */
export interface CandidateSink {
  /** True once the race no longer wants candidates. */
  readonly settled: boolean;
  add(socket: Socket): void;
}

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
  race: CandidateSink,
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

/**
 * Reads exactly one STUN message from the start of the stream and puts any
 * following bytes back, leaving the socket as if nothing had been read after it.
 */
export async function readOneMessage(socket: Socket, signal: AbortSignal): Promise<StunMessage> {
  const message = await new Promise<StunMessage>((resolve, reject) => {
    const decoder = new StunStreamDecoder();
    const cleanup = (): void => {
      socket.off('readable', onReadable);
      socket.off('error', onError);
      socket.off('end', onEnd);
      signal.removeEventListener('abort', onAbort);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        let found: StunMessage | undefined;
        try {
          found = decoder.pushUntilOne(chunk);
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (found !== undefined) {
          cleanup();
          const rest = decoder.takeRemainder();
          if (rest.length > 0) socket.unshift(rest);
          resolve(found);
          return;
        }
      }
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Closed, `the peer connection failed during the handshake: ${err.message}`, { cause: err }));
    };
    const onEnd = (): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Closed, 'the peer closed the connection during the handshake'));
    };
    const onAbort = (): void => {
      cleanup();
      reject(abortError(signal));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    socket.on('readable', onReadable);
    socket.once('error', onError);
    socket.once('end', onEnd);
  });
  // Removing the 'readable' listener resets the stream's flowing state on the
  // next tick; wait for it so the caller's later on('data') starts the flow. An
  // error meanwhile (a reset) stays on the socket (`errored`) for whoever owns it next.
  const swallow = (): void => undefined;
  socket.on('error', swallow);
  try {
    await nextMacrotask();
  } finally {
    socket.off('error', swallow);
  }
  return message;
}
