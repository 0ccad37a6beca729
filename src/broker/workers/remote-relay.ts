/**
 * A relay connection over TLS (STARTTLS to a broker with a certificate) that landed on
 * another worker than the one that scheduled its relay: the TLS session cannot move
 * between processes, so the worker holding it passes the decrypted bytes over the bus
 * and the relaying worker splices a {@link RemoteSocket} in its place. Flow control
 * crosses too: a write completes when the holder's socket took it, and the holder
 * pauses its socket while the relaying side does not read.
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { TransportAddress } from '../../wire/types.js';
import { asBuffer } from './ipc.js';

/** What a remote socket asks of the worker holding the connection. */
export interface RemoteSocketLink {
  /** Writes `bytes` there; `done` once that socket took them. */
  write(bytes: Buffer, done: () => void): void;
  /** Ends our direction there (FIN, or TLS close_notify). */
  end(): void;
  /** Closes the connection there at once. */
  destroy(): void;
  /** Stops or restarts reading there (flow control). */
  pause(): void;
  resume(): void;
}

/** A connection another worker holds, as the relay sees a socket. */
export class RemoteSocket extends Duplex {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly #link: RemoteSocketLink;
  #paused = false;
  #gone = false;

  constructor(remote: TransportAddress, link: RemoteSocketLink) {
    super({ allowHalfOpen: true });
    this.remoteAddress = remote.address;
    this.remotePort = remote.port;
    this.#link = link;
    this.once('close', () => {
      if (!this.#gone) link.destroy();
    });
  }

  /** This socket as the relay's socket type: it has every member the relay uses (relay.ts splice). */
  asSocket(): Socket {
    return this as unknown as Socket;
  }

  /** No idle timer here: the holder's socket has its own. */
  setTimeout(): this {
    return this;
  }

  /** A RST cannot cross: the holder closes its (TLS) socket, as the relay does for its own TLS sockets. */
  resetAndDestroy(): this {
    this.destroy();
    return this;
  }

  /** Bytes the peer sent, from the holder. */
  received(bytes: Buffer): void {
    if (!this.push(bytes) && !this.#paused) {
      this.#paused = true;
      this.#link.pause();
    }
  }

  /** The peer ended its direction. */
  ended(): void {
    this.push(null);
  }

  /** The holder's connection closed. */
  closedThere(): void {
    this.#gone = true;
    this.destroy();
  }

  override _read(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#link.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#gone) {
      callback();
      return;
    }
    this.#link.write(chunk, () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.#gone) this.#link.end();
    callback();
  }
}

/**
 * The holder's side: passes what `socket` receives to the relaying worker (`send`) and
 * does what it asks. Returns the handler of its requests. `early`: bytes already read.
 */
export function holdRelaySocket(socket: Socket, early: Buffer, send: (op: string, fields?: Record<string, unknown>) => void): (op: string, fields: Record<string, unknown>) => void {
  if (early.length > 0) send('data', { bytes: early });
  socket.allowHalfOpen = true;
  socket.setTimeout(0);
  socket.on('data', (bytes: Buffer) => send('data', { bytes }));
  socket.on('end', () => send('end'));
  socket.on('error', () => undefined);
  socket.once('close', () => send('closed'));
  return (op, fields) => {
    switch (op) {
      case 'write':
        if (socket.destroyed) send('written', { id: fields['id'] });
        else socket.write(fields['bytes'] as Uint8Array, () => send('written', { id: fields['id'] }));
        return;
      case 'fin':
        socket.end();
        return;
      case 'destroy':
        socket.destroy();
        return;
      case 'pause':
        socket.pause();
        return;
      case 'resume':
        socket.resume();
        return;
      default:
    }
  };
}

/**
 * The relaying worker's side: a {@link RemoteSocket} whose requests go to the holder
 * through `send`, and the handler of what the holder sends back.
 */
export class RemoteRelaySide {
  readonly socket: RemoteSocket;
  readonly #writes = new Map<number, () => void>();
  #nextWrite = 1;

  constructor(remote: TransportAddress, send: (op: string, fields?: Record<string, unknown>) => void) {
    this.socket = new RemoteSocket(remote, {
      write: (bytes, done) => {
        const id = this.#nextWrite++;
        this.#writes.set(id, done);
        send('write', { id, bytes });
      },
      end: () => send('fin'),
      destroy: () => send('destroy'),
      pause: () => send('pause'),
      resume: () => send('resume'),
    });
  }

  /** Bytes, an end, the close, or a write confirmation from the holder. */
  receive(op: string, fields: Record<string, unknown>): void {
    switch (op) {
      case 'data':
        this.socket.received(asBuffer(fields['bytes']));
        return;
      case 'end':
        this.socket.ended();
        return;
      case 'closed':
        this.socket.closedThere();
        return;
      case 'written': {
        const id = fields['id'] as number;
        const done = this.#writes.get(id);
        this.#writes.delete(id);
        done?.();
        return;
      }
      default:
    }
  }
}
