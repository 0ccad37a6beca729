/** The exposer's connection to its local service, with a deadline and two reasons for a failure. */
import { connect as netConnect, type Socket } from 'node:net';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';

/** A failed connect to the service: `message` for our log, `peerReason` for the peer. */
export class TargetError extends NattravError {
  /**
   * What the forwarder is told. It names no address: the peer learns that the service
   * refused, not where this side's services live.
   */
  readonly peerReason: string;

  constructor(message: string, peerReason: string, options: { cause?: unknown; address: string; port: number }) {
    super(ErrorCode.ServiceRefused, message, options);
    this.name = 'NattravError';
    this.peerReason = peerReason;
  }
}

/**
 * Connects to `target` (allowHalfOpen, so the splice passes FINs on), within `timeoutMs`;
 * rejects with a {@link TargetError} or, when `signal` aborts, destroys the socket and
 * rejects with ERR_ABORTED's reason.
 */
export function connectTarget(target: HostPort, timeoutMs: number, signal: AbortSignal): Promise<Socket> {
  const where = formatEndpoint({ address: target.host, port: target.port });
  return new Promise<Socket>((resolve, reject) => {
    const socket = netConnect({ host: target.host, port: target.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    const cleanup = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('connect', onConnect);
      socket.off('error', onError);
    };
    const fail = (err: Error): void => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      const code = err.code ?? 'ERROR';
      const options = { cause: err, address: target.host, port: target.port };
      if (code === 'ECONNREFUSED') {
        fail(new TargetError(`the service at ${where} refused the connection (ECONNREFUSED): is it running?`, 'the exposed service refused the connection (ECONNREFUSED)', options));
      } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
        fail(new TargetError(`the service host ${target.host} was not found (${code})`, `the exposed service could not be reached (${code})`, options));
      } else {
        fail(new TargetError(`cannot connect to the service at ${where}: ${err.message}`, `the exposed service could not be reached (${code})`, options));
      }
    };
    const onAbort = (): void => fail(signal.reason instanceof Error ? signal.reason : new NattravError(ErrorCode.Aborted, 'the operation was aborted'));
    const timer = setTimeout(() => {
      fail(
        new TargetError(`the service at ${where} did not accept the connection within ${timeoutMs} ms`, `the exposed service did not answer within ${timeoutMs} ms`, {
          address: target.host,
          port: target.port,
        }),
      );
    }, timeoutMs);
    socket.once('connect', onConnect);
    socket.once('error', onError);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}
