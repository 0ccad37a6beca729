/**
 * The two ways a datagram channel's packets travel (channel.ts {@link DatagramTransport}):
 * a UDP socket (the one whose mapping the broker saw, so punching opens that mapping), or
 * the broker's relay, a TCP connection on which each packet is framed with a 2-byte length.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { ErrorCode, NattravError } from '../../errors.js';
import type { DatagramEndpoint, DatagramTransport, TransportHandlers } from './channel.js';

/** Binds a UDP socket to an ephemeral port of the wildcard address of the family of `host`. */
export function bindUdpSocket(host: string): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
    socket.once('error', (err) => reject(new NattravError(ErrorCode.AddressInUse, `cannot bind a UDP socket: ${err.message}`, { cause: err })));
    socket.bind(0, () => {
      socket.removeAllListeners('error');
      // Until a transport attaches its own handler, an error (none is expected on a bound socket) must not crash the process.
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}

/** A channel over a bound UDP socket. */
export class UdpTransport implements DatagramTransport {
  readonly #socket: UdpSocket;
  #closed = false;
  /** Sends not yet done. */
  #inFlight = 0;

  constructor(socket: UdpSocket) {
    this.#socket = socket;
  }

  attach(handlers: TransportHandlers): void {
    this.#socket.on('message', (data, rinfo) => handlers.message(data, { address: rinfo.address, port: rinfo.port, family: rinfo.family === 'IPv6' ? 'IPv6' : 'IPv4' }));
    this.#socket.on('error', (err) => handlers.error(err));
  }

  /** Sends `data` to `to`; a port outside 1-65535, or a send that throws, drops the packet (as the network would) instead of throwing in the caller's packet handler. */
  send(data: Buffer, to: DatagramEndpoint): void {
    if (this.#closed || !Number.isInteger(to.port) || to.port < 1 || to.port > 65_535) return;
    this.#inFlight++;
    try {
      // A candidate that cannot be reached (no route to a foreign private address) is not the channel failing.
      this.#socket.send(data, to.port, to.address, () => this.#sent());
    } catch {
      // dgram checks the address and port synchronously (ERR_SOCKET_BAD_PORT, ERR_INVALID_ARG_TYPE).
      this.#sent();
    }
  }

  /** One send done: the socket of a closed transport closes after its last one. */
  #sent(): void {
    if (--this.#inFlight === 0 && this.#closed) this.#socket.close();
  }

  local(): DatagramEndpoint {
    const address = this.#socket.address();
    return { address: address.address, port: address.port, family: address.family === 'IPv6' ? 'IPv6' : 'IPv4' };
  }

  /** Closes the socket once the packets already handed to it went out (a send resolves its address first: the CLOSE must not be lost). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#inFlight === 0) this.#socket.close();
  }
}

/** Bytes a relay connection may hold unsent before packets are dropped (as a full UDP send buffer drops them). */
const RELAY_MAX_BUFFERED = 4 * 1024 * 1024;

/** A channel over the broker's relay: one TCP connection spliced to the other peer's. */
export class RelayTransport implements DatagramTransport {
  readonly #socket: Socket;
  readonly #remote: DatagramEndpoint;
  #pending: Buffer = Buffer.alloc(0);
  #closed = false;

  /** `remote`: the broker's relay endpoint (what `remoteAddress()` reports). */
  constructor(socket: Socket, remote: DatagramEndpoint) {
    this.#socket = socket;
    this.#remote = remote;
  }

  attach(handlers: TransportHandlers): void {
    this.#socket.on('data', (chunk: Buffer) => {
      this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
      while (this.#pending.length >= 2) {
        const length = this.#pending.readUInt16BE(0);
        if (this.#pending.length < 2 + length) break;
        handlers.message(this.#pending.subarray(2, 2 + length), this.#remote);
        this.#pending = this.#pending.subarray(2 + length);
      }
    });
    this.#socket.on('error', (err) => handlers.error(err));
    this.#socket.on('close', () => handlers.error(new Error('the relay connection through the broker ended')));
  }

  send(data: Buffer): void {
    if (this.#closed || this.#socket.writableLength > RELAY_MAX_BUFFERED) return;
    const header = Buffer.alloc(2);
    header.writeUInt16BE(data.length, 0);
    this.#socket.write(Buffer.concat([header, data]));
  }

  local(): DatagramEndpoint {
    const address = this.#socket.localAddress ?? '0.0.0.0';
    return { address, port: this.#socket.localPort ?? 0, family: address.includes(':') ? 'IPv6' : 'IPv4' };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.end();
    this.#socket.destroySoon();
  }
}
