/**
 * Datagram channels end to end on loopback: a broker, a recipient whose server takes
 * 'datagram' channels, and an initiator. The public path (loopback has no NAT) and the
 * relay path (every direct strategy claimed failed) each carry 10,000 datagrams each
 * way; a datagram from a third socket to the channel's port is not delivered. A server
 * that cannot take a channel (no listener, a proxy or tunnel to the broker) says why in
 * its answer; connectDatagram refuses a proxy itself.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { connectDatagram } from '../../src/peer/datagram/connect.js';
import { runDatagramAttempt } from '../../src/peer/datagram/attempt.js';
import type { DatagramChannel } from '../../src/peer/datagram/channel.js';
import { strategyMask } from '../../src/nat/strategy.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, addUri } from '../../src/wire/nattrav.js';
import { ErrorCode } from '../../src/errors.js';
import { DIRECT_DIALER } from '../../src/peer/dialer.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

const COUNT = 10_000;
/** Datagrams in flight at most: loopback UDP buffers hold a few hundred small ones. */
const WINDOW = 100;

/** Sends COUNT numbered datagrams from each end to the other, paced by what arrived, and checks every one arrived once. */
async function exchangeBothWays(a: DatagramChannel, b: DatagramChannel): Promise<void> {
  const seen = { a: new Set<number>(), b: new Set<number>() };
  a.on('message', (msg: Buffer) => seen.a.add(msg.readUInt32BE(0)));
  b.on('message', (msg: Buffer) => seen.b.add(msg.readUInt32BE(0)));
  const pump = async (from: DatagramChannel, arrived: Set<number>): Promise<void> => {
    for (let i = 0; i < COUNT; i++) {
      const msg = Buffer.alloc(64);
      msg.writeUInt32BE(i, 0);
      from.send(msg);
      if (i - arrived.size >= WINDOW) await until(() => i - arrived.size < WINDOW / 2, 10_000, `datagram ${i - WINDOW / 2} to arrive`);
    }
  };
  await Promise.all([pump(a, seen.b), pump(b, seen.a)]);
  await until(() => seen.a.size === COUNT && seen.b.size === COUNT, 10_000, 'every datagram');
  assert.equal(seen.a.size, COUNT);
  assert.equal(seen.b.size, COUNT);
}

test('connectDatagram opens a direct channel on loopback; 10,000 datagrams each way; a third socket is not heard', async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const { server } = await startRecipient(address, 'nattrav://dgram-peer', { tls: false });
  t.after(() => server.close());
  const accepted = once(server, 'datagram') as Promise<[DatagramChannel]>;
  const initiator = await connectDatagram({ broker: address, uri: 'nattrav://dgram-peer', timeoutMs: 15_000 });
  t.after(() => initiator.close());
  const [recipient] = await accepted;
  t.after(() => recipient.close());
  assert.equal(initiator.nattrav?.path, 'public');
  assert.equal(recipient.nattrav?.role, 'recipient');
  assert.equal(initiator.remoteAddress().port, recipient.address().port, 'the initiator talks to the recipient UDP socket itself');
  await exchangeBothWays(initiator, recipient);

  // A third socket sends to the recipient's channel port: dropped and counted, not delivered.
  const third = createSocket('udp4');
  t.after(() => third.close());
  const delivered: Buffer[] = [];
  recipient.on('message', (msg: Buffer) => delivered.push(msg));
  for (const payload of [Buffer.from('spoofed'), randomBytes(80)]) third.send(payload, recipient.address().port, '127.0.0.1');
  await until(() => recipient.stats.dropped.foreign >= 2, 5_000, 'the third host datagrams to be dropped');
  assert.equal(delivered.length, 0);

  // Closing one end closes the other.
  const closed = once(recipient, 'close');
  initiator.close();
  await closed;
});

test('the relay path carries the channel through the broker: 10,000 datagrams each way', async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const { server } = await startRecipient(address, 'nattrav://dgram-relay', { tls: false });
  t.after(() => server.close());
  const accepted = once(server, 'datagram') as Promise<[DatagramChannel]>;
  const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
  const request = StunMessage.request(Method.Connect);
  addUri(request, 'nattrav://dgram-relay');
  addAttemptId(request, attemptId);
  addU32(request, AttrType.FailedStrategies, strategyMask(['lan', 'public', 'reversal', 'direct']));
  const [host, port] = address.split(':') as [string, string];
  const initiator = await runDatagramAttempt({
    broker: { host, port: Number(port) }, request, attemptId, role: 'initiator', uri: 'nattrav://dgram-relay', signal: AbortSignal.timeout(15_000),
    exchangeTimeoutMs: 10_000, punchTimeoutMs: 5_000, started: performance.now(), attempt: 1,
  });
  t.after(() => initiator.close());
  const [recipient] = await accepted;
  t.after(() => recipient.close());
  assert.equal(initiator.nattrav?.path, 'relay');
  assert.equal(recipient.nattrav?.path, 'relay');
  assert.equal(initiator.remoteAddress().port, Number(port), 'the relay is the broker');
  await exchangeBothWays(initiator, recipient);
  const closed = once(recipient, 'close');
  initiator.close();
  await closed;
});

