/**
 * A WebSocket as a byte stream that stands for a TCP socket, used on both ends of
 * nattrav's WebSocket transport (the broker's listeners, the peer's web dialer).
 * Each write goes out as one binary message; an empty binary message is the end of
 * one direction (a FIN), so a relayed connection half-closes over a WebSocket like
 * over TCP; once both directions ended (and what came was read) the WebSocket is
 * closed. Remote address and port, idle timeout, no-delay and reset go to the TCP (or
 * TLS) socket under it.
 */
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import type { WebSocket } from 'ws';

/** How long a WebSocket close handshake may take before the connection is cut, in ms. */
const CLOSE_TIMEOUT_MS = 2_000;

/** The stream over `ws`; see the module comment. */
class WebSocketDuplex extends Duplex {
  readonly #ws: WebSocket;
  /** The other side's end of stream (an empty message) came. */
  #finReceived = false;
  /** TLS runs over this stream ({@link beforeTls}): the TLS socket closes it, never the stream itself. */
  #underTls = false;

  constructor(ws: WebSocket, allowHalfOpen: boolean) {
    // Our own auto-destroy (#settle) instead of the stream's: TLS over this stream must decide when it closes.
    super({ allowHalfOpen, autoDestroy: false });
    this.#ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        this.destroy(new Error('text message on a nattrav WebSocket'));
      } else if (data.length === 0) {
        this.#finReceived = true;
        this.push(null);
      } else if (!this.push(data)) {
        ws.pause();
      }
    });
    this.once('end', () => this.#settle());
    this.once('finish', () => this.#settle());
    // After a clean end both ways the close handshake is no reason to drop bytes not yet read:
    // the stream closes once they are (#settle). Before that, a closed WebSocket is a reset.
    ws.once('close', () => {
      if (this.#finReceived && this.writableFinished) this.#settle();
      else this.destroy();
    });
    ws.on('error', (err: Error) => this.destroy(err));
  }

  /** TLS will run over this stream: see {@link beforeTls}. */
  holdForTls(): void {
    this.#underTls = true;
  }

  /**
   * Closes the stream once both directions ended and every byte received was read (what
   * `autoDestroy` does for a TCP socket). Not under TLS: Node's TLS over a JS stream
   * destroys itself, unread bytes and all, when the stream under it closes; there the
   * TLS socket closes this stream when it is done with it.
   */
  #settle(): void {
    if (!this.#underTls && this.readableEnded && this.writableFinished) this.destroy();
  }

  override _read(): void {
    this.#ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    // An empty message means end of stream: never send one for an empty write.
    if (chunk.length === 0) {
      callback();
      return;
    }
    this.#ws.send(chunk, { binary: true }, (err) => this.#sent(err, callback));
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#ws.send(Buffer.alloc(0), { binary: true }, (err) => this.#sent(err, callback));
  }

  /** A send finished: a failed one ends the stream (without the stream's own auto-destroy, an error alone would leave it open). */
  #sent(err: Error | null | undefined, callback: (err?: Error | null) => void): void {
    callback(err ?? null);
    if (err instanceof Error) this.destroy(err);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const ws = this.#ws;
    if (ws.readyState === ws.CONNECTING || ws.readyState === ws.OPEN) {
      ws.close(err === null ? 1000 : 1011);
      // A peer that does not answer the close handshake is cut.
      setTimeout(() => ws.terminate(), CLOSE_TIMEOUT_MS).unref();
    }
    callback(err);
  }
}

/**
 * To be called on a socket before TLS runs over it: when it is a WebSocket stream, it then
 * stays open after both directions ended, until the TLS socket over it closes it (the TLS
 * socket is destroyed with whatever it had not yet handed on when the stream under it
 * closes: the last bytes of a half-closed connection). Any other socket is left alone.
 */
export function beforeTls<T extends Socket>(socket: T): T {
  if (socket instanceof WebSocketDuplex) socket.holdForTls();
  return socket;
}

/** True when `socket` is a WebSocket made to look like a TCP socket by {@link webSocketAsSocket} (the broker: a peer that came over the web). */
export function isWebSocketStream(socket: unknown): boolean {
  return socket instanceof WebSocketDuplex;
}

/**
 * `ws` as a stream that answers like the TCP or TLS socket `raw` under it (remote
 * address and port, setTimeout, setNoDelay, setKeepAlive, resetAndDestroy). With
 * `allowHalfOpen` false, the end of the other side's direction ends ours too (like
 * a net.Socket without allowHalfOpen).
 */
export function webSocketAsSocket(ws: WebSocket, raw: Socket, allowHalfOpen: boolean): Socket {
  const stream = new WebSocketDuplex(ws, allowHalfOpen);
  const view = stream as unknown as Duplex & Partial<Socket>;
  Object.defineProperties(view, {
    remoteAddress: { get: () => raw.remoteAddress },
    remotePort: { get: () => raw.remotePort },
    remoteFamily: { get: () => raw.remoteFamily },
    localAddress: { get: () => raw.localAddress },
    localPort: { get: () => raw.localPort },
  });
  // One idle callback at a time (the broker sets it again at every registration refresh).
  let idle: (() => void) | undefined;
  view.setTimeout = (ms: number, onTimeout?: () => void) => {
    raw.setTimeout(ms);
    if (onTimeout !== undefined) {
      if (idle !== undefined) raw.off('timeout', idle);
      idle = onTimeout;
      raw.once('timeout', onTimeout);
    }
    return view as Socket;
  };
  view.setNoDelay = (noDelay?: boolean) => {
    raw.setNoDelay(noDelay);
    return view as Socket;
  };
  view.setKeepAlive = (enable?: boolean, delay?: number) => {
    raw.setKeepAlive(enable, delay);
    return view as Socket;
  };
  view.resetAndDestroy = () => {
    stream.destroy();
    // A TLS socket (wss) has no TCP handle of its own to reset.
    if (!(raw instanceof TLSSocket)) raw.resetAndDestroy();
    else raw.destroy();
    return view as Socket;
  };
  return view as Socket;
}
