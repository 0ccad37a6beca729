/**
 * The packet I/O below the NAT-PMP/PCP client, injected so the client's logic is tested
 * without sockets: a {@link DatagramLink} to the gateway, and one request/response exchange
 * with RFC 6886 §3.1 retransmission (250 ms, doubling) bounded by a named time limit.
 */
import { createSocket } from 'node:dgram';
import { ErrorCode, NattravError } from '../errors.js';
import { abortError } from '../common/signal.js';
import type { Clock } from '../common/clock.js';
import { PCP_MAX_MESSAGE_BYTES } from './pcp.js';
import { PORTMAP_SERVER_PORT } from './natpmp.js';

/** A datagram path to one gateway: only its answers arrive here. */
export interface DatagramLink {
  /** Our own address on the path to the gateway (PCP's client address). */
  readonly localAddress: string;
  /** Sends one datagram to the gateway's port-mapping port. */
  send(bytes: Buffer): void;
  /** Sets the one handler of incoming datagrams (replacing the previous one). */
  onMessage(handler: ((bytes: Buffer) => void) | undefined): void;
  /** Closes the socket; idempotent. */
  close(): void;
}

/** First retransmission interval of a request, doubled after each (RFC 6886 §3.1: 250 ms). */
export const FIRST_RETRANSMIT_MS = 250;

/**
 * Opens a UDP socket connected to `gateway`:5351 (only its datagrams are delivered), and
 * learns our local address on that path. Datagrams longer than PCP's maximum are dropped.
 */
export async function openGatewayLink(gateway: string, port = PORTMAP_SERVER_PORT): Promise<DatagramLink> {
  const socket = createSocket('udp4');
  let handler: ((bytes: Buffer) => void) | undefined;
  let closed = false;
  socket.on('message', (bytes) => {
    if (bytes.length <= PCP_MAX_MESSAGE_BYTES) handler?.(bytes);
  });
  socket.on('error', () => undefined); // ICMP unreachable and the like: the exchange times out.
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.connect(port, gateway, () => {
      socket.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    socket.close();
    throw new NattravError(ErrorCode.PortMapping, `cannot open a UDP socket to the gateway ${gateway}:${port}`, { cause: err, address: gateway, port });
  });
  return {
    localAddress: socket.address().address,
    send: (bytes) => {
      if (!closed) socket.send(bytes, () => undefined);
    },
    onMessage: (next) => {
      handler = next;
    },
    close: () => {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}

/** How one exchange runs. */
export interface ExchangeOptions {
  /** The whole exchange's limit, ms; the error names `doing`. */
  timeoutMs: number;
  /** Said in the timeout error: "timed out after N ms while <doing>". */
  doing: string;
  /** The caller's signal. */
  signal?: AbortSignal | undefined;
}

/**
 * Sends `request` and waits for the datagram `accept` takes: `accept` returns the decoded
 * answer, undefined for a datagram that is not the answer (it is ignored), or throws (the
 * exchange rejects with that error). Retransmits at 250, 750, 1750 ms ... (doubling
 * intervals) until `timeoutMs`.
 */
export function exchange<T>(link: DatagramLink, clock: Clock, request: Buffer, accept: (bytes: Buffer) => T | undefined, options: ExchangeOptions): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (options.signal?.aborted === true) {
      reject(abortError(options.signal));
      return;
    }
    let retransmit: object | undefined;
    let interval = FIRST_RETRANSMIT_MS;
    const finish = (fn: () => void): void => {
      clock.clearTimeout(retransmit);
      clock.clearTimeout(deadline);
      options.signal?.removeEventListener('abort', onAbort);
      link.onMessage(undefined);
      fn();
    };
    const onAbort = (): void => finish(() => reject(abortError(options.signal as AbortSignal)));
    const deadline = clock.setTimeout(
      () => finish(() => reject(new NattravError(ErrorCode.Timeout, `timed out after ${options.timeoutMs} ms while ${options.doing}`))),
      options.timeoutMs,
    );
    const sendNow = (): void => {
      link.send(request);
      retransmit = clock.setTimeout(sendNow, interval);
      interval *= 2;
    };
    link.onMessage((bytes) => {
      let answer: T | undefined;
      try {
        answer = accept(bytes);
      } catch (err) {
        finish(() => reject(err));
        return;
      }
      if (answer !== undefined) finish(() => resolve(answer as T));
    });
    options.signal?.addEventListener('abort', onAbort, { once: true });
    sendNow();
  });
}
