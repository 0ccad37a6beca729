/**
 * secureConnection over real loopback TCP socket pairs: mutual TLS 1.3 that
 * succeeds for matching identities and fails, on both sides and promptly, for
 * every kind of wrong certificate.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ErrorCode, isNattravError, type NattravError } from '../../src/errors.js';
import { createCa, issueCertificate, selfSignedCertificate, type CaFiles } from '../../src/security/ca.js';
import { checkedIdentity, newSelfCertifyingIdentity, type Identity } from '../../src/security/identity.js';
import { generateKeyPair, type KeyType } from '../../src/security/keys.js';
import { NATTRAV_ALPN, secureConnection, type SecureConnection } from '../../src/security/tls.js';
import { selfCertifyingUri } from '../../src/security/uri.js';
import { forgeSelfSigned } from './security-helpers.js';

const DAY_MS = 86_400_000;
const keyDir = mkdtempSync(join(tmpdir(), 'nattrav-tls-'));
const PEER_REJECTED = /the peer rejected our certificate or closed during the TLS handshake/;

/** A connected loopback TCP pair: [initiator's end, recipient's end]. */
async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(address.port, '127.0.0.1');
  await once(client, 'connect');
  const [serverSide] = await accepted;
  server.close();
  return [client, serverSide];
}

async function identity(ca: CaFiles, uri: string, trust: CaFiles[], extra: { keyType?: KeyType; notBefore?: Date; notAfter?: Date } = {}): Promise<Identity> {
  const issued = await issueCertificate({ ca, uri, ...extra });
  return checkedIdentity({ ...issued, ca: trust.map((t) => t.certPem) });
}

interface Outcome {
  initiator: PromiseSettledResult<SecureConnection>;
  recipient: PromiseSettledResult<SecureConnection>;
  raw: [Socket, Socket];
}

async function handshake(initiator: Identity, recipient: Identity, expectedPeerUri: string): Promise<Outcome> {
  const raw = await socketPair();
  const [a, b] = await Promise.allSettled([
    secureConnection(raw[0], { identity: initiator, role: 'initiator', expectedPeerUri }),
    secureConnection(raw[1], { identity: recipient, role: 'recipient' }),
  ]);
  return { initiator: a, recipient: b, raw };
}

function failure(result: PromiseSettledResult<SecureConnection>, side: string): NattravError {
  assert.equal(result.status, 'rejected', `${side} should have failed`);
  const err: unknown = (result as PromiseRejectedResult).reason;
  assert.ok(isNattravError(err, ErrorCode.Tls), `${side}: ${String(err)}`);
  return err;
}

/** Asserts that both sides failed with ERR_TLS, `detector` saying `pattern`, the other that it was rejected; and both sockets closed. */
function assertBothFail(outcome: Outcome, detector: 'initiator' | 'recipient', pattern: RegExp): void {
  const other = detector === 'initiator' ? 'recipient' : 'initiator';
  assert.match(failure(outcome[detector], detector).message, pattern);
  assert.match(failure(outcome[other], other).message, PEER_REJECTED);
  assert.ok(outcome.raw[0].destroyed && outcome.raw[1].destroyed, 'both raw sockets are destroyed');
}

async function roundTrip(a: SecureConnection, b: SecureConnection): Promise<void> {
  a.socket.write('ping');
  const [fromA] = (await once(b.socket, 'data')) as [Buffer];
  assert.equal(fromA.toString(), 'ping');
  b.socket.write('pong');
  const [fromB] = (await once(a.socket, 'data')) as [Buffer];
  assert.equal(fromB.toString(), 'pong');
}

after(() => rmSync(keyDir, { recursive: true, force: true }));

