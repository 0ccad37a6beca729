/**
 * The datagram channel core on a fake clock and an in-memory network: the handshake
 * opens both ends, only the proven endpoint is heard afterwards (the recipient follows
 * the initiator's newest authenticated packet), replays, reflections and port 0 are
 * dropped, keepalives go out when idle and a silent peer breaks the channel.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DatagramChannel, type DatagramEndpoint, type DatagramTransport, type TransportHandlers } from '../../src/peer/datagram/channel.js';
import { A, attemptId, B, key, Network, openBoth, pair, secret, THIRD } from '../helpers/datagram-net.js';
import { randomBytes } from 'node:crypto';
import { channelKeys, encodeHandshake, PacketType, packetType, REPLAY_WINDOW, ReplayWindow } from '../../src/peer/datagram/packets.js';
import { ErrorCode } from '../../src/errors.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';

test('both ends open on each other and carry datagrams both ways, encrypted', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  // A strict filter on B's side: A's PROBEs are dropped until B has sent toward A (B's own PROBEs open it).
  let bSent = false;
  net.drop = (from, to) => {
    if (key(from) === key(B)) bSent = true;
    return key(to) === key(B) && !bSent;
  };
  await openBoth(a, b, clock);
  assert.equal(a.state, 'open');
  assert.deepEqual(a.remoteAddress(), B);
  assert.deepEqual(b.remoteAddress(), A);
  const got: string[] = [];
  b.on('message', (msg: Buffer, rinfo: DatagramEndpoint) => got.push(`${msg.toString()} from ${key(rinfo)}`));
  a.send('secret words');
  await settle();
  assert.deepEqual(got, [`secret words from ${key(A)}`]);
  const onWire = net.log.filter((p) => packetType(p.data) === PacketType.Data);
  assert.equal(onWire.length, 1);
  assert.ok(!onWire[0]?.data.includes(Buffer.from('secret words')), 'the payload is not on the wire in clear');
  a.close();
  b.close();
});

test('a PROBE under another secret, and our own PROBE reflected back, open nothing', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock, { secretB: new Uint8Array(32).fill(8) });
  const aborted = new AbortController();
  const opening = a.establish(aborted.signal);
  void b.establish(aborted.signal).catch(() => undefined);
  // Reflect A's PROBEs back to it from B's endpoint, too.
  net.drop = (from, to) => {
    if (key(from) === key(A) && key(to) === key(B)) {
      const probe = net.log.at(-1)?.data;
      if (probe !== undefined && packetType(probe) === PacketType.Probe) queueMicrotask(() => net.deliver(B, A, probe));
    }
    return false;
  };
  await clock.advance(2_000);
  assert.equal(a.state, 'punching');
  assert.equal(b.state, 'punching');
  assert.ok(a.stats.dropped.invalid > 0, 'the wrong-key and reflected packets were counted');
  aborted.abort();
  await assert.rejects(opening, (err: Error & { code?: string }) => err.code === ErrorCode.Aborted);
  assert.equal(a.state, 'closed');
});

test('once open, a third host is not heard and a replayed datagram is dropped', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  const got: Buffer[] = [];
  b.on('message', (msg: Buffer) => got.push(msg));
  a.send('once');
  await settle();
  const sealed = net.log.filter((p) => packetType(p.data) === PacketType.Data).at(-1)?.data;
  assert.ok(sealed !== undefined);
  net.deliver(A, B, sealed); // the same packet again, from A's endpoint: a replay
  net.deliver(THIRD, B, sealed); // and from a third host: still a replay (the recipient checks sealed packets from anywhere, for roaming)
  net.deliver(THIRD, B, Buffer.from('hello from elsewhere'));
  await settle();
  assert.deepEqual(got.map(String), ['once']);
  assert.equal(b.stats.dropped.replayed, 2);
  assert.equal(b.stats.dropped.foreign, 1);
  assert.deepEqual(b.remoteAddress(), A);
  assert.equal(b.stats.received, 1);
  a.close();
  b.close();
});

test('an idle channel sends a keepalive each interval, and a silent peer breaks it', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock, { keepaliveMs: 15_000 });
  await openBoth(a, b, clock);
  const keepalivesFromA = (): number => net.log.filter((p) => key(p.from) === key(A) && packetType(p.data) === PacketType.Keepalive).length;
  const before = keepalivesFromA();
  // Both opened at once; openBoth has moved the clock 1 s since.
  await clock.advance(13_000);
  assert.equal(keepalivesFromA(), before, 'none before the interval');
  await clock.advance(1_500);
  assert.equal(keepalivesFromA(), before + 1);
  await clock.advance(15_000);
  assert.equal(keepalivesFromA(), before + 2);
  // B goes silent (its packets are lost): A gives up after 4 intervals of silence.
  net.drop = (from) => key(from) === key(B);
  const errors: Array<Error & { code?: string }> = [];
  a.on('error', (err: Error) => errors.push(err));
  let closed = false;
  a.on('close', () => (closed = true));
  await clock.advance(61_000);
  assert.equal(errors[0]?.code, ErrorCode.ConnectionBroken);
  assert.ok(closed);
  b.close();
});

test('close() tells the peer, which closes too; send after close throws ERR_CLOSED', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  let bClosed = false;
  b.on('close', () => (bClosed = true));
  a.close();
  await settle();
  assert.ok(bClosed);
  assert.throws(() => a.send('late'), (err: Error & { code?: string }) => err.code === ErrorCode.Closed);
  assert.throws(() => b.send(Buffer.alloc(70_000)), (err: Error & { code?: string }) => err.code === ErrorCode.Closed);
});

test('a datagram larger than MAX_DATAGRAM is refused with ERR_INVALID_ARGUMENT', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  assert.throws(() => a.send(Buffer.alloc(70_000)), (err: Error & { code?: string }) => err.code === ErrorCode.InvalidArgument && /at most 65480 bytes/.test(err.message));
  a.close();
  b.close();
});

test('a held channel keeps what arrives until it is handed out, then delivers it in order', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const a = new DatagramChannel({ role: 'initiator', attemptId, secret, transport: net.transport(A), candidates: [B], clock });
  const b = new DatagramChannel({ role: 'recipient', attemptId, secret, transport: net.transport(B), candidates: [A], clock, hold: true });
  await openBoth(a, b, clock);
  const got: string[] = [];
  b.on('message', (msg: Buffer) => got.push(String(msg)));
  for (const text of ['one', 'two', 'three']) a.send(text);
  await settle();
  assert.deepEqual(got, [], 'nothing before the channel is handed out');
  assert.equal(b.stats.received, 3);
  b.describe({ path: 'direct', role: 'recipient', uri: 'nattrav://held', attemptId: '00', publicEndpoint: B, setupMs: 1, attempts: 1 });
  a.send('four');
  await settle();
  assert.deepEqual(got, ['one', 'two', 'three', 'four']);
  a.close();
  b.close();
});

test('the replay window takes reordered counters once and refuses repeats and counters too old', () => {
  const window = new ReplayWindow();
  assert.equal(window.accept(5), true);
  assert.equal(window.accept(3), true, 'reordered within the window');
  assert.equal(window.accept(3), false, 'a repeat');
  assert.equal(window.accept(5), false);
  assert.equal(window.accept(5 + REPLAY_WINDOW), true);
  assert.equal(window.accept(4), false, 'older than the window');
  const slid = new ReplayWindow();
  assert.equal(slid.accept(10), true);
  assert.equal(slid.accept(10 + REPLAY_WINDOW - 1), true);
  assert.equal(slid.accept(10), false, 'a repeat at the far edge of the window');
  assert.equal(slid.accept(11), true, 'inside the window and never seen (its bit was cleared as the window slid)');
  assert.equal(slid.accept(11), false);
  assert.equal(slid.accept(10 + REPLAY_WINDOW), true);
  assert.equal(slid.accept(10), false, 'slid out of the window');
});

test('a valid PROBE from source port 0 is dropped: no ACK goes back, nothing throws', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const inner = net.transport(B);
  const sentTo: DatagramEndpoint[] = [];
  // As dgram does: a send to port 0 throws synchronously.
  const transport: DatagramTransport = {
    ...inner,
    send: (data, to) => {
      sentTo.push(to);
      if (to.port === 0) throw new RangeError('ERR_SOCKET_BAD_PORT');
      inner.send(data, to);
    },
  };
  const b = new DatagramChannel({ role: 'recipient', attemptId, secret, transport, candidates: [A], clock });
  const aborted = new AbortController();
  void b.establish(aborted.signal).catch(() => undefined);
  // The initiator holds the secret, so it can make a valid PROBE; it comes from port 0 (a raw socket).
  const probe = encodeHandshake(channelKeys(secret, attemptId, 'initiator').handshake, { type: PacketType.Probe, role: 'initiator', nonce: randomBytes(16) });
  net.deliver({ ...A, port: 0 }, B, probe);
  await clock.advance(300);
  assert.equal(b.state, 'punching');
  assert.ok(!sentTo.some((to) => to.port === 0), 'nothing was sent to port 0');
  assert.equal(b.stats.dropped.invalid, 1);
  aborted.abort();
});

/**
 * Two peers behind one hairpinning NAT (the `lan` strategy): each side's PROBEs reach the
 * other over the LAN and through the NAT's public address, so each may open on another path.
 */
