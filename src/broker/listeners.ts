/**
 * Binds the broker's listening set: UDP and TCP on the primary port and the
 * alternate port of the primary address, and with an alternate address on both
 * ports of it too (RFC 5780 §3). With port 0 it looks for a port P such that P
 * and the alternate port (P + 1 unless configured) are free everywhere needed.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import type { Server } from 'node:net';
import { serverSockets, socketAddress, socketKey, type Rfc5780Layout, type ServerSocketId } from './rfc5780.js';

/** How many candidate ports to try when asked for port 0 before giving up. */
export const SAME_PORT_TRIES = 20;

/** Opens one socket or server; the broker supplies these so it can wire its handlers. */
export interface ListenerFactories {
  udp(host: string, port: number, id: ServerSocketId): Promise<UdpSocket>;
  tcp(host: string, port: number): Promise<Server>;
}

/** Everything the broker listens on. */
export interface BoundListeners {
  /** The layout actually bound (real ports). */
  readonly layout: Rfc5780Layout;
  /** UDP sockets by {@link socketKey}. */
  readonly udp: ReadonlyMap<string, UdpSocket>;
  /** TCP servers, primary first. */
  readonly tcp: readonly Server[];
}

/** What to bind: `alternatePort` undefined means port + 1. */
export interface ListenerRequest {
  readonly host: string;
  readonly port: number;
  readonly alternateHost?: string;
  readonly alternatePort?: number;
}

/** Closes every UDP socket and TCP server in the set. Never rejects. */
export async function closeListeners(udp: Iterable<UdpSocket>, tcp: Iterable<Server>): Promise<void> {
  await Promise.all([
    ...[...udp].map((socket) => new Promise<void>((resolve) => {
      try {
        socket.close(() => resolve());
      } catch {
        resolve();
      }
    })),
    ...[...tcp].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  ]);
}

/** The port to try for the alternate port: the configured one, or port + 1. */
function alternatePortFor(request: ListenerRequest, port: number): number {
  return request.alternatePort ?? port + 1;
}

/**
 * Binds the whole set or nothing: on any failure it closes what it opened and
 * (with port 0) tries another port, up to {@link SAME_PORT_TRIES} times.
 * Rejects with the last bind error.
 */
export async function bindListeners(request: ListenerRequest, open: ListenerFactories): Promise<BoundListeners> {
  let lastError: unknown;
  const tries = request.port === 0 ? SAME_PORT_TRIES : 1;
  for (let i = 0; i < tries; i++) {
    const udp = new Map<string, UdpSocket>();
    const tcp: Server[] = [];
    try {
      const first = await open.tcp(request.host, request.port);
      tcp.push(first);
      const port = (first.address() as { port: number }).port;
      const alternatePort = alternatePortFor(request, port);
      if (alternatePort > 65535 || alternatePort === port) throw Object.assign(new Error('no room for the alternate port'), { code: 'EADDRINUSE' });
      const layout: Rfc5780Layout = { host: request.host, port, alternatePort, ...(request.alternateHost === undefined ? {} : { alternateHost: request.alternateHost }) };
      for (const id of serverSockets(layout)) {
        const { address, port: socketPort } = socketAddress(layout, id);
        if (id.alternateIp || id.alternatePort) tcp.push(await open.tcp(address, socketPort));
        udp.set(socketKey(id), await open.udp(address, socketPort, id));
      }
      return { layout, udp, tcp };
    } catch (err) {
      lastError = err;
      await closeListeners(udp.values(), tcp);
    }
  }
  throw lastError;
}

/**
 * The address to pass to `send` on a udp6 socket for a peer at `address`: such a
 * socket bound to "::" is dual-stack and reaches an IPv4 peer only at its
 * IPv4-mapped address (::ffff:a.b.c.d), which the broker strips when it reads a
 * source (common/endpoint.ts toTransportAddress).
 */
export function udp6Destination(address: string): string {
  return address.includes(':') ? address : `::ffff:${address}`;
}
