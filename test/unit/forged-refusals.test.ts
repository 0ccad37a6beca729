/**
 * Answers to ConnectionRequests cannot be forged, and ConnectionRequests cannot be
 * replayed (issue 8, part 2): the broker takes an acknowledgement or a refusal only
 * under integrity of the recipient's session key and from where the request went;
 * the recipient acts on each SEQUENCE once and answers under its session key.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { answerRegister } from '../helpers/register-only-broker.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { Rendezvous, type ExchangeChannel } from '../../src/broker/rendezvous.js';
import { SessionTable } from '../../src/broker/sessions.js';
import { ErrorCode, type NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { ConnectionRequestBook, REQUEST_WINDOW } from '../../src/peer/connection-requests.js';
import { createServer } from '../../src/peer/server.js';
import { NonceBook } from '../../src/security/proof.js';
import { decodeMessage, encodeMessage, verifyMessageIntegritySha256 } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, addUri, getErrorCode, getU32Attr } from '../../src/wire/nattrav.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { startBroker } from '../helpers/loopback.js';

const at = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
const RECIPIENT = at('198.51.100.20', 3478);
const ATTACKER = at('203.0.113.66', 3478);

/** An initiator's exchange that records the broker's answer. */
class FakeChannel implements ExchangeChannel {
  readonly socket = { remoteAddress: '203.0.113.10', remotePort: 40_000 };
  readonly sent: StunMessage[] = [];
  readonly closed = new Promise<void>(() => undefined);
  send(message: StunMessage): boolean {
    this.sent.push(message);
    return true;
  }
  request(): Promise<StunMessage> {
    return new Promise(() => undefined);
  }
  end(): void {}
  get answer(): StunMessage | undefined {
    return this.sent.find((m) => m.cls !== MessageClass.Request);
  }
}

/** A rendezvous on a fake clock whose one recipient, nattrav://bob, registered over UDP at RECIPIENT with session key `key`. */
async function harness(key: Buffer): Promise<{ rendezvous: Rendezvous; notified: StunMessage[]; clock: FakeClock; initiator: FakeChannel }> {
  const clock = new FakeClock();
  const registry = new MemoryRegistry({ now: () => clock.now(), sweepIntervalMs: 0 });
  await registry.put({ uri: 'nattrav://bob', publicEndpoint: RECIPIENT, privateEndpoints: [], expiresAt: clock.now() + 3_600_000 });
  const notified: StunMessage[] = [];
  const rendezvous = new Rendezvous({
    registry,
    notify: (_registration, message) => notified.push(message),
    reply: (channel, message) => channel.send(message),
    recipientTimeoutMs: 60_000,
    probeTimeoutMs: 3_000,
    maxPendingAttempts: 16,
    emit: () => undefined,
    authorizeRelay: () => true,
    sessionKeyFor: async (uri) => (uri === 'nattrav://bob' ? key : undefined),
    clock,
  });
  const initiator = new FakeChannel();
  const request = StunMessage.request(Method.Connect);
  addUri(request, 'nattrav://bob');
  addAttemptId(request, new Uint8Array(16).fill(7));
  await rendezvous.connect(initiator, request);
  return { rendezvous, notified, clock, initiator };
}

/** `message` as it arrives after encoding (integrity is checked on received bytes). */
function wire(message: StunMessage, key?: Buffer): StunMessage {
  return decodeMessage(encodeMessage(message, { fingerprint: true, ...(key === undefined ? {} : { integritySha256Key: key }) }));
}

