/**
 * The other side of recipient-caps.test.ts, in its own process so that the test
 * process's descriptors are the recipient's alone: a broker, an attacker that
 * floods it with Connect requests for one URI (raw exchanges that never answer the
 * broker's round-trip probe, so every attempt the recipient admits stays in
 * progress), and a legitimate initiator. Driven by IPC messages:
 *   -> { type: 'flood', uri, count, refusals }  <- { type: 'refused', reasons } once `refusals` error answers came
 *   -> { type: 'release' }                     (the attacker hangs up)
 *   -> { type: 'connect', uri }                <- { type: 'connected', path } or { type: 'failed', message }
 */
import { connect as netConnect, type Socket } from 'node:net';
import { createBroker } from '../../src/broker/broker.js';
import { StunChannel } from '../../src/common/stun-channel.js';
import { connect } from '../../src/peer/connect.js';
import { Method, MessageClass } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri, getErrorCode } from '../../src/wire/nattrav.js';

type Command = { type: 'flood'; uri: string; count: number; refusals: number } | { type: 'release' } | { type: 'connect'; uri: string } | { type: 'exit' };

const send = (message: unknown): void => {
  process.send?.(message);
};

// The admitted attempts wait for the probe the attacker never answers: long enough to outlast the test.
const broker = createBroker({ host: '127.0.0.1', port: 0, probeTimeoutMs: 60_000, recipientTimeoutMs: 60_000 });
const { port } = await broker.listen();
const attacker: Socket[] = [];
send({ type: 'listening', port });

process.on('message', (command: Command) => {
  switch (command.type) {
    case 'flood': {
      const reasons: string[] = [];
      for (let i = 0; i < command.count; i++) {
        const socket = netConnect({ host: '127.0.0.1', port });
        attacker.push(socket);
        socket.on('error', () => undefined);
        const channel = new StunChannel(socket, (message) => {
          if (message.cls !== MessageClass.ErrorResponse) return;
          reasons.push(getErrorCode(message)?.reason ?? '');
          if (reasons.length === command.refusals) send({ type: 'refused', reasons });
        });
        const request = StunMessage.request(Method.Connect);
        addUri(request, command.uri);
        socket.once('connect', () => channel.send(request, { fingerprint: true }));
      }
      return;
    }
    case 'release':
      for (const socket of attacker) socket.destroy();
      return;
    case 'connect':
      connect({ broker: `127.0.0.1:${port}`, uri: command.uri, knownKeysFile: false }).then(
        (socket) => {
          send({ type: 'connected', path: socket.nattrav.path });
          socket.destroy();
        },
        (err: Error) => send({ type: 'failed', message: err.message }),
      );
      return;
    case 'exit':
      void broker.close().then(() => process.exit(0));
  }
});
