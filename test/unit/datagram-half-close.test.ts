/**
 * Half-close of a datagram channel on a fake clock: end() tells the peer ('end' after
 * everything sent before it, also when the END overtakes a datagram or is lost), the
 * ended side keeps receiving, and the channel closes once both sides ended.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode } from '../../src/errors.js';
import { END_GRACE_MS } from '../../src/peer/datagram/half-close.js';
import { PacketType, packetType } from '../../src/peer/datagram/packets.js';
import type { DatagramChannel, DatagramEndpoint } from '../../src/peer/datagram/channel.js';
import { A, B, key, Network, openBoth, pair } from '../helpers/datagram-net.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';

/** What `channel` delivers, in order: each datagram's text, and 'END' for its 'end' event. */
function heard(channel: DatagramChannel): string[] {
  const log: string[] = [];
  channel.on('message', (msg: Buffer) => log.push(msg.toString()));
  channel.on('end', () => log.push('END'));
  return log;
}

/** Whether the packet `net` is delivering now (the last one logged) was sent by `from` and is of `type`. */
function sending(net: Network, from: DatagramEndpoint, type: number): boolean {
  const last = net.log.at(-1);
  return last !== undefined && key(last.from) === key(from) && packetType(last.data) === type;
}

test('end() half-closes: the peer gets its datagrams then "end", still answers, and both ending closes the channel', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  const atB = heard(b);
  const atA = heard(a);
  let aClosed = false;
  let bClosed = false;
  a.on('close', () => (aClosed = true));
  b.on('close', () => (bClosed = true));

  a.send('one');
  a.send('two');
  a.end();
  assert.equal(a.writable, false);
  assert.throws(() => a.send('three'), (err: unknown) => (err as { code?: string }).code === ErrorCode.Closed && /ended/.test(String(err)));
  await settle();
  assert.deepEqual(atB, ['one', 'two', 'END']);
  // The ended side still receives: B answers after A's end.
  b.send('reply');
  await settle();
  assert.deepEqual(atA, ['reply']);
  assert.equal(a.state, 'open');
  assert.equal(b.state, 'open');
  b.end();
  await settle();
  assert.deepEqual(atA, ['reply', 'END']);
  assert.equal(a.state, 'closed');
  assert.equal(b.state, 'closed');
  assert.ok(aClosed && bClosed);
});

test('an END that overtakes a datagram waits for it; a datagram lost for good ends the wait after the grace', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  const atB = heard(b);

  // Hold back A's next DATA and deliver it after the END (reordering on the way).
  let held: Buffer | undefined;
  net.drop = (_from, to) => {
    if (held !== undefined || key(to) !== key(B) || !sending(net, A, PacketType.Data)) return false;
    held = net.log.at(-1)?.data;
    return true;
  };
  a.send('late');
  a.end();
  await settle();
  assert.deepEqual(atB, [], 'the END is not reported before the datagram sent ahead of it');
  net.drop = () => false;
  net.deliver(A, B, held as Buffer);
  await settle();
  assert.deepEqual(atB, ['late', 'END']);

  // Another pair: the datagram before the END never arrives; 'end' comes after the grace.
  const net2 = new Network();
  const { a: a2, b: b2 } = pair(net2, clock);
  await openBoth(a2, b2, clock);
  const at2 = heard(b2);
  let dropped = false;
  net2.drop = () => !dropped && sending(net2, A, PacketType.Data) && (dropped = true);
  a2.send('lost');
  a2.end();
  await settle();
  assert.deepEqual(at2, []);
  await clock.advance(END_GRACE_MS - 1);
  assert.deepEqual(at2, []);
  await clock.advance(1);
  assert.deepEqual(at2, ['END']);
});

test('a lost END is sent again: shortly after, and with the keepalives', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock, { keepaliveMs: 5_000 });
  await openBoth(a, b, clock);
  let ends = 0;
  b.on('end', () => ends++);
  // Every END A sends in the first second is lost.
  const t0 = clock.now();
  net.drop = (_from, to) => key(to) === key(B) && sending(net, A, PacketType.End) && clock.now() - t0 < 1_000;
  const endsSent = (): number => net.log.filter((p) => key(p.from) === key(A) && packetType(p.data) === PacketType.End).length;
  a.end();
  await clock.advance(500);
  assert.equal(endsSent(), 3, 'the END and its two quick repeats');
  assert.equal(ends, 0);
  await clock.advance(6_000);
  assert.ok(endsSent() >= 4, 'the END rides the next keepalive');
  assert.equal(ends, 1, "the peer's 'end' fires once");
});

test('end() before the channel opened throws ERR_CLOSED; after close it does nothing', async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  assert.throws(() => a.end(), (err: unknown) => (err as { code?: string }).code === ErrorCode.Closed);
  await openBoth(a, b, clock);
  a.close();
  await settle();
  assert.doesNotThrow(() => a.end());
  assert.equal(b.state, 'closed');
});

test("the last side to end closes at once; the first still gets that side's datagrams held behind the CLOSE, then 'end'", async () => {
  const net = new Network();
  const clock = new FakeClock();
  const { a, b } = pair(net, clock);
  await openBoth(a, b, clock);
  const atA = heard(a);
  // B echoes and ends when A ends, as `listen --udp --echo` does.
  b.on('message', (msg: Buffer) => b.writable && b.send(msg));
  b.on('end', () => b.end());
  let held: Buffer | undefined;
  net.drop = (_from, to) => {
    if (held === undefined && key(to) === key(A) && sending(net, B, PacketType.Data)) {
      held = net.log.at(-1)?.data;
      return true;
    }
    // B's END is lost too: only its CLOSE tells A.
    return sending(net, B, PacketType.End);
  };
  a.send('echo me');
  a.end();
  await settle();
  assert.equal(b.state, 'closed', 'B ended last and closed');
  assert.equal(a.state, 'open', "A waits for B's datagram sent before its CLOSE");
  net.drop = () => false;
  net.deliver(B, A, held as Buffer);
  await settle();
  assert.deepEqual(atA, ['echo me', 'END']);
  assert.equal(a.state, 'closed');
});
