/**
 * One key, one live holder (broker/instances.ts, peer/instance.ts): the decision, the broker's
 * check on a fake clock, the peer's answer, and on loopback two servers with one key: the
 * second is refused with ERR_URI_HELD_BY_INSTANCE naming the URI, `takeover` wins and the
 * first is told, and neither a proof by another key nor a forged check moves the URI.
 */
import assert from 'node:assert/strict';
import { once, type EventEmitter } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { admitInstance, decideInstance, InstanceChecks, INSTANCE_CHECK_TIMEOUT_MS, type Holder } from '../../src/broker/instances.js';
import { previousSessionMac } from '../../src/security/previous-session.js';
import { AttrType } from '../../src/wire/constants.js';
import { addInstanceId, addPreviousSession, addTakeover } from '../../src/wire/instance.js';
import { getErrorCode } from '../../src/wire/nattrav.js';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { answerInstanceCheck, newInstanceId } from '../../src/peer/instance.js';
import { createServer, type NattravServer } from '../../src/peer/server.js';
import { Exposer } from '../../src/service/expose.js';
import { decodeMessage, encodeMessage, type EncodeOptions } from '../../src/wire/codec.js';
import { MessageClass, Method } from '../../src/wire/constants.js';
import { addInstanceCheck, getInstanceCheck, getInstanceId } from '../../src/wire/instance.js';
import { StunMessage } from '../../src/wire/message.js';
import { SyncFakeClock } from '../helpers/sync-clock.js';
import { startBroker } from '../helpers/loopback.js';

const ID_A = Uint8Array.from({ length: 16 }, (_, i) => i);
const ID_B = Uint8Array.from({ length: 16 }, (_, i) => 100 + i);

describe('decideInstance', () => {
  test('same instance is a move, another live one is refused unless it takes over, a silent holder is gone', () => {
    assert.equal(decideInstance(ID_A, false, 'no holder'), 'accept');
    assert.equal(decideInstance(undefined, false, ID_B), 'accept', 'a peer without instances replaces the holder, as before');
    assert.equal(decideInstance(ID_A, false, Uint8Array.from(ID_A)), 'same-instance');
    assert.equal(decideInstance(ID_A, false, ID_B), 'refuse');
    assert.equal(decideInstance(ID_A, true, ID_B), 'take-over');
    assert.equal(decideInstance(ID_A, false, 'no answer'), 'holder-gone');
  });
});

describe('InstanceChecks on a fake clock', () => {
  const key = Buffer.alloc(32, 7);
  const holder = {
    registration: { uri: 'nattrav://twin', publicEndpoint: { family: 'IPv4', address: '192.0.2.1', port: 4000 }, privateEndpoints: [], expiresAt: 1e12 },
    session: { id: 'ab', uri: 'nattrav://twin', key, keyFingerprint: 'f', lastSequence: 0, expiresAt: 1e12, endpoint: { address: '192.0.2.1', port: 4000 } },
  } as Holder;

  /** The holder's answer to `check`, under `answerKey`, carrying `instance`. */
  function answer(check: StunMessage, answerKey: Buffer, instance: Uint8Array): StunMessage {
    const response = check.successResponse();
    response.add(0xce02, instance);
    return decodeMessage(encodeMessage(response, { integritySha256Key: answerKey }));
  }

  test('sends under the session key, retransmits, and resolves with the answer\'s INSTANCE-ID; the proof waits meanwhile', async () => {
    const clock = new SyncFakeClock();
    const sent: StunMessage[] = [];
    const checks = new InstanceChecks({ clock, send: (_r, message, k) => sent.push(decodeMessage(encodeMessage(message, { integritySha256Key: k }))) });
    const proof = new Uint8Array(12).fill(9);
    const asked = checks.ask(holder, proof);
    assert.equal(checks.isWaiting(proof), true);
    clock.advance(0);
    assert.equal(sent.length, 1);
    clock.advance(300);
    assert.equal(sent.length, 2, 'retransmitted before the answer');
    const check = sent[0] as StunMessage;
    assert.equal(check.method, Method.ConnectionRequest);
    assert.equal(getInstanceCheck(check), 'alive');
    assert.equal(checks.answered(answer(check, Buffer.alloc(32, 8), ID_B)), true, 'a forged answer is ours to drop');
    assert.equal(checks.answered(answer(check, key, ID_B)), true);
    assert.deepEqual(await asked, ID_B);
    assert.equal(checks.isWaiting(proof), false);
    assert.equal(clock.pending, 0, 'no timer left behind');
  });

  test('a holder that never answers (or only with forgeries) is gone after INSTANCE_CHECK_TIMEOUT_MS', async () => {
    const clock = new SyncFakeClock();
    const sent: StunMessage[] = [];
    const checks = new InstanceChecks({ clock, send: (_r, message) => sent.push(message) });
    const asked = checks.ask(holder, new Uint8Array(12));
    const second = checks.ask(holder, new Uint8Array(12).fill(1));
    clock.advance(INSTANCE_CHECK_TIMEOUT_MS - 1);
    checks.answered(answer(sent[0] as StunMessage, Buffer.alloc(32, 1), ID_A));
    assert.equal(sent.length, 3, 'two proofs at once share one check (three sends)');
    clock.advance(1);
    assert.equal(await asked, undefined);
    assert.equal(await second, undefined);
    assert.equal(checks.pending, 0);
  });
});

