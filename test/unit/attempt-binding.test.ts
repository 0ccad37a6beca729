/**
 * Attempts bound to their peers: a bystander who learned an attempt ID (it travels
 * in the ConnectionRequest and the mapping probes) can neither join the attempt,
 * nor relay it, nor answer or start its Hello; the legitimate connection still succeeds.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import { StunChannel } from '../../src/common/stun-channel.js';
import { connect } from '../../src/peer/connect.js';
import { helloAsInitiator, helloAsRecipient } from '../../src/peer/hello.js';
import { readOneMessage } from '../../src/peer/sockets.js';
import { ATTEMPT_SECRET_LENGTH, newAttemptSecret, openSecret, recipientSealKey, sealSecret } from '../../src/security/attempt-secret.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { RelayHub } from '../../src/broker/relay.js';
import { ATTEMPT_ID_LENGTH, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addRole, getErrorCode } from '../../src/wire/nattrav.js';
import { socketPair, startBroker, startRecipient, until } from '../helpers/loopback.js';

const keyDir = mkdtempSync(join(tmpdir(), 'nattrav-binding-'));

/** Opens a TCP connection to `address` and sends `message`; resolves with the answer. */
async function ask(address: string, message: StunMessage): Promise<StunMessage> {
  const [host, port] = address.split(':');
  const socket = netConnect({ host: host as string, port: Number(port) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const channel = new StunChannel(socket, () => undefined);
  try {
    return await channel.request(message, AbortSignal.timeout(5_000), { fingerprint: true });
  } finally {
    channel.destroy();
  }
}

describe('attempts bound to their peers', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(keyDir, { recursive: true, force: true });
  });

  test('the secret is sealed for its receiver: another key, or another attempt ID, cannot open it', () => {
    const secret = newAttemptSecret();
    assert.equal(secret.length, ATTEMPT_SECRET_LENGTH);
    const id = randomBytes(ATTEMPT_ID_LENGTH);
    const session = randomBytes(32);
    const sealed = sealSecret(recipientSealKey(session, id), secret, id);
    assert.deepEqual(openSecret(recipientSealKey(session, id), sealed, id), secret);
    assert.equal(openSecret(recipientSealKey(randomBytes(32), id), sealed, id), undefined);
    assert.equal(openSecret(recipientSealKey(session, id), sealed, randomBytes(ATTEMPT_ID_LENGTH)), undefined);
    assert.equal(sealed.includes(secret), false);
  });

  test('a bystander who knows the attempt ID cannot join it (no session integrity); the real connection succeeds', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const { server, accepted } = await startRecipient(address, 'nattrav://bound', { keyDir });
    closers.push(() => server.close());
    const hijacks: Array<Promise<StunMessage>> = [];
    broker.on('event', (event: BrokerEvent) => {
      if (event.type !== 'attempt') return;
      // The sniffer races the recipient's Join with the attempt ID it saw.
      const join = StunMessage.request(Method.Join);
      addAttemptId(join, Buffer.from(event.attemptId, 'hex'));
      hijacks.push(ask(address, join));
    });
    const socket = await connect({ broker: address, uri: 'nattrav://bound', knownKeysFile: false });
    closers.push(() => socket.destroy());
    assert.equal(hijacks.length, 1);
    const answer = await (hijacks[0] as Promise<StunMessage>);
    assert.equal(answer.cls, MessageClass.ErrorResponse);
    const error = getErrorCode(answer);
    // Refused outright (403) while the attempt waited, or (404) after the real recipient had joined.
    assert.ok(error?.code === StunErrorCode.Forbidden || error?.code === StunErrorCode.NotFound, `${String(error?.code)} ${String(error?.reason)}`);
    if (error?.code === StunErrorCode.Forbidden) assert.match(String(error.reason), /a Join needs integrity under the session of nattrav:\/\/bound/);
    await until(() => accepted.length === 1, 5_000, 'the recipient to accept');
  });

  test('a Join without integrity is refused while the attempt waits, and leaves it waiting', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    // A recipient that registers but joins only after the sniffer's attempt was refused.
    const { server, accepted } = await startRecipient(address, 'nattrav://waits', { keyDir });
    closers.push(() => server.close());
    let refused: StunMessage | undefined;
    broker.prependListener('event', (event: BrokerEvent) => {
      if (event.type !== 'attempt') return;
      const join = StunMessage.request(Method.Join);
      addAttemptId(join, Buffer.from(event.attemptId, 'hex'));
      void ask(address, join).then((answer) => (refused = answer));
    });
    const socket = await connect({ broker: address, uri: 'nattrav://waits', knownKeysFile: false });
    closers.push(() => socket.destroy());
    // The sniffer's Join reached the attempt first and was refused, and the attempt went on to connect.
    assert.ok(refused !== undefined);
    assert.equal(getErrorCode(refused)?.code, StunErrorCode.Forbidden, String(getErrorCode(refused)?.reason));
    await until(() => accepted.length === 1, 5_000, 'the recipient to accept');
  });

  test('a Relay request needs integrity under the attempt secret, not just the attempt ID', async () => {
    const replies: StunMessage[] = [];
    const hub = new RelayHub({ maxBytes: 0, maxDurationMs: 0 }, (_channel, message) => replies.push(message), () => undefined);
    closers.push(() => hub.close());
    const id = randomBytes(ATTEMPT_ID_LENGTH);
    const secret = newAttemptSecret();
    assert.ok(hub.authorize(Buffer.from(id).toString('hex'), secret));
    const pair = await socketPair();
    closers.push(pair.close);
    const channel = new StunChannel(pair.b, () => undefined);
    for (const key of [undefined, newAttemptSecret()]) {
      const relay = StunMessage.request(Method.Relay);
      addAttemptId(relay, id);
      addRole(relay, 'initiator');
      // As the broker receives it: encoded (with or without integrity under a wrong key), then decoded.
      const received = decodeMessage(encodeMessage(relay, { fingerprint: true, ...(key === undefined ? {} : { integritySha256Key: key }) }));
      hub.join(Buffer.from(id).toString('hex'), 'initiator', channel, received);
      const answer = replies.pop();
      assert.equal(answer?.cls, MessageClass.ErrorResponse);
      assert.equal(getErrorCode(answer as StunMessage)?.code, StunErrorCode.Forbidden);
      assert.match(String(getErrorCode(answer as StunMessage)?.reason), /a Relay needs integrity under the attempt secret/);
    }
    // With the secret the side is taken (no answer until the other side joins).
    const relay = StunMessage.request(Method.Relay);
    addAttemptId(relay, id);
    addRole(relay, 'initiator');
    const pair2 = await socketPair();
    closers.push(pair2.close);
    hub.join(Buffer.from(id).toString('hex'), 'initiator', new StunChannel(pair2.b, () => undefined), decodeMessage(encodeMessage(relay, { fingerprint: true, integritySha256Key: secret })));
    assert.equal(replies.length, 0);
  });

  test('the Hello: a peer without the secret can neither answer the initiator nor be accepted by the recipient', async () => {
    const attempt = { attemptId: randomBytes(ATTEMPT_ID_LENGTH), attemptSecret: newAttemptSecret() };
    const impostor = { attemptId: attempt.attemptId, attemptSecret: newAttemptSecret() };
    // An impostor answers the initiator's Hello with a success response but no proof.
    const first = await socketPair();
    closers.push(first.close);
    first.b.on('error', () => undefined);
    void readOneMessage(first.b, AbortSignal.timeout(5_000)).then((hello) => first.b.write(encodeMessage(hello.successResponse(), { fingerprint: true })));
    await assert.rejects(helloAsInitiator(first.a, attempt, AbortSignal.timeout(5_000), 'tls-answered'), /did not prove the attempt secret: it is not the recipient/);
    // An impostor that knows the attempt ID (but not the secret) starts a Hello at the recipient.
    const second = await socketPair();
    closers.push(second.close);
    second.a.on('error', () => undefined);
    const recipientSide = helloAsRecipient(second.b, attempt, AbortSignal.timeout(5_000), true);
    void helloAsInitiator(second.a, impostor, AbortSignal.timeout(5_000), 'tls-flight').catch(() => undefined);
    await assert.rejects(recipientSide, /did not prove the attempt secret: it is not the initiator/);
    // The two real peers prove it to each other.
    const third = await socketPair();
    closers.push(third.close);
    await Promise.all([helloAsInitiator(third.a, attempt, AbortSignal.timeout(5_000), 'tls-answered'), helloAsRecipient(third.b, attempt, AbortSignal.timeout(5_000), true)]);
  });
});
