/** TLS between peers through connect()/createServer() on loopback. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import type { NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { newSelfCertifyingIdentity } from '../../src/security/identity.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

describe('TLS between peers', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-tls-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  test('a self-certifying recipient: TLS 1.3, both ends authenticated, data both ways', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const identity = await newSelfCertifyingIdentity({ dir: keyDir });
    const { server, accepted } = await startRecipient(address, identity.uri, { identity, tls: true });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: identity.uri, tls: true });
    closers.push(() => socket.destroy());
    await until(() => accepted.length === 1, 10_000, 'the TLS connection at the recipient');
    const other = accepted[0] as NattravSocket;
    assert.equal((socket as unknown as TLSSocket).getProtocol(), 'TLSv1.3');
    assert.equal(socket.nattrav.tls, true);
    assert.equal(socket.nattrav.peerUri, identity.uri);
    assert.match(other.nattrav.peerUri ?? '', /^nattrav:\/\/k-/, 'the initiator presented a throwaway self-certifying identity');
    socket.write('secret');
    const [data] = (await once(other, 'data')) as [Buffer];
    assert.equal(data.toString(), 'secret');
  });

  test('CA-issued identities: each side learns the other\'s URI', async () => {
    const ca = await createCa({ name: 'peers' });
    const alice = await issueCertificate({ ca, uri: 'nattrav://alice' });
    const bob = await issueCertificate({ ca, uri: 'nattrav://bob' });
    const { broker, address } = await startBroker({ ca: ca.certPem });
    closers.push(() => broker.close());
    const { server, accepted } = await startRecipient(address, 'nattrav://alice', {
      identity: { uri: 'nattrav://alice', keyPem: alice.keyPem, certPem: alice.certPem, ca: [ca.certPem] },
      tls: true,
    });
    closers.push(() => server.close());
    const socket = await connect({
      broker: address,
      uri: 'nattrav://alice',
      tls: { identity: { uri: 'nattrav://bob', keyPem: bob.keyPem, certPem: bob.certPem, ca: [ca.certPem] } },
    });
    closers.push(() => socket.destroy());
    await until(() => accepted.length === 1, 10_000, 'the recipient');
    assert.equal(socket.nattrav.peerUri, 'nattrav://alice');
    assert.equal(accepted[0]?.nattrav.peerUri, 'nattrav://bob');
  });

  test('a recipient whose certificate names another URI is refused, on both sides', async () => {
    const ca = await createCa({ name: 'peers' });
    const mallory = await issueCertificate({ ca, uri: 'nattrav://mallory' });
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    // Registers the plain name nattrav://carol (first come) but presents mallory's certificate.
    const { server } = await startRecipient(address, 'nattrav://carol', {
      identity: { uri: 'nattrav://carol', keyPem: mallory.keyPem, certPem: mallory.certPem, ca: [ca.certPem] },
      tls: true,
    });
    closers.push(() => server.close());
    const failures: NattravError[] = [];
    server.on('attemptFailed', (err: NattravError) => failures.push(err));
    await assert.rejects(connect({ broker: address, uri: 'nattrav://carol', tls: { ca: [ca.certPem] } }), (err: NattravError) => {
      assert.equal(err.code, 'ERR_TLS');
      assert.match(err.message, /names nattrav:\/\/mallory/);
      return true;
    });
    await until(() => failures.length === 1, 10_000, 'the recipient to fail too');
    assert.equal(failures[0]?.code, 'ERR_TLS');
  });
});