test('a server without a datagram listener refuses the request itself: the initiator gets the reason from the broker', async (t) => {
  // The broker's default wait for the recipient (5 s) is kept: the refusal must come as the answer, not as a timeout.
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const { server } = await startRecipient(address, 'nattrav://no-dgram', { tls: false });
  t.after(() => server.close());
  const refused = once(server, 'attemptRefused') as Promise<[{ reason: string }]>;
  let failedLocally = false;
  server.on('attemptFailed', () => (failedLocally = true));
  await assert.rejects(connectDatagram({ broker: address, uri: 'nattrav://no-dgram', timeoutMs: 15_000, maxAttempts: 1 }), (err: Error & { code?: string }) => {
    assert.match(err.message, /refused the connection request: the server has no 'datagram' listener/);
    assert.equal(err.code, ErrorCode.RecipientUnreachable);
    return true;
  });
  const [refusal] = await refused;
  assert.match(refusal.reason, /no 'datagram' listener/);
  assert.equal(failedLocally, false, 'the server never joined the attempt');
});

test('connectDatagram to an unknown URI fails with ERR_UNKNOWN_URI at once', async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  await assert.rejects(connectDatagram({ broker: address, uri: 'nattrav://nobody', timeoutMs: 5_000 }), (err: Error & { code?: string }) => err.code === ErrorCode.UnknownUri);
});

test('a server whose way to the broker is a tunnel refuses datagram channels: UDP would go around it', async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  // Registers over TCP through a non-direct dialer (here a plain connect standing in for a proxy).
  const tunnel = { kind: 'test-tunnel', dial: DIRECT_DIALER.dial };
  const { server } = await startRecipient(address, 'nattrav://tunneled', { tls: false, dialer: tunnel });
  t.after(() => server.close());
  server.on('datagram', (channel: DatagramChannel) => channel.close());
  await assert.rejects(connectDatagram({ broker: address, uri: 'nattrav://tunneled', timeoutMs: 15_000, maxAttempts: 1 }), (err: Error & { code?: string }) => {
    assert.match(err.message, /the server reaches the broker through test-tunnel, and a datagram channel would go around it/);
    return true;
  });
});

test('connectDatagram refuses a proxy or tunnel, and a keepalive longer than the recipient\'s, before touching the network', async () => {
  const refused = (err: Error & { code?: string }, what: RegExp): boolean => err.code === ErrorCode.InvalidArgument && what.test(err.message);
  await assert.rejects(connectDatagram({ broker: '127.0.0.1:9', uri: 'nattrav://x', socks5: '127.0.0.1:1080' }), (err: Error) => refused(err, /cannot go through socks5/));
  await assert.rejects(connectDatagram({ broker: '127.0.0.1:9', uri: 'nattrav://x', dialer: { kind: 'wss', dial: DIRECT_DIALER.dial } }), (err: Error) => refused(err, /cannot go through wss/));
  await assert.rejects(connectDatagram({ broker: '127.0.0.1:9', uri: 'nattrav://x', keepaliveMs: 20_000 }), (err: Error) => refused(err, /keepaliveMs: at most 15000/));
});

test('a UDP socket that cannot be bound fails the attempt with the bind error and leaves no timer running', async () => {
  const timers = (): number => process.getActiveResourcesInfo().filter((what) => what === 'Timeout').length;
  const before = timers();
  const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
  const request = StunMessage.request(Method.Connect);
  addUri(request, 'nattrav://unbound');
  addAttemptId(request, attemptId);
  const failing = (): Promise<never> => Promise.reject(Object.assign(new Error('cannot bind a UDP socket: EMFILE'), { code: ErrorCode.AddressInUse }));
  await assert.rejects(
    runDatagramAttempt({
      broker: { host: '127.0.0.1', port: 9 }, request, attemptId, role: 'initiator', uri: 'nattrav://unbound', signal: new AbortController().signal,
      exchangeTimeoutMs: 12_000, punchTimeoutMs: 5_000, started: performance.now(), attempt: 1, bindSocket: failing,
    }),
    (err: Error & { code?: string }) => err.code === ErrorCode.AddressInUse,
  );
  assert.equal(timers(), before, 'the exchange phase timer was cleared');
});

test('connectDatagram with a list of brokers asks the next while one does not answer, and says which failed', async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const { server } = await startRecipient(address, 'nattrav://dgram-listed', { tls: false });
  t.after(() => server.close());
  server.on('datagram', (channel: DatagramChannel) => channel.on('message', (msg: Buffer) => channel.writable && channel.send(msg)));
  // First in the list: a port where nothing listens (TCP refused).
  const probe = createSocket('udp4');
  await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
  const dead = `127.0.0.1:${probe.address().port}`;
  probe.close();
  const failed: string[] = [];
  const initiator = await connectDatagram({ broker: [dead, address], uri: 'nattrav://dgram-listed', timeoutMs: 15_000, onBrokerFailed: ({ broker: which }) => failed.push(which) });
  t.after(() => initiator.close());
  assert.deepEqual(failed, [dead]);
  const echoed = once(initiator, 'message') as Promise<[Buffer]>;
  initiator.send('through the second broker');
  assert.equal((await echoed)[0].toString(), 'through the second broker');
});
