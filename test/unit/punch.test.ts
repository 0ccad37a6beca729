/**
 * The simultaneous open's answer to a refusal (peer/punch.ts), on loopback. Two loopback
 * sockets behave like two hosts whose NATs both pass the other's SYN to the host (no NAT, a
 * full cone, a restricted cone that has sent to the other): a SYN that arrives while the other
 * side is not connecting is answered with a RST. That is what the lab's full-cone x
 * restricted-cone cell of the traversal matrix met: with both sides redialling 100 ms after
 * each RST, each side's SYN found the other between two dials, in lockstep, until the punch
 * time limit, and the attempt fell to the relay.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { simultaneousOpen, type RefusalMode } from '../../src/peer/punch.js';
import type { TransportAddress } from '../../src/wire/types.js';

const HOST = '127.0.0.1';
/** Each punch's own limit: generous on a busy machine; the lockstep lasts until it fires. */
const PUNCH_LIMIT_MS = 4_000;

const at = (port: number): TransportAddress => ({ family: 'IPv4', address: HOST, port });

/** A port nothing uses now (bound by the kernel, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, HOST);
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** One side's punch from `port` to `peer`, started after `startDelayMs`. */
function punch(port: number, peer: number, onRefusal: RefusalMode, startDelayMs: number): Promise<Socket> {
  return simultaneousOpen({ localAddress: HOST, localPort: port, remote: at(peer), startDelayMs, signal: AbortSignal.timeout(PUNCH_LIMIT_MS), onRefusal });
}

/** A line written on `from` arrives on `to`. */
async function carries(from: Socket, to: Socket): Promise<void> {
  const line = `hello from ${from.localPort}\n`;
  const received = once(to, 'data');
  from.write(line);
  const [chunk] = (await received) as [Buffer];
  assert.equal(chunk.toString(), line);
}

describe('simultaneous open after a refusal', () => {
  // Both orders: whichever side dials first is refused by the other's host.
  for (const [first, name] of [['initiator', 'the initiator dials first'], ['recipient', 'the recipient dials first']] as const) {
    test(`two hosts that refuse early SYNs meet: the recipient listens awhile after a RST (${name})`, async () => {
      const [initiatorPort, recipientPort] = [await freePort(), await freePort()];
      // 40 ms apart: out of phase with the 100 ms redial, where two redialling sides never meet.
      const initiator = punch(initiatorPort, recipientPort, 'redial', first === 'initiator' ? 0 : 40);
      const recipient = punch(recipientPort, initiatorPort, 'listen-awhile', first === 'recipient' ? 0 : 40);
      const [i, r] = await Promise.allSettled([initiator, recipient]);
      try {
        assert.equal(i.status, 'fulfilled', `initiator: ${i.status === 'rejected' ? String(i.reason) : ''}`);
        assert.equal(r.status, 'fulfilled', `recipient: ${r.status === 'rejected' ? String(r.reason) : ''}`);
        const [a, b] = [(i as PromiseFulfilledResult<Socket>).value, (r as PromiseFulfilledResult<Socket>).value];
        assert.equal(a.remotePort, recipientPort, 'the initiator is connected to the recipient');
        assert.equal(b.remotePort, initiatorPort, 'the recipient is connected to the initiator');
        await carries(a, b);
        await carries(b, a);
      } finally {
        for (const result of [i, r]) if (result.status === 'fulfilled') result.value.destroy();
      }
    });
  }

  test('listen-awhile dials again when nobody came to the listener (behind a filtering NAT nothing does)', async () => {
    const [ours, target] = [await freePort(), await freePort()];
    const started = performance.now();
    const punching = punch(ours, target, 'listen-awhile', 0);
    // Refused first (nothing at the target), so the punch listens; a server appears meanwhile,
    // which only a dial from our port reaches (it connects nowhere itself).
    await new Promise((resolve) => setTimeout(resolve, 50));
    const server: Server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    server.listen(target, HOST);
    await once(server, 'listening');
    try {
      const socket = await punching;
      const peer = await accepted;
      assert.equal(socket.remotePort, target, 'our dial reached the server');
      assert.equal(peer.remotePort, ours, 'from our punch port');
      assert.ok(performance.now() - started < PUNCH_LIMIT_MS, 'well before the punch limit');
      socket.destroy();
      peer.destroy();
    } finally {
      server.close();
    }
  });

  test('the listener takes only the peer: a connection from another port is closed, the peer is taken', async () => {
    const [ours, peerPort, strangerPort] = [await freePort(), await freePort(), await freePort()];
    const punching = punch(ours, peerPort, 'listen', 0);
    // Refused first (nothing at the peer's port): the punch now listens for good ('listen', as without a NAT).
    await new Promise((resolve) => setTimeout(resolve, 50));
    const stranger = createConnectionFrom(strangerPort, ours);
    const closedByUs = once(stranger, 'close');
    await closedByUs;
    const peer = createConnectionFrom(peerPort, ours);
    const socket = await punching;
    try {
      assert.equal(socket.remotePort, peerPort);
      if (peer.connecting) await once(peer, 'connect');
      await carries(peer, socket);
    } finally {
      socket.destroy();
      peer.destroy();
      stranger.destroy();
    }
  });
});

/** A plain connect from `localPort` to our punch port `port`. */
function createConnectionFrom(localPort: number, port: number): Socket {
  const socket = connect({ host: HOST, port, localAddress: HOST, localPort });
  socket.on('error', () => undefined);
  return socket;
}
