/**
 * Request/response over the registration's UDP socket: each request is retransmitted
 * with doubling intervals until its answer arrives (matched by transaction ID) or the
 * caller's signal fires.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import { abortError } from '../common/signal.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import type { StunMessage } from '../wire/message.js';
import { addRequestPadding } from '../wire/request-padding.js';
import type { TransportAddress } from '../wire/types.js';

/** First retransmission of a Register request; doubled each time (RFC 8489 §6.2.1 uses 500 ms). */
export const REGISTER_FIRST_RTO_MS = 250;

/** The requests in flight on one UDP socket. */
export class UdpTransactions {
  readonly #pending = new Map<string, (message: StunMessage) => void>();

  /** Hands an answer to the request it belongs to; false when none waits for it. */
  deliver(message: StunMessage): boolean {
    const waiting = this.#pending.get(Buffer.from(message.transactionId).toString('hex'));
    waiting?.(message);
    return waiting !== undefined;
  }

  /** Sends `request` to `broker` (padded: the broker never answers with more bytes than it got) until answered; rejects when `signal` fires. */
  async request(socket: UdpSocket, broker: TransportAddress, request: StunMessage, signal: AbortSignal, options: EncodeOptions = {}): Promise<StunMessage> {
    addRequestPadding(request);
    const bytes = encodeMessage(request, { fingerprint: true, ...options });
    const key = Buffer.from(request.transactionId).toString('hex');
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<StunMessage>((resolve, reject) => {
        const onAbort = (): void => reject(abortError(signal));
        if (signal.aborted) {
          onAbort();
          return;
        }
        signal.addEventListener('abort', onAbort, { once: true });
        this.#pending.set(key, (message) => {
          signal.removeEventListener('abort', onAbort);
          resolve(message);
        });
        const send = (rto: number): void => {
          socket.send(bytes, broker.port, broker.address, () => undefined);
          timer = setTimeout(() => send(rto * 2), rto);
        };
        send(REGISTER_FIRST_RTO_MS);
      });
    } finally {
      clearTimeout(timer);
      this.#pending.delete(key);
    }
  }
}