describe('admitInstance: who is asked, and what a proof proves', () => {
  const key = Buffer.alloc(32, 7);
  const uri = 'nattrav://laptop';
  const holder = {
    registration: { uri, publicEndpoint: { family: 'IPv4', address: '192.0.2.1', port: 4000 }, privateEndpoints: [], expiresAt: 1e12, keyFingerprint: 'fp' },
    session: { id: '0102030405060708090a0b0c0d0e0f10', uri, key, keyFingerprint: 'fp', lastSequence: 0, expiresAt: 1e12, endpoint: { address: '192.0.2.1', port: 4000 } },
  } as Holder;
  const nonce = Buffer.from('a nonce from the broker');

  /** A proof by instance `id` (with PREVIOUS-SESSION under `previousKey` when given, TAKEOVER when asked). */
  function proof(id: Uint8Array | undefined, previousKey?: Buffer, takeover = false): StunMessage {
    const request = StunMessage.request(Method.Register);
    request.add(AttrType.Nonce, nonce);
    if (id !== undefined) addInstanceId(request, id);
    if (takeover) addTakeover(request);
    if (previousKey !== undefined) addPreviousSession(request, { sessionId: Buffer.from(holder.session.id, 'hex'), mac: previousSessionMac(previousKey, nonce, uri) });
    return request;
  }

  /** Runs admitInstance against `holder`, whose process answers checks with `alive` (undefined: it is dead). */
  async function admit(request: StunMessage, alive: Uint8Array | undefined, fingerprint = 'fp'): Promise<{ result: unknown; sent: number; replies: StunMessage[] }> {
    const clock = new SyncFakeClock();
    let sent = 0;
    const replies: StunMessage[] = [];
    const checks: InstanceChecks = new InstanceChecks({
      clock,
      send: (_r, message, k) => {
        sent++;
        if (alive === undefined) return;
        const response = message.successResponse();
        response.add(0xce02, alive);
        queueMicrotask(() => checks.answered(decodeMessage(encodeMessage(response, { integritySha256Key: k }))));
      },
    });
    const pending = admitInstance(
      { registry: { get: async () => holder.registration }, sessions: { byUri: async () => holder.session }, instances: checks, reply: (m) => replies.push(m) },
      request, uri, fingerprint, getInstanceIdOf(request), request.get(AttrType.Takeover) !== undefined,
    );
    for (let i = 0; i < 20; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      clock.advance(100);
    }
    return { result: await pending, sent, replies };
  }

  test('PREVIOUS-SESSION under the holder\'s key is the same instance: nobody is asked', async () => {
    const { result, sent } = await admit(proof(ID_A, key), ID_B);
    assert.deepEqual(result, {});
    assert.equal(sent, 0);
  });

  test('a forged PREVIOUS-SESSION (another key) proves nothing: the live holder is asked and the proof refused 409', async () => {
    const { result, sent, replies } = await admit(proof(ID_A, Buffer.alloc(32, 9)), ID_B);
    assert.equal(result, undefined);
    assert.ok(sent >= 1);
    assert.equal(getErrorCode(replies[0] as StunMessage)?.code, 409);
    assert.match(getErrorCode(replies[0] as StunMessage)?.reason ?? '', /nattrav:\/\/laptop is held by another live instance/);
  });

  test('TAKEOVER displaces the live holder; a dead holder is displaced without it; an older peer (no INSTANCE-ID) or another key asks nobody', async () => {
    assert.deepEqual((await admit(proof(ID_A, undefined, true), ID_B)).result, { displaced: holder });
    assert.deepEqual((await admit(proof(ID_A), undefined)).result, { displaced: holder });
    const old = await admit(proof(undefined), ID_B);
    assert.deepEqual(old.result, {});
    assert.equal(old.sent, 0);
    const stranger = await admit(proof(ID_A), ID_B, 'another-fp');
    assert.deepEqual(stranger.result, {});
    assert.equal(stranger.sent, 0, 'another key is the registry claim\'s business (403), not a check');
  });
});

