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

/**
 * After a refusal, how long a NATed recipient accepts on its port before it dials again, in ms:
 * three of the initiator's redial periods ({@link REFUSED_RETRY_MS}), so its next SYN finds the
 * listener even when a busy machine runs its timer late; short, because behind a filtering NAT
 * no SYN reaches a listener and the meeting waits for our next dial.
 */
const REFUSAL_LISTEN_MS = 3 * REFUSED_RETRY_MS;

/**
 * What a side does after its SYN was refused (a RST from the peer's host: the peer's NAT lets
 * our SYNs through, and the peer's socket was not connecting at that moment).
 * - `redial`: connect again after {@link REFUSED_RETRY_MS} (the initiator: it always dials).
 * - `listen`: accept the peer's SYN on our port until the punch ends (a recipient without a NAT:
 *   the initiator's SYNs reach it whatever happens).
 * - `listen-awhile`: accept for {@link REFUSAL_LISTEN_MS}, then dial again, and so on (a
 *   recipient behind a NAT). Two hosts that both answer the other's early SYN with a RST (no
 *   NAT, a full cone, a restricted cone that has sent to the other) otherwise refuse each other
 *   in lockstep: each redials while the other sleeps, until the time limit. The RST as the
 *   first answer removed our own NAT's conntrack entry, so a listener's SYN/ACK is a valid
 *   answer to the new inbound flow. Behind a filtering NAT the listener hears nothing and the
 *   next dial meets the initiator's waiting SYN instead.
 */
export type RefusalMode = 'redial' | 'listen' | 'listen-awhile';

/** What to punch. */
export interface PunchParams {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remote: TransportAddress;
  readonly startDelayMs: number;
  /** Aborts on the caller's abort or the punch time limit. */
  readonly signal: AbortSignal;
  /**
   * What to do after a refusal (RST); see {@link RefusalMode}. We never listen before a refusal:
   * while our own SYN's conntrack entry lives, a listener's SYN/ACK (with a new sequence
   * number) is invalid to a Linux NAT.
   * @default 'redial'
   */
  readonly onRefusal?: RefusalMode;
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
      const mode = params.onRefusal ?? 'redial';
      if (code === 'ECONNREFUSED' && mode !== 'redial') {
        // `listen-awhile` dials again at once when the window passes: the listener was the pause between dials.
        const accepted = await acceptFrom(params, mode === 'listen' ? undefined : REFUSAL_LISTEN_MS);
        if (accepted !== undefined) return accepted;
        continue;
      }
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

/**
 * Listens on our punch port until the expected peer connects (see {@link RefusalMode}), for
 * `windowMs` at most when given; undefined when the window passed or `params.signal` fired first.
 */
async function acceptFrom(params: PunchParams, windowMs: number | undefined): Promise<Socket | undefined> {
  // Retries while the closing exchange still holds the port; other errors name the port.
  const listener = await listenOn(params.localAddress, params.localPort, params.signal);
  let settled = false;
  let window: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<Socket | undefined>((resolve) => {
      const settle = (socket: Socket | undefined): void => {
        settled = true;
        resolve(socket);
      };
      onAbort = (): void => settle(undefined);
      if (params.signal.aborted) onAbort();
      params.signal.addEventListener('abort', onAbort, { once: true });
      if (windowMs !== undefined) window = setTimeout(() => settle(undefined), windowMs);
      listener.on('connection', (socket: Socket) => {
        // Late (the window passed) or not the peer: closed.
        if (settled || plainAddress(socket.remoteAddress) !== params.remote.address || socket.remotePort !== params.remote.port) {
          socket.destroy();
          return;
        }
        socket.setNoDelay(true);
        settle(socket);
      });
    });
  } finally {
    clearTimeout(window);
    if (onAbort !== undefined) params.signal.removeEventListener('abort', onAbort);
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