describe('the broker takes only the recipient’s own answer', () => {
  const key = randomBytes(32);

  test('forged refusals (no integrity, wrong key, another address, another transport) change nothing; the genuine one fails the attempt at once', async () => {
    const h = await harness(key);
    const request = h.notified[0] as StunMessage;
    const refusal = (reason: string): StunMessage => request.errorResponse(StunErrorCode.TooManyRequests, reason);
    h.rendezvous.acknowledge(wire(refusal('forged: no integrity')), { transport: 'udp', from: RECIPIENT });
    h.rendezvous.acknowledge(wire(refusal('forged: wrong key'), randomBytes(32)), { transport: 'udp', from: RECIPIENT });
    h.rendezvous.acknowledge(wire(refusal('forged: from elsewhere'), key), { transport: 'udp', from: ATTACKER });
    h.rendezvous.acknowledge(wire(refusal('forged: over TCP'), key), { transport: 'tcp', from: RECIPIENT });
    assert.equal(h.initiator.answer, undefined, 'no forged refusal reached the initiator');
    assert.equal(h.rendezvous.pending, 1);
    h.rendezvous.acknowledge(wire(refusal('recipient busy: 16 attempts in progress'), key), { transport: 'udp', from: RECIPIENT });
    const answer = h.initiator.sent[0] as StunMessage;
    assert.equal(getErrorCode(answer)?.code, StunErrorCode.RecipientUnreachable);
    assert.equal(getErrorCode(answer)?.reason, 'recipient nattrav://bob refused the connection request: recipient busy: 16 attempts in progress');
    assert.equal(h.rendezvous.pending, 0);
  });

  test('a forged acknowledgement does not stop the retransmissions; the genuine one does', async () => {
    const h = await harness(key);
    const request = h.notified[0] as StunMessage;
    h.rendezvous.acknowledge(wire(request.successResponse(), randomBytes(32)), { transport: 'udp', from: RECIPIENT });
    h.rendezvous.acknowledge(wire(request.successResponse(), key), { transport: 'udp', from: ATTACKER });
    await h.clock.advance(250);
    assert.equal(h.notified.length, 2, 'retransmitted after the forged acknowledgements');
    h.rendezvous.acknowledge(wire(request.successResponse(), key), { transport: 'udp', from: RECIPIENT });
    await h.clock.advance(2_000);
    assert.equal(h.notified.length, 2, 'no retransmission after the genuine one');
  });

  test('ConnectionRequests carry a rising SEQUENCE', async () => {
    const h = await harness(key);
    const second = StunMessage.request(Method.Connect);
    addUri(second, 'nattrav://bob');
    await h.rendezvous.connect(new FakeChannel(), second);
    const [a, b] = h.notified.map((m) => getU32Attr(m, AttrType.Sequence) as number);
    assert.ok(a !== undefined && b !== undefined && b > a, `sequences ${a}, ${b}`);
  });
});

describe('the recipient acts on each connection request once', () => {
  test('the request book: new, copies, replays, out of order within the window, too old', () => {
    const book = new ConnectionRequestBook();
    const accepted = { accepted: true } as const;
    assert.deepEqual(book.check('a', 10), { kind: 'new' });
    book.record('a', 10, accepted);
    assert.deepEqual(book.check('a', 10), { kind: 'copy', answer: accepted }, 'a retransmission is answered again');
    assert.deepEqual(book.check('b', 10), { kind: 'ignore', why: 'replayed' }, 'a number is used once');
    assert.deepEqual(book.check('a', 11), { kind: 'ignore', why: 'replayed' });
    assert.deepEqual(book.check('c', 9), { kind: 'new' }, 'sent before, arrived later');
    book.record('c', 9, { accepted: false, reason: 'busy' });
    assert.deepEqual(book.check('c', 9), { kind: 'copy', answer: { accepted: false, reason: 'busy' } });
    for (let i = 0; i < REQUEST_WINDOW; i++) book.record(`x${i}`, 100 + i, accepted);
    assert.deepEqual(book.check('a', 10), { kind: 'ignore', why: 'too old' }, 'forgotten requests are not acted on again');
    assert.deepEqual(book.check('d', 50), { kind: 'ignore', why: 'too old' });
    assert.deepEqual(book.check('d', 100 + REQUEST_WINDOW), { kind: 'new' });
  });

  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-forged-'));
  });
  after(async () => {
    await rm(keyDir, { recursive: true, force: true });
  });

  test('a replayed or old ConnectionRequest is not acted on; answers carry integrity under the session key', async () => {
    // A minimal broker on one UDP socket: real registration handling, and requests we send at will.
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const auth = { mode: 'authenticated' as const, nonces: new NonceBook(), sessions: new SessionTable(10) };
    const answers: StunMessage[] = [];
    let recipient: { address: string; port: number } | undefined;
    socket.on('message', (data: Buffer, rinfo) => {
      const message = decodeMessage(data);
      if (message.method === Method.ConnectionRequest && message.cls !== MessageClass.Request) {
        answers.push(message);
        return;
      }
      if (message.method !== Method.Register || message.cls !== MessageClass.Request) return;
      recipient = { address: rinfo.address, port: rinfo.port };
      answerRegister(socket, auth, message, rinfo);
    });
    const server = createServer({ broker: `127.0.0.1:${socket.address().port}`, uri: 'nattrav://ivan', keyDir, exchangeTimeoutMs: 200 });
    try {
      let actedOn = 0;
      server.on('attemptFailed', () => actedOn++); // joining fails here: this broker has no TCP side
      server.listen();
      await once(server, 'listening');
      const key = (await auth.sessions.byUri('nattrav://ivan'))?.key as Buffer;
      const to = recipient as { address: string; port: number };
      const request = (sequence: number): Buffer => {
        const message = StunMessage.request(Method.ConnectionRequest).add(AttrType.AttemptId, randomBytes(16));
        addU32(message, AttrType.Sequence, sequence);
        return encodeMessage(message, { fingerprint: true, integritySha256Key: key });
      };
      const acted = async (count: number): Promise<void> => {
        while (actedOn < count) await once(server, 'attemptFailed');
      };
      const fifth = request(5);
      socket.send(fifth, to.port, to.address);
      await acted(1);
      // The same bytes again (a retransmission, or a replay), and an older number for a new attempt.
      socket.send(fifth, to.port, to.address);
      socket.send(request(5), to.port, to.address);
      // Then a fresh request: by the time it is acted on, the two before it were read and ignored.
      socket.send(request(6), to.port, to.address);
      await acted(2);
      assert.equal(actedOn, 2, 'the copy and the reused number were not acted on');
      while (answers.length < 3) await once(socket, 'message');
      assert.equal(answers.length, 3, 'the first request, its copy and the fresh one were answered; the reused number was not');
      for (const answer of answers) {
        assert.equal(answer.cls, MessageClass.SuccessResponse);
        assert.ok(verifyMessageIntegritySha256(answer, key), 'the answer carries integrity under the session key');
      }
    } finally {
      server.close();
      socket.close();
    }
  });
});

