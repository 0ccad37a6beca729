/**
 * End-to-end authentication by default: with no security option at all, connect()
 * returns a TLSSocket whose peer key matches the URI (self-certifying, CA, and plain
 * name through the broker's key, remembered like SSH's known_hosts), and a man in
 * the middle at the broker's position cannot read the application bytes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect as netConnect, createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { TLSSocket } from 'node:tls';
import { performance } from 'node:perf_hooks';
import { strategyMask } from '../../src/nat/strategy.js';
import { runAttempt } from '../../src/peer/attempt.js';
import { connect } from '../../src/peer/connect.js';
import { secure } from '../../src/peer/secure.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, addUri } from '../../src/wire/nattrav.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { newSelfCertifyingIdentity } from '../../src/security/identity.js';
import { expectedKey, readKnownKeys, rememberKey } from '../../src/security/known-keys.js';
import { generateKeyPair, keyFingerprint } from '../../src/security/keys.js';
import type { NattravError } from '../../src/errors.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

const dir = mkdtempSync(join(tmpdir(), 'nattrav-e2e-'));
let n = 0;
const fresh = (): string => join(dir, `d${n++}`);
const FP_A = 'a'.repeat(52);
const FP_B = 'b'.repeat(52);

/** One initiator attempt through `broker` with every direct strategy marked failed, so the broker relays it. */
async function relayedAttempt(broker: { host: string; port: number }, uri: string, tls: boolean, signal: AbortSignal): Promise<NattravSocket> {
  const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
  const request = StunMessage.request(Method.Connect);
  addUri(request, uri);
  addAttemptId(request, attemptId);
  addU32(request, AttrType.FailedStrategies, strategyMask(['lan', 'public', 'direct']));
  return runAttempt({
    broker, request, attemptId, role: 'initiator', tls, uri, signal,
    exchangeTimeoutMs: 5_000, punchTimeoutMs: 3_000, started: performance.now(), attempt: 1, trace: [],
  });
}

/** Reads until `text` has arrived on `socket`. */
async function receive(socket: Socket, text: string): Promise<void> {
  let got = '';
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString();
      if (got.includes(text)) resolve();
    });
    socket.once('error', reject);
  });
}