function getInstanceIdOf(request: StunMessage): Uint8Array | undefined {
  const v = request.get(AttrType.InstanceId);
  return v === undefined ? undefined : Uint8Array.from(v);
}

describe('the recipient answers checks under its session only', () => {
  const session = { id: Buffer.alloc(8), key: Buffer.alloc(32, 3), sequence: 0 };
  function check(kind: 'alive' | 'takenOver', key: Buffer | undefined): StunMessage {
    const message = StunMessage.request(Method.ConnectionRequest);
    addInstanceCheck(message, kind);
    return decodeMessage(encodeMessage(message, key === undefined ? {} : { integritySha256Key: key }));
  }

  test('answers "alive" with its instance under the key; a forged check (no or another key) is ignored unanswered', () => {
    const id = newInstanceId();
    const answers: StunMessage[] = [];
    const answer = (response: StunMessage, options: EncodeOptions): void => {
      answers.push(decodeMessage(encodeMessage(response, options)));
    };
    assert.equal(answerInstanceCheck(check('alive', session.key), session, id, answer), 'alive');
    assert.equal(answers.length, 1);
    assert.equal((answers[0] as StunMessage).cls, MessageClass.SuccessResponse);
    assert.deepEqual(getInstanceId(answers[0] as StunMessage), Uint8Array.from(id));
    assert.equal(answerInstanceCheck(check('takenOver', undefined), session, id, answer), 'ignored');
    assert.equal(answerInstanceCheck(check('takenOver', Buffer.alloc(32, 4)), session, id, answer), 'ignored');
    assert.equal(answerInstanceCheck(check('takenOver', session.key), undefined, id, answer), 'ignored', 'open mode: nothing proves the broker sent it');
    assert.equal(answers.length, 1);
    assert.equal(answerInstanceCheck(StunMessage.request(Method.ConnectionRequest), session, id, answer), undefined, 'a connection request is not a check');
  });
});

test('createServer refuses a takeover that is not a boolean, naming the option', () => {
  assert.throws(
    () => createServer({ broker: '127.0.0.1:3478', uri: 'nattrav://twin', takeover: 'yes' as unknown as boolean }),
    (err: NattravError) => err.code === ErrorCode.InvalidArgument && /takeover: expected true or false, got "yes"/.test(err.message),
  );
});

