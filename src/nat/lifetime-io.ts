/**
 * Real sockets for {@link measureMappingLifetime}: one dgram socket per mapping,
 * each bound to an ephemeral port of the wildcard address, talking to one server.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { toHostPort, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import { DEFAULT_STUN_PORT, resolveServer } from './discovery.js';
import { measureMappingLifetime, type LifetimeIo, type LifetimeProbeEvent, type LifetimeSocket, type MappingLifetime } from './lifetime.js';
import type { LifetimeSearchOptions } from './lifetime-search.js';

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

/** Options of {@link measureNatLifetime}. */
export interface MeasureNatLifetimeOptions extends LifetimeSearchOptions {
  /** The server (a nattrav broker, or an RFC 5780 STUN server that honours RESPONSE-PORT): `HOST:PORT` (port defaults to 3478) or `{ host, port }`. */
  readonly server: HostPort | string;
  /** Aborts the measurement; every socket is closed. */
  readonly signal?: AbortSignal;
  /** Called as each probe ends. */
  readonly onProbe?: (event: LifetimeProbeEvent) => void;
}

/**
 * Measures how long the NAT between here and `options.server` keeps an idle UDP mapping
 * (nat/lifetime.ts): about 70 s for a 30 s lifetime, up to `maxMs` plus a round for a
 * patient NAT. ERR_PROTOCOL when the server ignores RESPONSE-PORT, ERR_BROKER_UNREACHABLE
 * when it does not answer.
 */
export async function measureNatLifetime(options: MeasureNatLifetimeOptions): Promise<MappingLifetime> {
  if (options === null || typeof options !== 'object') {
    throw new NattravError(ErrorCode.InvalidArgument, 'measureNatLifetime needs an options object with a server');
  }
  const { server, signal, ...rest } = options;
  const resolved = await resolveServer(toHostPort(server, 'server', DEFAULT_STUN_PORT), signal);
  return measureMappingLifetime({ ...rest, io: dgramLifetimeIo(resolved), ...(signal === undefined ? {} : { signal }) });
}
