import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as netServer, connect as netConnect, type Socket, type Server } from 'node:net';
import { after, describe, test } from 'node:test';
import { connect } from '../../src/peer/connect.js';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { encodeMessageType, StunMessage } from '../../src/wire/message.js';
import { addXorAddress } from '../../src/wire/nattrav.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

function read(socket: Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= bytes) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

describe('connect() on loopback', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('returns a connected socket to the recipient, with connection info on both sides, data both ways', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const { server, accepted } = await startRecipient(address, 'nattrav://alice');
    closers.push(() => server.close());
    const brokerPort = broker.address().port;

    const socket = await connect({ broker: address, uri: 'nattrav://alice' });
    closers.push(() => socket.destroy());
    await until(() => accepted.length === 1, 5000, 'the recipient to accept');
    const other = accepted[0]!;

    // On loopback the recipient has no NAT: the broker picks `public` (it listens, we connect).
    assert.equal(socket.nattrav.path, 'public');
    assert.equal(other.nattrav.path, 'public');
    assert.equal(socket.nattrav.role, 'initiator');
    assert.equal(other.nattrav.role, 'recipient');
    assert.notEqual(socket.remotePort, brokerPort, 'the socket must not lead to the broker');
    // The two sockets are the two ends of one connection.
    assert.equal(socket.remotePort, other.localPort);
    assert.equal(other.remotePort, socket.localPort);
    assert.deepEqual(socket.nattrav.remote, { family: 'IPv4', address: '127.0.0.1', port: other.localPort });
    assert.ok(socket.nattrav.setupMs >= 0 && other.nattrav.setupMs >= 0);
    assert.equal(socket.nattrav.attemptId, other.nattrav.attemptId);

    // Bytes written right after connect (even in the same chunk as the handshake) all arrive.
    const payload = Buffer.alloc(200_000, 7);
    socket.write(payload);
    other.write('pong');
    const [atRecipient, atInitiator] = await Promise.all([read(other, payload.length), read(socket, 4)]);
    assert.equal(atRecipient.length, payload.length);
    assert.ok(atRecipient.equals(payload));
    assert.equal(atInitiator.toString(), 'pong');
  });

  test('20 concurrent connects to one recipient each get their own connection', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const { server, accepted } = await startRecipient(address, 'nattrav://busy');
    closers.push(() => server.close());
    const sockets = await Promise.all(Array.from({ length: 20 }, () => connect({ broker: address, uri: 'nattrav://busy' })));
    closers.push(() => sockets.forEach((s) => s.destroy()));
    await until(() => accepted.length === 20, 10_000, '20 accepted connections');
    assert.equal(new Set(sockets.map((s) => s.localPort)).size, 20);
    assert.equal(new Set(sockets.map((s) => s.nattrav.attemptId)).size, 20);
    // Each initiator is paired with exactly one recipient socket.
    const recipientByPeerPort = new Map(accepted.map((s) => [s.remotePort, s]));
    for (const [i, socket] of sockets.entries()) {
      const peer = recipientByPeerPort.get(socket.localPort);
      assert.ok(peer, 'every initiator socket has its recipient end');
      socket.write(`n${i}`);
      const got = await read(peer, 1 + String(i).length);
      assert.equal(got.toString(), `n${i}`);
    }
  });

  test('an unregistered URI fails at once with ERR_UNKNOWN_URI naming it', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const started = Date.now();
    await assert.rejects(connect({ broker: address, uri: 'nattrav://nobody' }), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.UnknownUri);
      assert.match(err.message, /unknown URI: nattrav:\/\/nobody/);
      return true;
    });
    assert.ok(Date.now() - started < 2000, 'no retries for an unknown URI');
  });

  test('an unreachable broker fails with ERR_BROKER_UNREACHABLE', async () => {
    const closed = netServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(connect({ broker: `127.0.0.1:${port}`, uri: 'nattrav://x' }), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.BrokerUnreachable);
      assert.match(err.message, /broker unreachable/);
      return true;
    });
  });

  test('an already aborted signal rejects at once and opens nothing', async () => {
    let connections = 0;
    const fake = netServer(() => connections++);
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    closers.push(() => fake.close());
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(
      connect({ broker: `127.0.0.1:${(fake.address() as { port: number }).port}`, uri: 'nattrav://x', signal: controller.signal }),
      (err: NattravError) => err.code === ErrorCode.Aborted,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(connections, 0);
  });

  test('aborting mid-connect stops at once and closes the exchange', async () => {
    // A "broker" that accepts and never answers.
    const held: Socket[] = [];
    const silent = netServer((socket) => {
      held.push(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    closers.push(() => silent.close());
    const controller = new AbortController();
    const pending = connect({ broker: `127.0.0.1:${(silent.address() as { port: number }).port}`, uri: 'nattrav://x', signal: controller.signal });
    await until(() => held.length === 1, 2000, 'the exchange to open');
    const closed = once(held[0]!, 'close');
    const t0 = Date.now();
    controller.abort();
    await assert.rejects(pending, (err: NattravError) => err.code === ErrorCode.Aborted);
    assert.ok(Date.now() - t0 < 200, 'rejects at once');
    await closed; // our side closed the exchange: nothing left open
  });

  test('a timeout names the phase that ran out', async () => {
    const silent = netServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    closers.push(() => silent.close());
    await assert.rejects(
      connect({ broker: `127.0.0.1:${(silent.address() as { port: number }).port}`, uri: 'nattrav://x', exchangeTimeoutMs: 300, maxAttempts: 1 }),
      (err: NattravError) => {
        assert.equal(err.code, ErrorCode.ConnectFailed);
        assert.match(err.message, /timed out after 300 ms while asking the broker for nattrav:\/\/x/);
        return true;
      },
    );
  });

  test('a failed attempt is retried from a different local port; the last failure surfaces', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const { server } = await startRecipient(address, 'nattrav://flaky', { punchTimeoutMs: 1000 });
    closers.push(() => server.close());
    const brokerPort = broker.address().port;
    // A middlebox in front of the broker that points the first `corrupt` answers at a dead port.
    const dead = netServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const deadPort = (dead.address() as { port: number }).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const proxy = corruptingProxy(brokerPort, deadPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    closers.push(() => proxy.server.close());
    const proxyAddress = `127.0.0.1:${(proxy.server.address() as { port: number }).port}`;

    proxy.corrupt = 1;
    const socket = await connect({ broker: proxyAddress, uri: 'nattrav://flaky', punchTimeoutMs: 800 });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.attempts, 2);
    // The first strategy failed and is not tried again: the broker moves on in its plan.
    assert.deepEqual(socket.nattrav.trace.map((t) => [t.strategy, t.outcome]), [['public', 'failed'], ['direct', 'succeeded']]);
    assert.equal(proxy.clientPorts.length, 2);
    assert.notEqual(proxy.clientPorts[0], proxy.clientPorts[1], 'the retry uses a fresh local port');
    assert.equal(socket.localPort, proxy.clientPorts[1]);

    proxy.corrupt = 2;
    proxy.clientPorts.length = 0;
    await assert.rejects(connect({ broker: proxyAddress, uri: 'nattrav://flaky', punchTimeoutMs: 500, maxAttempts: 2 }), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.ConnectFailed);
      assert.match(err.message, /2 attempt\(s\) failed; last: timed out after 500 ms while connecting to nattrav:\/\/flaky by strategy direct/);
      assert.match(err.message, /strategies tried: public \(attempt 1\): failed - .*; direct \(attempt 2\): failed/);
      assert.ok(err.cause instanceof NattravError && err.cause.code === ErrorCode.Timeout);
      return true;
    });
  });
});

