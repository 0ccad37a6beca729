/** UDP fixtures for broker tests on loopback. */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isStunMessage } from '../../src/wire/codec.js';

/** A UDP socket bound to an ephemeral port of `address` (IPv4 or IPv6). */
export function udpSocket(address: string): Promise<UdpSocket> {
  return new Promise((resolve) => {
    const socket = createSocket(address.includes(':') ? 'udp6' : 'udp4');
    socket.bind(0, address, () => resolve(socket));
  });
}

/** Collects every STUN datagram arriving on `socket`, by transaction ID (hex). */
export function collect(socket: UdpSocket): Map<string, Buffer[]> {
  const byTxid = new Map<string, Buffer[]>();
  socket.on('message', (data: Buffer) => {
    if (!isStunMessage(data)) return;
    const key = data.subarray(8, 20).toString('hex');
    byTxid.set(key, [...(byTxid.get(key) ?? []), data]);
  });
  return byTxid;
}

/** Why IPv6 tests cannot run here (this host cannot bind ::1), or undefined when they can. */
export async function noIPv6Loopback(): Promise<string | undefined> {
  try {
    const socket = await new Promise<UdpSocket>((resolve, reject) => {
      void udpSocket('::1').then(resolve, reject);
      setTimeout(() => reject(new Error('binding ::1 did not finish')), 2_000).unref();
    });
    socket.close();
    return undefined;
  } catch (err) {
    return `this host has no IPv6 loopback address (::1): ${(err as Error).message}`;
  }
}