test('sides that opened on different paths converge: the recipient follows the initiator, datagrams flow both ways', async () => {
  const aPriv: DatagramEndpoint = { address: '10.0.0.1', port: 1000, family: 'IPv4' };
  const aPub: DatagramEndpoint = { address: '198.51.100.1', port: 5001, family: 'IPv4' };
  const bPriv: DatagramEndpoint = { address: '10.0.0.2', port: 2000, family: 'IPv4' };
  const bPub: DatagramEndpoint = { address: '198.51.100.1', port: 5002, family: 'IPv4' };
  // Where a packet a side sends to `to` arrives from: over the LAN from its private endpoint, hairpinned from its public one.
  const seenFrom = (side: 'A' | 'B', to: DatagramEndpoint): DatagramEndpoint => (side === 'A' ? (key(to) === key(bPriv) ? aPriv : aPub) : key(to) === key(aPriv) ? bPriv : bPub);
  const queue: Array<{ side: 'A' | 'B'; to: DatagramEndpoint; data: Buffer }> = [];
  const handlers: Partial<Record<'A' | 'B', TransportHandlers>> = {};
  const transport = (side: 'A' | 'B'): DatagramTransport => ({
    attach: (h) => void (handlers[side] = h),
    send: (data, to) => void queue.push({ side, to, data: Buffer.from(data) }),
    local: () => (side === 'A' ? aPriv : bPriv),
    close: () => undefined,
  });
  const deliver = (pick: (p: (typeof queue)[number]) => boolean): void => {
    const at = queue.findIndex(pick);
    const [p] = queue.splice(at, 1);
    if (p !== undefined) handlers[p.side === 'A' ? 'B' : 'A']?.message(p.data, seenFrom(p.side, p.to));
  };
  const clock = new FakeClock();
  const a = new DatagramChannel({ role: 'initiator', attemptId, secret, transport: transport('A'), candidates: [bPriv, bPub], clock });
  const b = new DatagramChannel({ role: 'recipient', attemptId, secret, transport: transport('B'), candidates: [aPriv, aPub], clock });
  const signal = new AbortController().signal;
  const both = Promise.all([a.establish(signal), b.establish(signal)]);
  // The four PROBEs cross; then A hears B's hairpinned ACK first, B hears A's LAN ACK first.
  for (let i = 0; i < 4; i++) deliver(() => true);
  deliver((p) => p.side === 'B' && key(p.to) === key(aPub));
  deliver((p) => p.side === 'A' && key(p.to) === key(bPriv));
  await both;
  assert.deepEqual([a.remoteAddress(), b.remoteAddress()], [bPub, aPriv], 'each opened on another path');
  while (queue.length > 0) deliver(() => true);
  const got: string[] = [];
  a.on('message', (msg: Buffer) => got.push(`A got ${String(msg)}`));
  b.on('message', (msg: Buffer) => got.push(`B got ${String(msg)}`));
  a.send('hi from A');
  b.send('hi from B');
  while (queue.length > 0) deliver(() => true);
  assert.deepEqual(got.sort(), ['A got hi from B', 'B got hi from A']);
  assert.deepEqual(b.remoteAddress(), aPub, 'the recipient moved to the path the initiator sends on');
  assert.deepEqual(a.remoteAddress(), bPub, 'the initiator kept its path');
  a.close();
  b.close();
});