describe('secureConnection', () => {
  for (const keyType of ['ecdsa-p256', 'ed25519'] as KeyType[]) {
    test(`${keyType}: CA-issued identities; both learn the other's URI; TLS 1.3; data flows`, async () => {
      const ca = await createCa({ keyType });
      const alice = await identity(ca, 'nattrav://alice', [ca], { keyType });
      const bob = await identity(ca, 'nattrav://bob', [ca], { keyType });
      const outcome = await handshake(alice, bob, 'nattrav://bob');
      assert.equal(outcome.initiator.status, 'fulfilled');
      assert.equal(outcome.recipient.status, 'fulfilled');
      const a = (outcome.initiator as PromiseFulfilledResult<SecureConnection>).value;
      const b = (outcome.recipient as PromiseFulfilledResult<SecureConnection>).value;
      assert.equal(a.peerUri, 'nattrav://bob');
      assert.equal(b.peerUri, 'nattrav://alice');
      assert.equal(a.socket.getProtocol(), 'TLSv1.3');
      assert.equal(b.socket.getProtocol(), 'TLSv1.3');
      assert.equal(a.socket.alpnProtocol, NATTRAV_ALPN);
      assert.match(a.peerCertificatePem, /^-----BEGIN CERTIFICATE-----/);
      await roundTrip(a, b);
      a.socket.destroy();
      b.socket.destroy();
    });
  }

  test('data written right after the handshake is not lost or mixed with the confirmation', async () => {
    const ca = await createCa({});
    const alice = await identity(ca, 'nattrav://alice', [ca]);
    const bob = await identity(ca, 'nattrav://bob', [ca]);
    const raw = await socketPair();
    const recipient = secureConnection(raw[1], { identity: bob, role: 'recipient' }).then((c) => {
      c.socket.write('first bytes from the recipient');
      return c;
    });
    const a = await secureConnection(raw[0], { identity: alice, role: 'initiator', expectedPeerUri: 'nattrav://bob' });
    const b = await recipient;
    // Attach the reader only now: the bytes must wait in the buffer.
    let received = '';
    a.socket.setEncoding('utf8');
    a.socket.on('data', (chunk: string) => (received += chunk));
    while (received.length < 'first bytes from the recipient'.length) await once(a.socket, 'data');
    assert.equal(received, 'first bytes from the recipient');
    a.socket.destroy();
    b.socket.destroy();
  });

  test('self-certifying URIs with self-signed certificates and no CA', async () => {
    const alice = await newSelfCertifyingIdentity({ dir: keyDir, keyType: 'ed25519' });
    const bob = await newSelfCertifyingIdentity({ dir: keyDir, label: 'bob' });
    const outcome = await handshake(alice, bob, bob.uri);
    const a = (outcome.initiator as PromiseFulfilledResult<SecureConnection>).value;
    const b = (outcome.recipient as PromiseFulfilledResult<SecureConnection>).value;
    assert.equal(a.peerUri, bob.uri);
    assert.equal(b.peerUri, alice.uri);
    await roundTrip(a, b);
    a.socket.destroy();
    b.socket.destroy();
  });

  test('a recipient certificate from another CA: both fail', async () => {
    const ca = await createCa({});
    const rogue = await createCa({});
    const alice = await identity(ca, 'nattrav://alice', [ca]);
    const bob = await identity(rogue, 'nattrav://bob', [ca, rogue]);
    assertBothFail(await handshake(alice, bob, 'nattrav://bob'), 'initiator', /certificate of nattrav:\/\/bob not issued by a trusted CA/);
  });

  test('an initiator certificate from another CA: both fail', async () => {
    const ca = await createCa({});
    const rogue = await createCa({});
    const alice = await identity(rogue, 'nattrav://alice', [ca]);
    const bob = await identity(ca, 'nattrav://bob', [ca]);
    assertBothFail(await handshake(alice, bob, 'nattrav://bob'), 'recipient', /certificate of nattrav:\/\/alice not issued by a trusted CA/);
  });

  test('an expired certificate: both fail', async () => {
    const ca = await createCa({});
    const alice = await identity(ca, 'nattrav://alice', [ca]);
    const bob = await identity(ca, 'nattrav://bob', [ca], { notBefore: new Date(Date.now() - 30 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) });
    assertBothFail(await handshake(alice, bob, 'nattrav://bob'), 'initiator', /^certificate of nattrav:\/\/bob expired on \d{4}-/);
  });

  test('a certificate naming another URI: both fail', async () => {
    const ca = await createCa({});
    const alice = await identity(ca, 'nattrav://alice', [ca]);
    const carol = await identity(ca, 'nattrav://carol', [ca]);
    assertBothFail(await handshake(alice, carol, 'nattrav://bob'), 'initiator', /^certificate of nattrav:\/\/bob names nattrav:\/\/carol$/);
  });

  test('a self-certifying URI whose key does not match: both fail', async () => {
    const alice = await newSelfCertifyingIdentity({ dir: keyDir });
    const victim = selfCertifyingUri(generateKeyPair().spki);
    const impostorKey = generateKeyPair();
    const impostor = checkedIdentity({ certPem: await forgeSelfSigned(impostorKey, [victim]), keyPem: impostorKey.privateKeyPem, ca: [] });
    assertBothFail(await handshake(alice, impostor, victim), 'initiator', /^certificate key does not match self-certifying URI nattrav:\/\/k-/);
  });

  test('a plain URI with a self-signed certificate and no CA: both fail', async () => {
    const aliceKey = generateKeyPair();
    const alice = checkedIdentity({ certPem: await selfSignedCertificate({ key: aliceKey, uri: 'nattrav://alice' }), keyPem: aliceKey.privateKeyPem, ca: [] });
    const bob = await newSelfCertifyingIdentity({ dir: keyDir });
    assertBothFail(await handshake(alice, bob, bob.uri), 'recipient', /certificate of nattrav:\/\/alice not issued by a trusted CA \(no CA is configured/);
  });

  test('a peer that does not speak TLS: ERR_TLS, or the time limit; the signal aborts', async () => {
    const bob = await newSelfCertifyingIdentity({ dir: keyDir });
    // Garbage instead of a ClientHello.
    let raw = await socketPair();
    raw[0].write('GET / HTTP/1.1\r\n\r\n');
    await assert.rejects(secureConnection(raw[1], { identity: bob, role: 'recipient' }), (err: unknown) => isNattravError(err, ErrorCode.Tls));
    assert.ok(raw[1].destroyed);
    raw[0].destroy();
    // Silence: the handshake time limit fires.
    raw = await socketPair();
    await assert.rejects(secureConnection(raw[1], { identity: bob, role: 'recipient', timeoutMs: 200 }), (err: unknown) => {
      assert.ok(isNattravError(err, ErrorCode.Timeout), String(err));
      assert.match(err.message, /timed out after 200 ms while the TLS handshake as recipient/);
      return true;
    });
    assert.ok(raw[1].destroyed);
    raw[0].destroy();
    // The caller's signal.
    raw = await socketPair();
    const controller = new AbortController();
    const pending = secureConnection(raw[0], { identity: bob, role: 'initiator', expectedPeerUri: 'nattrav://x', signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, (err: unknown) => isNattravError(err, ErrorCode.Aborted));
    assert.ok(raw[0].destroyed);
    raw[1].destroy();
  });

  test('the initiator must name the URI it expects', async () => {
    const bob = await newSelfCertifyingIdentity({ dir: keyDir });
    const raw = await socketPair();
    await assert.rejects(secureConnection(raw[0], { identity: bob, role: 'initiator' }), (err: unknown) => isNattravError(err, ErrorCode.InvalidArgument));
    raw[0].destroy();
    raw[1].destroy();
  });

  test('a recipient that refuses the verified initiator: both fail with ERR_NOT_ALLOWED, the initiator with the reason as printable text, cut at 512 bytes', async () => {
    const [alice, bob] = await Promise.all([newSelfCertifyingIdentity({ dir: keyDir }), newSelfCertifyingIdentity({ dir: keyDir })]);
    const raw = await socketPair();
    let judged: string | undefined;
    const reason = `no entry for you\u0007\n${'x'.repeat(600)}`;
    const [a, b] = await Promise.allSettled([
      secureConnection(raw[0], { identity: alice, role: 'initiator', expectedPeerUri: bob.uri }),
      secureConnection(raw[1], { identity: bob, role: 'recipient', admit: (peer) => ((judged = peer.uri), reason) }),
    ]);
    assert.equal(judged, alice.uri, 'admit sees the identity the initiator proved');
    const refused = (result: PromiseSettledResult<SecureConnection>): NattravError => {
      assert.equal(result.status, 'rejected');
      const err: unknown = (result as PromiseRejectedResult).reason;
      assert.ok(isNattravError(err, ErrorCode.NotAllowed), String(err));
      return err;
    };
    const initiator = refused(a);
    assert.equal(initiator.message, `the recipient refused the connection: no entry for you??${'x'.repeat(512 - 18)}`);
    const recipient = refused(b);
    assert.match(recipient.message, new RegExp(`^refused ${alice.uri}: no entry for you`));
    assert.ok(raw[0].destroyed && raw[1].destroyed);
  });
});