describe('two servers with one key, on loopback', () => {
  let work: string;
  const closers: Array<() => unknown> = [];
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'nattrav-instances-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(work, { recursive: true, force: true });
  });

  /** An echo server for `uri` with the key kept in `keyDir`, prefixing what it echoes with `tag`. */
  function server(address: string, uri: string, keyDir: string, tag: string, extra: { takeover?: boolean; once?: boolean; registerTransport?: 'tcp' } = {}): NattravServer {
    const s = createServer({ broker: address, uri, keyDir, tls: false, keepaliveMs: 30_000, ...extra }, (socket) => {
      socket.on('error', () => undefined);
      socket.on('data', (data: Buffer) => socket.end(`${tag}:${data.toString()}`));
    });
    closers.push(() => new Promise<void>((resolve) => s.close(() => resolve())));
    return s;
  }

  /** Starts a server with `keyDir`'s key and `takeover`; resolves once it is registered and `holder` said it was taken over. */
  async function takeOver(address: string, uri: string, keyDir: string, holder: EventEmitter, tag: string): Promise<{ taker: NattravServer; told: NattravError }> {
    const told = once(holder, 'takenOver');
    const taker = server(address, uri, keyDir, tag, { takeover: true });
    taker.listen();
    await once(taker, 'listening');
    const [error] = (await told) as [NattravError];
    return { taker, told: error };
  }

  async function whoAnswers(address: string, uri: string): Promise<string> {
    const socket = await connect({ broker: address, uri, tls: false, timeoutMs: 15_000 });
    socket.end('hi');
    let text = '';
    for await (const chunk of socket) text += (chunk as Buffer).toString();
    return text;
  }

  test('the second is refused naming the URI; with takeover a third wins and the first is told and closes', { timeout: 60_000 }, async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const uri = 'nattrav://twin';
    const keyDir = join(work, 'keys');
    const first = server(address, uri, keyDir, 'first');
    first.listen();
    await once(first, 'listening');

    const second = server(address, uri, keyDir, 'second', {});
    second.listen();
    const [refusal] = (await once(second, 'error')) as [NattravError];
    assert.equal(refusal.code, ErrorCode.UriHeldByInstance, refusal.message);
    assert.match(refusal.message, /nattrav:\/\/twin/);
    assert.equal(await whoAnswers(address, uri), 'first:hi', 'the first keeps the URI');

    // Another key cannot take a plain name over, TAKEOVER or not.
    const stranger = server(address, uri, join(work, 'other-keys'), 'stranger', { takeover: true, once: true });
    stranger.listen();
    const [forbidden] = (await once(stranger, 'error')) as [NattravError];
    assert.equal(forbidden.code, ErrorCode.Forbidden, forbidden.message);

    const { taker: third, told } = await takeOver(address, uri, keyDir, first, 'third');
    assert.equal(told.code, ErrorCode.TakenOver);
    assert.match(told.message, /nattrav:\/\/twin was taken over/);
    await once(first, 'close');
    assert.equal(await whoAnswers(address, uri), 'third:hi');
    assert.equal(third.listening, true, 'the one that took over keeps it');
  });

  test('an exposer taken over says so (takenOver) like a server', { timeout: 60_000 }, async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const uri = 'nattrav://exposed-twin';
    const keyDir = join(work, 'keys-expose');
    const exposer = new Exposer({ broker: address, uri, keyDir, target: '127.0.0.1:9', tls: false });
    closers.push(() => exposer.close());
    await exposer.start();
    const { told } = await takeOver(address, uri, keyDir, exposer, 'taker');
    assert.equal(told.code, ErrorCode.TakenOver);
  });

  test('a holder registered over a TCP control connection is asked down it, and still refuses a second instance', { timeout: 60_000 }, async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const uri = 'nattrav://twin-tcp';
    const keyDir = join(work, 'keys-tcp');
    const first = server(address, uri, keyDir, 'first', { registerTransport: 'tcp' });
    first.listen();
    await once(first, 'listening');
    assert.equal(first.address()?.transport, 'tcp');
    const second = server(address, uri, keyDir, 'second');
    second.listen();
    const [refusal] = (await once(second, 'error')) as [NattravError];
    assert.equal(refusal.code, ErrorCode.UriHeldByInstance, refusal.message);
    assert.equal(await whoAnswers(address, uri), 'first:hi');
  });
});
