/**
 * The recipient's allow-list (`allow`): only initiators that proved a listed identity in
 * the mutual TLS handshake get a connection; the others learn why (ERR_NOT_ALLOWED with
 * the recipient's reason) and the recipient reports them ('connectionRejected').
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, type NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { createServer, type ConnectionRejection } from '../../src/peer/server.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { newSelfCertifyingIdentity, type Identity } from '../../src/security/identity.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

describe('allow-list of initiator identities', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-allow-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  test('a listed identity connects; another is refused with the reason on both sides, and no connection is handed out', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const friend = await newSelfCertifyingIdentity({ dir: keyDir });
    const stranger = await newSelfCertifyingIdentity({ dir: keyDir });
    const { server, accepted } = await startRecipient(address, 'nattrav://guarded', { keyDir, allow: [friend.uri] });
    closers.push(() => server.close());
    const rejections: ConnectionRejection[] = [];
    const failures: NattravError[] = [];
    server.on('connectionRejected', (r: ConnectionRejection) => rejections.push(r));
    server.on('attemptFailed', (err: NattravError) => failures.push(err));

    const dial = (identity?: Identity): Promise<NattravSocket> =>
      connect({ broker: address, uri: 'nattrav://guarded', knownKeysFile: false, tls: identity === undefined ? true : { identity } });

    const allowed = await dial(friend);
    closers.push(() => allowed.destroy());
    await until(() => accepted.length === 1, 10_000, 'the allowed connection at the recipient');
    assert.equal(accepted[0]?.nattrav.peerUri, friend.uri);
    allowed.write('hello');
    const [data] = (await once(accepted[0] as NattravSocket, 'data')) as [Buffer];
    assert.equal(data.toString(), 'hello');

    const reason = `${stranger.uri} is not on the allow-list of nattrav://guarded`;
    await assert.rejects(dial(stranger), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.NotAllowed, err.message);
      assert.equal(err.message, `the recipient refused the connection: ${reason}`);
      return true;
    });
    await until(() => rejections.length === 1, 10_000, 'the rejection event');
    assert.equal(rejections[0]?.peerUri, stranger.uri);
    assert.equal(rejections[0]?.reason, reason);
    assert.match(rejections[0]?.peerKeyFingerprint ?? '', /^[a-z2-7]{52}$/);
    assert.match(`${rejections[0]?.remote.address}:${rejections[0]?.remote.port}`, /^127\.0\.0\.1:\d+$/);

    // An initiator without an identity of its own proves a throwaway one: refused too.
    await assert.rejects(dial(), (err: NattravError) => err.code === ErrorCode.NotAllowed);
    await until(() => rejections.length === 2, 10_000, 'the second rejection event');
    assert.deepEqual(failures, [], 'a refusal is not an attempt failure');
    assert.equal(accepted.length, 1, 'refused initiators never reach the connection handler');
  });

  test('CA-issued identities: the allow-list names plain URIs the CA vouches for', async () => {
    const ca = await createCa({ name: 'peers' });
    const issue = async (uri: string): Promise<Identity> => {
      const cert = await issueCertificate({ ca, uri });
      return { uri, keyPem: cert.keyPem, certPem: cert.certPem, ca: [ca.certPem] };
    };
    const [service, bob, eve] = await Promise.all([issue('nattrav://service'), issue('nattrav://bob'), issue('nattrav://eve')]);
    const { broker, address } = await startBroker({ ca: ca.certPem });
    closers.push(() => broker.close());
    const { server, accepted } = await startRecipient(address, 'nattrav://service', { identity: service, allow: ['nattrav://bob', 'nattrav://carol'] });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: 'nattrav://service', tls: { identity: bob } });
    closers.push(() => socket.destroy());
    await until(() => accepted.length === 1, 10_000, 'bob at the recipient');
    assert.equal(accepted[0]?.nattrav.peerVouchedBy, 'ca');
    await assert.rejects(connect({ broker: address, uri: 'nattrav://service', tls: { identity: eve } }), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.NotAllowed);
      assert.match(err.message, /nattrav:\/\/eve is not on the allow-list of nattrav:\/\/service/);
      return true;
    });
  });

  test('bad allow options are refused at once, naming what is wrong', () => {
    const base = { broker: '127.0.0.1:3478', uri: 'nattrav://x' };
    assert.throws(() => createServer({ ...base, allow: ['nattrav://a'], tls: false }), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.InvalidArgument);
      assert.match(err.message, /allow needs TLS.*tls: false/);
      return true;
    });
    assert.throws(() => createServer({ ...base, allow: ['nattrav://ok', 'https://nope'] }), /allow\[1\] "https:\/\/nope": scheme "https:" is not nattrav:/);
    assert.throws(() => createServer({ ...base, allow: [] }), /allow: expected a non-empty array of nattrav URIs/);
  });
});
