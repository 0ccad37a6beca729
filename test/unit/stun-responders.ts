/**
 * Half a STUN server on loopback, for discovery tests that need one transport
 * to answer and the other to stay silent: a TCP-only server whose UDP port is
 * held by a socket that drops everything (as a firewall would), and a UDP-only
 * server with nothing on its TCP port (refused).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { decodeDatagram, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import type { StunMessage } from '../../src/wire/message.js';
import { addXorAddress } from '../../src/wire/nattrav.js';
import { toTransportAddress } from '../../src/common/endpoint.js';

/** A running half server; `close()` stops it. */
export interface HalfServer {
  readonly port: number;
  close(): Promise<void>;
}

/** The Binding success response for `request` from `address:port`, or undefined for anything else. */
function bindingAnswer(request: StunMessage, address: string, port: number): Buffer | undefined {
  if (request.method !== Method.Binding || request.cls !== MessageClass.Request) return undefined;
  return encodeMessage(addXorAddress(request.successResponse(), AttrType.XorMappedAddress, toTransportAddress(address, port)));
}

function bindUdp(host: string, port: number): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

function closeUdp(socket: UdpSocket): Promise<void> {
  return new Promise((resolve) => socket.close(() => resolve()));
}

/** TCP answers Bindings; UDP on the same port swallows every datagram. */
export async function tcpOnlyStunServer(host = '127.0.0.1'): Promise<HalfServer> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const decoder = new StunStreamDecoder();
    socket.on('data', (chunk) => {
      try {
        for (const message of decoder.push(chunk)) {
          const answer = bindingAnswer(message, socket.remoteAddress ?? host, socket.remotePort ?? 0);
          if (answer !== undefined) socket.write(answer);
        }
      } catch {
        socket.destroy();
      }
    });
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
  const port = (server.address() as { port: number }).port;
  const sink = await bindUdp(host, port);
  return {
    port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await Promise.all([new Promise<void>((resolve) => server.close(() => resolve())), closeUdp(sink)]);
    },
  };
}

/** UDP answers Bindings (no OTHER-ADDRESS); nothing listens on TCP. */
export async function udpOnlyStunServer(host = '127.0.0.1'): Promise<HalfServer> {
  const socket = await bindUdp(host, 0);
  socket.on('message', (data, rinfo) => {
    const message = decodeDatagram(data);
    const answer = message === undefined ? undefined : bindingAnswer(message, rinfo.address, rinfo.port);
    if (answer !== undefined) socket.send(answer, rinfo.port, rinfo.address);
  });
  return { port: socket.address().port, close: () => closeUdp(socket) };
}

/** A loopback port on which nothing listens, UDP or TCP, at the moment of the call. */
export async function closedPort(host = '127.0.0.1'): Promise<number> {
  const udp = await bindUdp(host, 0);
  const port = udp.address().port;
  const tcp = createServer();
  try {
    await new Promise<void>((resolve, reject) => tcp.once('error', reject).listen(port, host, resolve));
  } finally {
    await closeUdp(udp);
    if (tcp.listening) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }
  return port;
}
