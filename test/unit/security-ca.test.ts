/**
 * The CA and the peer-certificate check: certificates OpenSSL accepts, and the
 * verifier's verdict on every way a certificate can be wrong.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ErrorCode, isNattravError } from '../../src/errors.js';
import { createCa, issueCertificate, readCaDir, selfSignedCertificate, writeCaDir } from '../../src/security/ca.js';
import { ephemeralOrKeptIdentity, loadIdentity, newSelfCertifyingIdentity, saveIdentity } from '../../src/security/identity.js';
import { describeCertificate } from '../../src/security/inspect.js';
import { generateKeyPair, keyFingerprint, type KeyType } from '../../src/security/keys.js';
import { selfCertifyingUri } from '../../src/security/uri.js';
import { verifyPeerCertificate } from '../../src/security/verify.js';
import { forgeSelfSigned } from './security-helpers.js';

const work = mkdtempSync(join(tmpdir(), 'nattrav-ca-'));
const DAY_MS = 86_400_000;

function file(name: string, text: string): string {
  const path = join(work, name);
  writeFileSync(path, text);
  return path;
}

function openssl(args: string[]): { status: number | null; output: string } {
  const result = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

function rejectsWith(promise: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  return assert.rejects(promise, (err: unknown) => {
    assert.ok(isNattravError(err), String(err));
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

after(() => rmSync(work, { recursive: true, force: true }));

describe('security CA', () => {
  for (const caType of ['ecdsa-p256', 'ed25519'] as KeyType[]) {
    for (const leafType of ['ecdsa-p256', 'ed25519'] as KeyType[]) {
      test(`openssl verifies a ${leafType} leaf from a ${caType} CA, and shows its URI`, async () => {
        const ca = await createCa({ keyType: caType, name: 'Test CA' });
        const leaf = await issueCertificate({ ca, uri: 'nattrav://alice', keyType: leafType });
        const caPath = file(`ca-${caType}-${leafType}.pem`, ca.certPem);
        const leafPath = file(`leaf-${caType}-${leafType}.pem`, leaf.certPem);
        const verified = openssl(['verify', '-CAfile', caPath, leafPath]);
        assert.equal(verified.status, 0, verified.output);
        assert.match(verified.output, /: OK/);
        // The leaf is good for TLS both ways.
        for (const purpose of ['sslserver', 'sslclient']) {
          assert.equal(openssl(['verify', '-purpose', purpose, '-CAfile', caPath, leafPath]).status, 0, purpose);
        }
        const san = execFileSync('openssl', ['x509', '-in', leafPath, '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
        assert.match(san, /URI:nattrav:\/\/alice/);
        const text = execFileSync('openssl', ['x509', '-in', caPath, '-noout', '-text'], { encoding: 'utf8' });
        assert.match(text, /Basic Constraints: critical\s+CA:TRUE/);
        assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
        const info = describeCertificate(leaf.certPem);
        assert.equal(info.keyType, leafType);
        assert.equal(info.subject, 'CN=nattrav://alice');
        assert.deepEqual(info.uris, ['nattrav://alice']);
      });
    }
  }

  test('openssl refuses a certificate from another CA', async () => {
    const ca = await createCa({});
    const other = await createCa({});
    const leaf = await issueCertificate({ ca: other, uri: 'nattrav://mallory' });
    const result = openssl(['verify', '-CAfile', file('ca-a.pem', ca.certPem), file('leaf-other.pem', leaf.certPem)]);
    assert.notEqual(result.status, 0);
    assert.match(result.output, /unable to get local issuer certificate/);
  });

  test('writeCaDir / readCaDir: ca-key.pem is 0600, never overwritten', async () => {
    const ca = await createCa({ keyType: 'ed25519' });
    const dir = join(work, 'ca-dir');
    await writeCaDir(dir, ca);
    assert.equal(statSync(join(dir, 'ca-key.pem')).mode & 0o777, 0o600);
    assert.deepEqual(await readCaDir(dir), ca);
    await rejectsWith(writeCaDir(dir, await createCa({})), ErrorCode.Identity, /already exists/);
    await rejectsWith(readCaDir(join(work, 'missing')), ErrorCode.Identity, /could not read/);
  });

  test('issueCertificate refuses a self-certifying URI of another key, and bad options', async () => {
    const ca = await createCa({});
    const uri = selfCertifyingUri(generateKeyPair().spki);
    await rejectsWith(issueCertificate({ ca, uri }), ErrorCode.InvalidArgument, /self-certifying URI of another key/);
    await rejectsWith(issueCertificate({ ca, uri: 'not a uri' }), ErrorCode.InvalidArgument, /not a URI/);
    await rejectsWith(issueCertificate({ ca, uri: 'nattrav://a', validDays: 0 }), ErrorCode.InvalidArgument, /positive number of days/);
    const leaf = await issueCertificate({ ca, uri: 'nattrav://leaf' });
    await rejectsWith(issueCertificate({ ca: { certPem: leaf.certPem, keyPem: leaf.keyPem }, uri: 'nattrav://x' }), ErrorCode.Identity, /is not a CA/);
    await rejectsWith(issueCertificate({ ca: { certPem: ca.certPem, keyPem: leaf.keyPem }, uri: 'nattrav://x' }), ErrorCode.Identity, /does not belong/);
  });
});

describe('verifyPeerCertificate', () => {
  test('accepts a CA-issued certificate naming the expected URI; reports the URI', async () => {
    const ca = await createCa({});
    const leaf = await issueCertificate({ ca, uri: 'nattrav://bob' });
    const verified = await verifyPeerCertificate(leaf.certPem, { trust: [ca.certPem], expectedUri: 'nattrav://bob' });
    assert.deepEqual([verified.uri, verified.selfCertifying], ['nattrav://bob', false]);
    const asRecipient = await verifyPeerCertificate(leaf.certPem, { trust: [ca.certPem] });
    assert.equal(asRecipient.uri, 'nattrav://bob');
    // Trust given as one PEM bundle with another CA in front.
    const bundle = (await createCa({})).certPem + ca.certPem;
    assert.equal((await verifyPeerCertificate(leaf.certPem, { trust: [bundle] })).uri, 'nattrav://bob');
  });

  test('rejects, saying why: wrong URI, wrong CA, no CA, expired, not yet valid', async () => {
    const ca = await createCa({});
    const other = await createCa({});
    const bob = await issueCertificate({ ca, uri: 'nattrav://bob' });
    await rejectsWith(verifyPeerCertificate(bob.certPem, { trust: [ca.certPem], expectedUri: 'nattrav://alice' }), ErrorCode.Tls, /^certificate of nattrav:\/\/alice names nattrav:\/\/bob$/);
    await rejectsWith(verifyPeerCertificate(bob.certPem, { trust: [other.certPem], expectedUri: 'nattrav://bob' }), ErrorCode.Tls, /certificate of nattrav:\/\/bob not issued by a trusted CA/);
    await rejectsWith(verifyPeerCertificate(bob.certPem, { trust: [] }), ErrorCode.Tls, /not issued by a trusted CA \(no CA is configured/);
    const expired = await issueCertificate({ ca, uri: 'nattrav://old', notBefore: new Date(Date.now() - 10 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) });
    await rejectsWith(verifyPeerCertificate(expired.certPem, { trust: [ca.certPem] }), ErrorCode.Tls, /^certificate of nattrav:\/\/old expired on \d{4}-\d\d-\d\dT/);
    await rejectsWith(verifyPeerCertificate(bob.certPem, { trust: [ca.certPem], now: new Date(Date.now() - DAY_MS) }), ErrorCode.Tls, /is not valid before/);
    // A self-signed certificate that copies the CA's name is not signed by the CA.
    const impostorKey = generateKeyPair();
    const impostor = await selfSignedCertificate({ key: impostorKey, uri: 'nattrav://bob' });
    await rejectsWith(verifyPeerCertificate(impostor, { trust: [ca.certPem], expectedUri: 'nattrav://bob' }), ErrorCode.Tls, /not issued by a trusted CA/);
    // An expired CA vouches for nothing.
    const oldCa = await createCa({ validDays: 1 });
    const leaf = await issueCertificate({ ca: oldCa, uri: 'nattrav://c' });
    await rejectsWith(verifyPeerCertificate(leaf.certPem, { trust: [oldCa.certPem], now: new Date(Date.now() + 2 * DAY_MS) }), ErrorCode.Tls, /expired/);
  });

  test('self-certifying URIs: the key decides, no CA needed', async () => {
    const key = generateKeyPair('ed25519');
    const uri = selfCertifyingUri(key.spki, 'svc');
    const cert = await selfSignedCertificate({ key, uri });
    const verified = await verifyPeerCertificate(cert, { trust: [], expectedUri: uri });
    assert.deepEqual([verified.uri, verified.selfCertifying], [uri, true]);
    assert.equal((await verifyPeerCertificate(cert, { trust: [] })).uri, uri);
    // A certificate naming someone else's self-certifying URI (built by hand: the library refuses to).
    const victim = selfCertifyingUri(generateKeyPair().spki);
    const forged = await forgeSelfSigned(generateKeyPair(), [victim]);
    await rejectsWith(verifyPeerCertificate(forged, { trust: [], expectedUri: victim }), ErrorCode.Tls, new RegExp(`^certificate key does not match self-certifying URI ${victim}$`));
    assert.equal(describeCertificate(cert).fingerprint, keyFingerprint(key.spki));
    assert.deepEqual(describeCertificate(cert).selfCertifyingUris, [uri]);
  });

  test('a recipient requires exactly one URI; garbage is ERR_TLS', async () => {
    const key = generateKeyPair();
    const two = await forgeSelfSigned(key, [selfCertifyingUri(key.spki), selfCertifyingUri(key.spki, 'b')]);
    await rejectsWith(verifyPeerCertificate(two, { trust: [] }), ErrorCode.Tls, /must name exactly one URI in subjectAltName; it names nattrav:\/\/k-/);
    const none = await forgeSelfSigned(key, []);
    await rejectsWith(verifyPeerCertificate(none, { trust: [] }), ErrorCode.Tls, /it names none/);
    await rejectsWith(verifyPeerCertificate(none, { trust: [], expectedUri: 'nattrav://x' }), ErrorCode.Tls, /^certificate of nattrav:\/\/x names no URI$/);
    // The initiator accepts a certificate that names the expected URI among others.
    assert.equal((await verifyPeerCertificate(two, { trust: [], expectedUri: selfCertifyingUri(key.spki, 'b') })).selfCertifying, true);
    await rejectsWith(verifyPeerCertificate(Buffer.from('garbage'), { trust: [] }), ErrorCode.Tls, /could not parse/);
  });
});

describe('identities', () => {
  test('saveIdentity / loadIdentity round trip with ca.pem', async () => {
    const ca = await createCa({});
    const issued = await issueCertificate({ ca, uri: 'nattrav://alice', keyType: 'ed25519' });
    const dir = join(work, 'id-alice');
    await saveIdentity(dir, { uri: 'nattrav://alice', keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] });
    assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
    const extra = (await createCa({})).certPem;
    const identity = await loadIdentity(dir, [extra]);
    assert.equal(identity.uri, 'nattrav://alice');
    assert.deepEqual(identity.ca, [ca.certPem, extra]);
  });

  test('loadIdentity refuses a key that is not the certificate\'s', async () => {
    const ca = await createCa({});
    const issued = await issueCertificate({ ca, uri: 'nattrav://a' });
    const dir = join(work, 'id-mismatch');
    await saveIdentity(dir, { uri: 'nattrav://a', keyPem: generateKeyPair().privateKeyPem, certPem: issued.certPem, ca: [] });
    await rejectsWith(loadIdentity(dir), ErrorCode.Identity, /does not belong to its certificate/);
  });

  test('ephemeralOrKeptIdentity keeps one key per URI (0600), with a fresh certificate', async () => {
    const dir = join(work, 'keys');
    const first = await ephemeralOrKeptIdentity('nattrav://plain', { dir });
    const second = await ephemeralOrKeptIdentity('nattrav://plain', { dir });
    assert.equal(first.keyPem, second.keyPem);
    assert.equal(first.uri, 'nattrav://plain');
    assert.deepEqual(describeCertificate(first.certPem).uris, ['nattrav://plain']);
    const other = await ephemeralOrKeptIdentity('nattrav://other', { dir });
    assert.notEqual(other.keyPem, first.keyPem);

    const self = await newSelfCertifyingIdentity({ dir, label: 'x' });
    const again = await ephemeralOrKeptIdentity(self.uri, { dir });
    assert.equal(again.keyPem, self.keyPem);
    assert.equal((await verifyPeerCertificate(again.certPem, { trust: [], expectedUri: self.uri })).selfCertifying, true);
    const stranger = selfCertifyingUri(generateKeyPair().spki);
    await rejectsWith(ephemeralOrKeptIdentity(stranger, { dir }), ErrorCode.Identity, /no key for the self-certifying URI/);
  });
});