describe('end to end: a forged refusal does not make connect fail', () => {
  test('a refusal from another address is ignored; the recipient’s own refusal fails connect at once with its reason', async () => {
    // Open mode, so a plain UDP socket can be the recipient and see the request's transaction ID.
    const { broker, address } = await startBroker({ recipientTimeoutMs: 60_000, open: true });
    const recipient = createSocket('udp4');
    const attacker = createSocket('udp4');
    try {
      await new Promise<void>((resolve) => recipient.bind(0, '127.0.0.1', resolve));
      await new Promise<void>((resolve) => attacker.bind(0, '127.0.0.1', resolve));
      const port = broker.address().port;
      const register = StunMessage.request(Method.Register);
      addUri(register, 'nattrav://carol');
      const registered = once(recipient, 'message');
      recipient.send(encodeMessage(register), port, '127.0.0.1');
      await registered;
      recipient.on('message', (data: Buffer) => {
        const message = decodeMessage(data);
        if (message.method !== Method.ConnectionRequest || message.cls !== MessageClass.Request) return;
        // The attacker sees the request and answers first, from its own address; then the recipient refuses.
        attacker.send(encodeMessage(message.errorResponse(StunErrorCode.TooManyRequests, 'forged refusal')), port, '127.0.0.1');
        attacker.send(encodeMessage(message.successResponse()), port, '127.0.0.1');
        recipient.send(encodeMessage(message.errorResponse(StunErrorCode.TooManyRequests, 'recipient busy: 3 attempts in progress')), port, '127.0.0.1');
      });
      const started = Date.now();
      await assert.rejects(connect({ broker: address, uri: 'nattrav://carol', tls: false }), (err: NattravError) => {
        assert.equal(err.code, ErrorCode.RecipientUnreachable);
        assert.match(err.message, /refused the connection request: recipient busy: 3 attempts in progress/);
        assert.doesNotMatch(err.message, /forged/);
        return true;
      });
      // At once: no retransmission timer (250 ms) or deadline ran.
      assert.ok(Date.now() - started < 2_000, `failed after ${Date.now() - started} ms`);
      assert.equal(broker.pendingAttempts, 0);
    } finally {
      recipient.close();
      attacker.close();
      await broker.close();
    }
  });
});
