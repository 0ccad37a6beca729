/**
 * Real sockets for {@link measureMappingLifetime}: one dgram socket per mapping,
 * each bound to an ephemeral port of the wildcard address, talking to one server.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import type { LifetimeIo, LifetimeSocket } from './lifetime.js';

/** Where the measurement's server is. */
export interface LifetimeServer {
  /** An IP address (resolve names first). */
  readonly address: string;
  readonly port: number;
}

/** IPv4-mapped IPv6 addresses compare equal to their IPv4 form. */
const plain = (address: string): string => (address.startsWith('::ffff:') ? address.slice(7) : address);

/** Sockets towards `server`: datagrams from any other source are dropped. */
export function dgramLifetimeIo(server: LifetimeServer): LifetimeIo {
  const family = isIP(server.address) === 6 ? 'udp6' : 'udp4';
  return {
    open: (onMessage) =>
      new Promise<LifetimeSocket>((resolve, reject) => {
        const socket: Socket = createSocket({ type: family });
        socket.once('error', reject);
        socket.bind(0, () => {
          socket.off('error', reject);
          socket.on('error', () => undefined);
          socket.on('message', (data, rinfo) => {
            if (rinfo.port === server.port && plain(rinfo.address) === plain(server.address)) onMessage(data);
          });
          let closed = false;
          resolve({
            send: (data) => {
              if (!closed) socket.send(data, server.port, server.address, () => undefined);
            },
            close: () => {
              if (closed) return;
              closed = true;
              socket.close();
            },
          });
        });
      }),
  };
}