describe('end-to-end authentication by default', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('which key to expect: pinned wins, the broker\'s is remembered on first use, a changed key is refused unless accepted', () => {
    assert.deepEqual(expectedKey({ uri: 'nattrav://a', pinned: FP_A, fromBroker: FP_B }), { fingerprint: FP_A, remember: true });
    assert.deepEqual(expectedKey({ uri: 'nattrav://a', pinned: FP_A, remembered: FP_A }), { fingerprint: FP_A, remember: false });
    assert.deepEqual(expectedKey({ uri: 'nattrav://a', fromBroker: FP_A }), { fingerprint: FP_A, remember: true });
    assert.deepEqual(expectedKey({ uri: 'nattrav://a', fromBroker: FP_A, remembered: FP_A }), { fingerprint: FP_A, remember: false });
    assert.deepEqual(expectedKey({ uri: 'nattrav://a', remembered: FP_A }), { fingerprint: FP_A, remember: false });
    assert.deepEqual(expectedKey({ uri: 'nattrav://a' }), { fingerprint: undefined, remember: false });
    assert.throws(() => expectedKey({ uri: 'nattrav://a', fromBroker: FP_B, remembered: FP_A, file: '/x/known_keys' }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_KEY_MISMATCH');
      assert.match(err.message, /the key of nattrav:\/\/a changed: the broker now gives b+, but a+ is remembered in \/x\/known_keys/);
      assert.match(err.message, /--accept-new-key/);
      return true;
    });
    assert.deepEqual(expectedKey({ uri: 'nattrav://a', fromBroker: FP_B, remembered: FP_A, acceptChange: true }), { fingerprint: FP_B, remember: true });
  });

  test('known keys: one line per URI, replaced in place, file mode 0600', async () => {
    const file = join(fresh(), 'known_keys');
    assert.equal((await readKnownKeys(file)).size, 0);
    await rememberKey(file, 'nattrav://a', FP_A);
    await rememberKey(file, 'nattrav://b', FP_B);
    await rememberKey(file, 'nattrav://a', FP_B);
    assert.deepEqual([...(await readKnownKeys(file))], [['nattrav://a', FP_B], ['nattrav://b', FP_B]]);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, 'utf8'), /^# nattrav known keys/);
  });

  test('self-certifying URI: no option at all gives a TLSSocket whose peer key is the one the URI names', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const identity = await newSelfCertifyingIdentity({ dir: fresh() });
    const { server, accepted } = await startRecipient(address, identity.uri, { identity });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: identity.uri, knownKeysFile: join(fresh(), 'known_keys') });
    closers.push(() => socket.destroy());
    assert.ok(socket instanceof TLSSocket);
    assert.equal(socket.nattrav.tls, true);
    assert.equal(socket.nattrav.peerVouchedBy, 'self-certifying');
    assert.equal(`nattrav://k-${String(socket.nattrav.peerKeyFingerprint)}`, identity.uri);
    await until(() => accepted.length === 1, 5_000, 'the recipient to accept');
    const theirs = accepted[0] as NattravSocket;
    assert.ok(theirs instanceof TLSSocket);
    // The recipient learns who connected: the initiator's throwaway self-certifying identity.
    assert.match(String(theirs.nattrav.peerUri), /^nattrav:\/\/k-[a-z2-7]{52}$/);
    assert.equal(theirs.nattrav.peerUri, `nattrav://k-${String(theirs.nattrav.peerKeyFingerprint)}`);
  });

  test('CA-issued name: the certificate must come from the trusted CA; a pinned key must match all the same', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const ca = await createCa({ name: 'e2e CA' });
    const issued = await issueCertificate({ ca, uri: 'nattrav://ca-named' });
    const { server } = await startRecipient(address, 'nattrav://ca-named', { identity: { uri: 'nattrav://ca-named', keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] } });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: 'nattrav://ca-named', tls: { ca: [ca.certPem] }, knownKeysFile: false });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.peerVouchedBy, 'ca');
    // A pin holds even when the CA vouches: its own key connects, another is refused.
    const pinnedRight = await connect({ broker: address, uri: 'nattrav://ca-named', tls: { ca: [ca.certPem] }, knownKeysFile: false, expectKey: String(socket.nattrav.peerKeyFingerprint) });
    pinnedRight.destroy();
    const other = keyFingerprint(generateKeyPair().spki);
    await assert.rejects(connect({ broker: address, uri: 'nattrav://ca-named', tls: { ca: [ca.certPem] }, knownKeysFile: false, expectKey: other }), (err: NattravError) => {
      assert.equal(err.code, 'ERR_KEY_MISMATCH');
      assert.match(err.message, /not the pinned .*a trusted CA issued its certificate, but a pin must match/);
      return true;
    });
  });

  test('expectKey pins the key: the right one connects, a wrong one fails with ERR_KEY_MISMATCH', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const keyDir = fresh();
    const { server } = await startRecipient(address, 'nattrav://pinned', { keyDir });
    closers.push(() => server.close());
    const key = server.address()?.keyFingerprint as string;
    assert.match(key, /^[a-z2-7]{52}$/);
    const socket = await connect({ broker: address, uri: 'nattrav://pinned', expectKey: key, knownKeysFile: false });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.peerKeyFingerprint, key);
    await assert.rejects(connect({ broker: address, uri: 'nattrav://pinned', expectKey: FP_A, knownKeysFile: false }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_KEY_MISMATCH');
      assert.match(err.message, new RegExp(`the key of nattrav://pinned is ${key}, not the expected ${FP_A}`));
      return true;
    });
    await assert.rejects(connect({ broker: address, uri: 'nattrav://pinned', expectKey: 'not-a-key' }), /expectKey: expected a key fingerprint/);
    await assert.rejects(connect({ broker: address, uri: 'nattrav://pinned', expectKey: key, tls: false }), /expectKey needs TLS/);
  });

  test('plain name, no option: the broker\'s key is remembered; a different key later is refused unless accepted', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const knownKeysFile = join(fresh(), 'known_keys');
    const first = await startRecipient(address, 'nattrav://plain-name', { keyDir: fresh() });
    closers.push(() => first.server.close());
    const key1 = first.server.address()?.keyFingerprint as string;
    const socket = await connect({ broker: address, uri: 'nattrav://plain-name', knownKeysFile });
    socket.destroy();
    assert.equal(socket.nattrav.peerVouchedBy, 'key');
    assert.equal(socket.nattrav.peerKeyFingerprint, key1);
    assert.equal((await readKnownKeys(knownKeysFile)).get('nattrav://plain-name'), key1);
    // The name changes hands: the first holder withdraws, another key registers it.
    await new Promise<void>((resolve) => first.server.close(() => resolve()));
    const second = await startRecipient(address, 'nattrav://plain-name', { keyDir: fresh() });
    closers.push(() => second.server.close());
    const key2 = second.server.address()?.keyFingerprint as string;
    assert.notEqual(key2, key1);
    await assert.rejects(connect({ broker: address, uri: 'nattrav://plain-name', knownKeysFile }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_KEY_MISMATCH');
      assert.match(err.message, /changed: the broker now gives/);
      return true;
    });
    const accepted = await connect({ broker: address, uri: 'nattrav://plain-name', knownKeysFile, acceptChangedKey: true });
    accepted.destroy();
    assert.equal(accepted.nattrav.peerKeyFingerprint, key2);
    assert.equal((await readKnownKeys(knownKeysFile)).get('nattrav://plain-name'), key2);
  });

  test('tls: false on both sides gives a plain socket (the opt-out)', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const { server } = await startRecipient(address, 'nattrav://plain-opt-out', { keyDir: fresh(), tls: false });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: 'nattrav://plain-opt-out', tls: false });
    closers.push(() => socket.destroy());
    assert.equal(socket instanceof TLSSocket, false);
    assert.equal(socket.nattrav.tls, false);
  });

  for (const tls of [false, true]) {
    test(`a tap at the broker's position, on a relayed connection ${tls ? 'with TLS (the default), cannot read' : 'without TLS (the control), reads'} the application bytes`, async () => {
      const { broker, address } = await startBroker();
      closers.push(() => broker.close());
      const identity = await newSelfCertifyingIdentity({ dir: fresh() });
      const { server, accepted } = await startRecipient(address, identity.uri, { identity, tls });
      closers.push(() => server.close());
      // A TCP tap in front of the broker records everything the initiator sends and receives.
      const [brokerHost, brokerPort] = address.split(':');
      const seen: Buffer[] = [];
      const tap: Server = createTcpServer((client) => {
        const upstream = netConnect({ host: brokerHost as string, port: Number(brokerPort) });
        client.on('data', (chunk: Buffer) => seen.push(chunk));
        upstream.on('data', (chunk: Buffer) => seen.push(chunk));
        client.pipe(upstream).pipe(client);
        client.on('error', () => upstream.destroy());
        upstream.on('error', () => client.destroy());
      });
      await new Promise<void>((resolve) => tap.listen(0, '127.0.0.1', resolve));
      closers.push(() => tap.close());
      const [host, port] = ['127.0.0.1', (tap.address() as { port: number }).port];
      const signal = AbortSignal.timeout(10_000);
      const started = performance.now();
      let socket = await relayedAttempt({ host, port }, identity.uri, tls, signal);
      if (tls) socket = await secure(socket, { identity: await newSelfCertifyingIdentity({ dir: fresh() }), ca: [], expectedPeerUri: identity.uri, signal, started });
      closers.push(() => socket.destroy());
      assert.equal(socket.nattrav.path, 'relay');
      const secret = `secret-${randomBytes(8).toString('hex')}`;
      socket.write(secret);
      await until(() => accepted.length === 1, 5_000, 'the recipient to accept');
      await receive(accepted[0] as NattravSocket, secret);
      const everything = Buffer.concat(seen);
      assert.equal(everything.includes(Buffer.from(secret)), !tls, tls ? 'the application bytes crossed the tap in clear' : 'the control: a plain relay shows them');
    });
  }
});
