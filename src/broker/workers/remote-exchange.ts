/**
 * An exchange whose TCP connection another worker of the same broker holds (the
 * recipient's Join landed there, the attempt runs here): the rendezvous uses it like a
 * local StunChannel. What it sends is encoded here and written by the holder; the
 * responses the peer sends on it come back over the bus (worker-router.ts).
 */
import { awaitResponse, type Pending } from '../../common/stun-channel.js';
import { ErrorCode, NattravError } from '../../errors.js';
import { encodeMessage, type EncodeOptions } from '../../wire/codec.js';
import { MessageClass } from '../../wire/constants.js';
import { StunMessage } from '../../wire/message.js';
import type { TransportAddress } from '../../wire/types.js';
import type { ExchangeChannel } from '../exchange-requests.js';

/** What a remote exchange does with its bytes: the holder writes them, ends the connection. */
export interface RemoteExchangeLink {
  write(bytes: Buffer): void;
  end(): void;
}

/** An {@link ExchangeChannel} over the bus to the worker holding the connection. */
export class RemoteExchange implements ExchangeChannel {
  readonly socket: { readonly remoteAddress: string; readonly remotePort: number };
  readonly closed: Promise<void>;
  readonly #link: RemoteExchangeLink;
  readonly #pending = new Map<string, Pending>();
  #isClosed = false;
  #resolveClosed!: () => void;

  constructor(remote: TransportAddress, link: RemoteExchangeLink) {
    this.socket = { remoteAddress: remote.address, remotePort: remote.port };
    this.#link = link;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  send(message: StunMessage, options?: EncodeOptions): boolean {
    if (this.#isClosed) return false;
    this.#link.write(encodeMessage(message, options));
    return true;
  }

  request(message: StunMessage, signal: AbortSignal): Promise<StunMessage> {
    const closed = this.#isClosed ? new NattravError(ErrorCode.Closed, 'the connection closed') : undefined;
    return awaitResponse(this.#pending, message, signal, closed, () => this.send(message));
  }

  end(): void {
    if (!this.#isClosed) this.#link.end();
  }

  /** A response the peer sent on the connection (its transaction ID and class: all the rendezvous reads of it). */
  deliver(transactionId: Uint8Array, cls: number, method: number): void {
    const key = Buffer.from(transactionId).toString('hex');
    const pending = this.#pending.get(key);
    if (pending === undefined) return;
    this.#pending.delete(key);
    const response = new StunMessage({ method, cls: cls === MessageClass.ErrorResponse ? MessageClass.ErrorResponse : MessageClass.SuccessResponse, transactionId });
    pending.resolve(response);
  }

  /** The holder's connection closed (or the holder is gone). */
  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    for (const pending of this.#pending.values()) pending.reject(new NattravError(ErrorCode.Closed, 'the connection closed'));
    this.#pending.clear();
    this.#resolveClosed();
  }
}
