/** A hand-driven broker for tests: the real registration handling on one UDP socket, nothing else. */
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import { handleRegister, type RegisterAuth } from '../../src/broker/register.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { encodeMessage } from '../../src/wire/codec.js';
import type { StunMessage } from '../../src/wire/message.js';

/** Answers the Register request `message` from `rinfo` on `socket`, as a broker with `auth` would. */
export function answerRegister(socket: UdpSocket, auth: RegisterAuth, message: StunMessage, rinfo: RemoteInfo): void {
  void handleRegister(
    {
      registry: new MemoryRegistry({ sweepIntervalMs: 0 }),
      maxLifetimeMs: 60_000,
      auth,
      now: Date.now,
      reply: (response, options) => socket.send(encodeMessage(response, { fingerprint: true, ...options }), rinfo.port, rinfo.address),
      onRegistered: () => undefined,
    },
    message,
    { family: 'IPv4', address: rinfo.address, port: rinfo.port },
    'udp',
  );
}
