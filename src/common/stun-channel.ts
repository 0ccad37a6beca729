/**
 * STUN messages over one TCP connection (RFC 8489 §6.2.2: messages follow each
 * other on the stream, each delimited by its header's length). Requests may go
 * either way; responses are matched to pending requests by transaction ID.
 */
import type { Socket } from 'node:net';
import { ErrorCode, NattravError } from '../errors.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import { MessageClass } from '../wire/constants.js';
import { StunStreamDecoder } from '../wire/framing.js';
import type { StunMessage } from '../wire/message.js';
import { abortError } from './signal.js';

/** Called for every message that is not a response to one of our requests. */
export type MessageHandler = (message: StunMessage) => void;

/** A request waiting for its response (see {@link awaitResponse}). */
export interface Pending {
  resolve(message: StunMessage): void;
  reject(err: Error): void;
}

/** A TCP socket carrying STUN messages. Closing or a malformed byte ends it. */
export class StunChannel {
  readonly socket: Socket;
  readonly #decoder: StunStreamDecoder;
  readonly #pending = new Map<string, Pending>();
  readonly #onMessage: MessageHandler;
  #closedError: NattravError | undefined;
  /** Resolves when the socket has closed, for whatever reason. */
  readonly closed: Promise<void>;

  constructor(socket: Socket, onMessage: MessageHandler, options: { maxMessageLength?: number } = {}) {
    this.socket = socket;
    this.#onMessage = onMessage;
    this.#decoder = new StunStreamDecoder(options.maxMessageLength);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', this.#dataListener);
    socket.on('error', this.#errorListener);
    socket.on('end', this.#endListener);
    socket.on('close', this.#closeListener);
  }

  readonly #dataListener = (chunk: Buffer): void => this.#onData(chunk);
  readonly #errorListener = (err: Error): void => this.#fail(this.#wrapSocketError(err));
  readonly #endListener = (): void => {
    this.#fail(new NattravError(ErrorCode.Closed, 'the other side closed the connection'));
    this.socket.end();
  };
  readonly #closeListener = (): void => this.#fail(new NattravError(ErrorCode.Closed, 'the connection closed'));

  /**
   * Stops treating the socket as STUN: removes our listeners, fails pending
   * requests, and returns bytes received after the last whole message. The
   * caller owns the socket from here on (relay splicing).
   */
  detach(): Buffer {
    this.socket.off('data', this.#dataListener);
    this.socket.off('error', this.#errorListener);
    this.socket.off('end', this.#endListener);
    this.socket.off('close', this.#closeListener);
    this.#fail(new NattravError(ErrorCode.Closed, 'the channel was detached'));
    return this.#decoder.takeRemainder();
  }

  /** Encodes and writes one message. Returns false when the socket is already closed. */
  send(message: StunMessage, options?: EncodeOptions): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false;
    this.socket.write(encodeMessage(message, options));
    return true;
  }

  /** Writes one message already encoded (e.g. relayed by another broker of a cluster). Returns false when the socket is already closed. */
  sendEncoded(bytes: Uint8Array): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false;
    this.socket.write(bytes);
    return true;
  }

  /**
   * Sends a request and resolves with the response carrying its transaction ID
   * (success or error response: the caller inspects the class). Rejects when the
   * signal aborts or the connection ends first.
   */
  request(message: StunMessage, signal: AbortSignal, options?: EncodeOptions): Promise<StunMessage> {
    return awaitResponse(this.#pending, message, signal, this.#closedError, () => this.send(message, options));
  }

  /** Half-closes our side after pending writes (FIN). */
  end(): void {
    this.socket.end();
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  #onData(chunk: Buffer): void {
    let messages: StunMessage[];
    try {
      messages = this.#decoder.push(chunk);
    } catch (err) {
      this.#fail(err instanceof NattravError ? err : new NattravError(ErrorCode.StunMalformed, String(err)));
      this.socket.destroy();
      return;
    }
    for (const message of messages) {
      const isResponse = message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse;
      const key = Buffer.from(message.transactionId).toString('hex');
      const pending = isResponse ? this.#pending.get(key) : undefined;
      if (pending !== undefined) {
        this.#pending.delete(key);
        pending.resolve(message);
      } else {
        try {
          this.#onMessage(message);
        } catch (err) {
          // A handler that throws on bad input must not end the process: close this one connection.
          this.#fail(err instanceof NattravError ? err : new NattravError(ErrorCode.Protocol, String(err), { cause: err }));
          this.socket.destroy();
          return;
        }
      }
    }
  }

  #wrapSocketError(err: Error & { code?: string }): NattravError {
    const where = `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
    return new NattravError(ErrorCode.Closed, `connection to ${where} failed: ${err.code ?? err.message}`, {
      cause: err,
    });
  }

  #fail(err: NattravError): void {
    if (this.#closedError === undefined) this.#closedError = err;
    for (const pending of this.#pending.values()) pending.reject(this.#closedError);
    this.#pending.clear();
  }
}

/**
 * Sends a request with `send` and resolves with the response `pending` is given under its
 * transaction ID (hex); rejects with `closed` when the connection already ended, and when
 * `signal` aborts first (the entry is then forgotten). Whoever reads responses settles the
 * entry; whoever closes rejects what is left.
 */
export function awaitResponse(pending: Map<string, Pending>, message: StunMessage, signal: AbortSignal, closed: Error | undefined, send: () => void): Promise<StunMessage> {
  const key = Buffer.from(message.transactionId).toString('hex');
  return new Promise<StunMessage>((resolve, reject) => {
    if (closed !== undefined) {
      reject(closed);
      return;
    }
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = (): void => {
      pending.delete(key);
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    pending.set(key, {
      resolve: (m) => {
        signal.removeEventListener('abort', onAbort);
        resolve(m);
      },
      reject: (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    });
    send();
  });
}