/** Forwards TCP to the broker transparently, rewriting PEER-PUBLIC-ENDPOINT in the first `corrupt` Connect answers. */
function corruptingProxy(brokerPort: number, deadPort: number): { server: Server; clientPorts: number[]; corrupt: number } {
  const state = { server: undefined as unknown as Server, clientPorts: [] as number[], corrupt: 0 };
  state.server = netServer((client) => {
    state.clientPorts.push(client.remotePort ?? 0);
    // Transparent: the upstream leaves from the client's own port, so the broker
    // sees the initiator's real endpoint (a second outgoing connection from one port works, see TRAVERSAL-NOTES).
    const upstream = netConnect({ host: '127.0.0.1', port: brokerPort, localAddress: '127.0.0.1', localPort: client.remotePort ?? 0 });
    const decoder = new StunStreamDecoder();
    client.pipe(upstream);
    let mode: 'unknown' | 'stun' | 'raw' = 'unknown';
    client.once('data', (chunk: Buffer) => {
      // Only exchanges (Connect) are rewritten; relay connections pass untouched.
      mode = chunk.length >= 2 && chunk.readUInt16BE(0) === encodeMessageType(Method.Connect, MessageClass.Request) ? 'stun' : 'raw';
    });
    upstream.on('data', (chunk: Buffer) => {
      if (mode !== 'stun') {
        client.write(chunk);
        return;
      }
      for (const message of decoder.push(chunk)) {
        const corrupt = message.method === Method.Connect && message.cls === MessageClass.SuccessResponse && state.corrupt > 0;
        if (corrupt) state.corrupt--;
        // Re-encode every message (FINGERPRINT is re-added by the encoder).
        const out = new StunMessage({ method: message.method, cls: message.cls, transactionId: message.transactionId });
        for (const attr of message.attributes) {
          if (attr.type === AttrType.Fingerprint || (corrupt && attr.type === AttrType.PeerPublicEndpoint)) continue;
          out.add(attr.type, attr.value);
        }
        if (corrupt) addXorAddress(out, AttrType.PeerPublicEndpoint, { family: 'IPv4', address: '127.0.0.1', port: deadPort });
        client.write(encodeMessage(out, { fingerprint: true }));
      }
    });
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return state;
}
