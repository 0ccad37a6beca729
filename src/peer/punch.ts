/**
 * TCP simultaneous open through two NATs (see ../shared/TRAVERSAL-NOTES.md):
 * both peers connect() to each other's public endpoint from the local port they
 * used toward the broker, and keep that socket. The first SYN to reach the far
 * NAT is dropped; the other crosses the mapping it opened. We never "SYN, abort,
 * then listen": Linux conntrack marks the listener's SYN/ACK invalid.
 *
 * Then the Hello (hello.ts) proves both ends belong to the same attempt.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { listenOn, plainAddress } from './sockets.js';
import { formatEndpoint } from '../common/endpoint.js';
import { abortError, sleep } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { TransportAddress } from '../wire/types.js';

/** After a RST (the far side's SYN not sent yet, or a NAT answering), try the same port again this soon. */
const REFUSED_RETRY_MS = 100;

/** What to punch. */
export interface PunchParams {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remote: TransportAddress;
  readonly startDelayMs: number;
  /** Aborts on the caller's abort or the punch time limit. */
  readonly signal: AbortSignal;
  /**
   * After a refusal (RST), stop connecting and accept the peer's SYN on our
   * port instead. Only for a recipient without a NAT in front of it: a RST
   * then means the initiator is directly reachable too, and two reachable
   * hosts otherwise refuse each other's SYNs forever. Behind a NAT a listener
   * would fail (its SYN/ACK is invalid to conntrack), so NATed peers keep connecting.
   */
  readonly listenOnRefusal?: boolean;
}

/**
 * Opens the connection by simultaneous open. Retries after a refusal (RST) from
 * the same port until `signal` fires; the kernel itself retransmits lost SYNs.
 */
export async function simultaneousOpen(params: PunchParams): Promise<Socket> {
  await sleep(params.startDelayMs, params.signal);
  let lastError: unknown;
  while (!params.signal.aborted) {
    try {
      return await connectOnce(params);
    } catch (err) {
      lastError = err;
      const code = (err as { code?: string }).code;
      if (params.signal.aborted) break;
      if (code !== 'ECONNREFUSED' && code !== 'ECONNRESET' && code !== 'EADDRINUSE') {
        throw punchError(params, err);
      }
      if (code === 'ECONNREFUSED' && params.listenOnRefusal === true) return acceptFrom(params);
      await sleep(REFUSED_RETRY_MS, params.signal).catch(() => undefined);
    }
  }
  const reason = abortError(params.signal);
  if (lastError !== undefined && reason.code === ErrorCode.Timeout) {
    throw new NattravError(reason.code, `${reason.message} (last error: ${(lastError as { code?: string }).code ?? String(lastError)})`, { cause: lastError, address: params.remote.address, port: params.remote.port });
  }
  throw reason;
}

function connectOnce(params: PunchParams): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({
      host: params.remote.address,
      port: params.remote.port,
      localAddress: params.localAddress,
      localPort: params.localPort,
      allowHalfOpen: true,
    });
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(params.signal));
    };
    params.signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      params.signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
    const onError = (err: Error): void => {
      params.signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
  });
}

/** Listens on our punch port until the expected peer connects (see {@link PunchParams.listenOnRefusal}). */
async function acceptFrom(params: PunchParams): Promise<Socket> {
  // Retries while the closing exchange still holds the port; other errors name the port.
  const listener = await listenOn(params.localAddress, params.localPort, params.signal);
  try {
    return await new Promise<Socket>((resolve, reject) => {
      const onAbort = (): void => reject(abortError(params.signal));
      if (params.signal.aborted) onAbort();
      params.signal.addEventListener('abort', onAbort, { once: true });
      listener.on('connection', (socket: Socket) => {
        if (plainAddress(socket.remoteAddress) !== params.remote.address || socket.remotePort !== params.remote.port) {
          socket.destroy();
          return;
        }
        params.signal.removeEventListener('abort', onAbort);
        socket.setNoDelay(true);
        resolve(socket);
      });
    });
  } finally {
    listener.close();
  }
}

function punchError(params: PunchParams, err: unknown): NattravError {
  const code = (err as { code?: string }).code ?? String(err);
  return new NattravError(
    ErrorCode.ConnectFailed,
    `simultaneous open from port ${params.localPort} to ${formatEndpoint(params.remote)} failed: ${code}`,
    { cause: err, address: params.remote.address, port: params.remote.port },
  );
}