test('roaming takes only the newest authenticated packet: a replay or an older packet from elsewhere moves nothing; the initiator never roams', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  a.send('one');
  await settle();
  const first = net.log.filter((p) => key(p.from) === key(A) && packetType(p.data) === PacketType.Data).at(-1)?.data;
  assert.ok(first !== undefined);
  a.send('two');
  await settle();
  net.deliver(THIRD, B, first); // a replay of 'one', from elsewhere
  await settle();
  assert.deepEqual(b.remoteAddress(), A);
  assert.equal(b.stats.dropped.replayed, 1);
  // B's sealed packet replayed to A from a third host: the initiator does not follow.
  b.send('to A');
  await settle();
  const fromB = net.log.filter((p) => key(p.from) === key(B) && packetType(p.data) === PacketType.Data).at(-1)?.data;
  assert.ok(fromB !== undefined);
  net.deliver(THIRD, A, fromB);
  await settle();
  assert.deepEqual(a.remoteAddress(), B);
  assert.equal(a.stats.dropped.foreign, 1);
  a.close();
  b.close();
});

test('an initiator keeping alive faster or slower than the recipient keeps an idle channel open on both sides', async () => {
  for (const keepaliveMs of [3_000, 120_000]) {
    const net = new Network();
    const clock = new FakeClock();
    // The recipient is as a server makes it: the default keepalive.
    const a = new DatagramChannel({ role: 'initiator', attemptId, secret, transport: net.transport(A), candidates: [B], clock, keepaliveMs });
    const b = new DatagramChannel({ role: 'recipient', attemptId, secret, transport: net.transport(B), candidates: [A], clock });
    await openBoth(a, b, clock);
    const errors: string[] = [];
    a.on('error', (err: Error) => errors.push(`A: ${err.message}`));
    b.on('error', (err: Error) => errors.push(`B: ${err.message}`));
    await clock.advance(180_000);
    assert.deepEqual(errors, [], `keepaliveMs ${keepaliveMs}`);
    assert.deepEqual([a.state, b.state], ['open', 'open'], `keepaliveMs ${keepaliveMs}`);
    a.close();
    b.close();
  }
});
