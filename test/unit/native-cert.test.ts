/**
 * Certificates without the ASN.1 library (security/der.ts, native-cert.ts, verify.ts): the
 * self-signed certificate node:crypto makes is the one the library made (checked by
 * `@peculiar/x509`, node:crypto and the real `openssl x509`), and verifying without trust
 * anchors gives the same result, or the same error, as the library's path (verify-ca.ts) for
 * every rule.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import { createCa, issueCertificate, selfSignedCertificate } from '../../src/security/ca.js';
import { oid, readTlv, time, unsignedInteger } from '../../src/security/der.js';
import { generateKeyPair, type KeyType } from '../../src/security/keys.js';
import { certificateParts, nativeSelfSignedCertificate } from '../../src/security/native-cert.js';
import { selfCertifyingUri } from '../../src/security/uri.js';
import { verifyPeerCertificate, type VerifiedPeer, type VerifyPeerOptions } from '../../src/security/verify.js';
import { verifyWithAnchors } from '../../src/security/verify-ca.js';
import { parseCertificate, sanUris, x509 } from '../../src/security/x509.js';
import { forgeSelfSigned } from './security-helpers.js';

const DAY_MS = 86_400_000;
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** What a verification gave: the verified peer, or the error's code and message. */
async function outcome(run: () => Promise<VerifiedPeer>): Promise<unknown> {
  try {
    const peer = await run();
    return { ...peer, certificatePem: new X509Certificate(peer.certificatePem).raw.toString('hex') };
  } catch (err) {
    return { code: (err as { code?: string }).code, message: (err as Error).message };
  }
}

describe('DER and self-signed certificates without the library', () => {
  test('DER: object identifiers, integers, times and lengths as X.690 encodes them; truncated input is refused', () => {
    assert.equal(oid('1.2.840.10045.4.3.2').toString('hex'), '06082a8648ce3d040302');
    assert.equal(oid('2.5.29.17').toString('hex'), '0603551d11');
    assert.equal(unsignedInteger(Buffer.of(0x00, 0x00, 0x7f)).toString('hex'), '02017f');
    assert.equal(unsignedInteger(Buffer.of(0x80)).toString('hex'), '02020080', 'a zero byte keeps it positive');
    assert.equal(time(new Date('2049-12-31T23:59:59Z')).toString('ascii', 2), '491231235959Z', 'UTCTime through 2049');
    assert.equal(time(new Date('2050-01-01T00:00:00Z')).toString('ascii', 2), '20500101000000Z', 'GeneralizedTime from 2050');
    const long = readTlv(Buffer.concat([Buffer.of(0x04, 0x82, 0x01, 0x00), Buffer.alloc(256)]));
    assert.equal(long.content.length, 256);
    assert.throws(() => readTlv(Buffer.of(0x30, 0x05, 0x01)), /runs past the input/);
    assert.throws(() => readTlv(Buffer.of(0x30)), /truncated/);
  });

  for (const type of ['ecdsa-p256', 'ed25519'] as KeyType[]) {
    test(`${type}: the certificate is version 3, self-signed, with the library's extensions; @peculiar/x509, node:crypto and openssl read it alike`, async () => {
      const key = generateKeyPair(type);
      const uri = selfCertifyingUri(key.spki);
      const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 300_000);
      const notAfter = new Date(notBefore.getTime() + 365 * DAY_MS);
      const pem = nativeSelfSignedCertificate({ key, uri, notBefore, notAfter });
      const node = new X509Certificate(pem);
      assert.equal(node.subject, `CN=${uri}`);
      assert.equal(node.issuer, `CN=${uri}`);
      assert.equal(node.ca, false);
      assert.ok(node.verify(node.publicKey), 'signed by its own key');
      assert.deepEqual(node.keyUsage, [SERVER_AUTH, CLIENT_AUTH]);
      assert.equal(node.subjectAltName, `URI:${uri}`);
      assert.equal(new Date(node.validTo).getTime(), notAfter.getTime());
      const lib = parseCertificate(pem);
      assert.deepEqual(sanUris(lib), [uri]);
      assert.ok(await lib.verify({ signatureOnly: true }), 'the library checks the signature too');
      assert.equal(lib.getExtension(x509.BasicConstraintsExtension)?.critical, true);
      assert.equal(lib.getExtension(x509.BasicConstraintsExtension)?.ca, false);
      assert.equal(lib.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature);
      assert.equal(lib.getExtension(x509.KeyUsagesExtension)?.critical, true);
      const ski = await x509.SubjectKeyIdentifierExtension.create(key.spki);
      assert.equal(lib.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId, ski.keyId, 'the key identifier the library computes');
      assert.ok(Buffer.from(lib.serialNumber, 'hex').length === 16 && Number.parseInt(lib.serialNumber.slice(0, 1), 16) < 8, 'a positive 128-bit serial');
      assert.deepEqual(certificateParts(node.raw), { sanUris: [uri], spki: key.spki });
      const openssl = spawnSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
      // .ci/run installs openssl; elsewhere a machine without it skips this third reader.
      if (openssl.error !== undefined) assert.equal(process.env.CI, undefined, `openssl is missing: ${openssl.error.message}`);
      else {
        assert.equal(openssl.status, 0, openssl.stderr);
        assert.match(openssl.stdout, /Version: 3 \(0x2\)/);
        assert.match(openssl.stdout, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
        assert.match(openssl.stdout, /X509v3 Key Usage: critical\s+Digital Signature/);
        assert.match(openssl.stdout, /TLS Web Server Authentication, TLS Web Client Authentication/);
        assert.ok(openssl.stdout.includes(`URI:${uri}`));
      }
    });
  }

  test('selfSignedCertificate (ca.ts) makes the same kind of certificate and still refuses a URI the key does not certify', async () => {
    const key = generateKeyPair();
    const uri = selfCertifyingUri(key.spki);
    const pem = await selfSignedCertificate({ key, uri });
    assert.deepEqual(certificateParts(new X509Certificate(pem).raw).sanUris, [uri]);
    const another = selfCertifyingUri(generateKeyPair().spki);
    await assert.rejects(selfSignedCertificate({ key, uri: another }), /is a self-certifying URI of another key/);
    assert.throws(() => nativeSelfSignedCertificate({ key, uri: another, notBefore: new Date(), notAfter: new Date(Date.now() + DAY_MS) }), /is a self-certifying URI of another key/);
  });
});

describe('verifying without trust anchors gives what the library gives', () => {
  test('every rule: URI, validity, extKeyUsage, self-certifying key, expected and pinned keys, no CA', async () => {
    const key = generateKeyPair();
    const other = generateKeyPair();
    const uri = selfCertifyingUri(key.spki);
    const past = { notBefore: new Date(Date.now() - 10 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) };
    const future = { notBefore: new Date(Date.now() + DAY_MS), notAfter: new Date(Date.now() + 10 * DAY_MS) };
    const ca = await createCa({});
    const issued = await issueCertificate({ ca, uri: 'nattrav://alice' });
    const fingerprint = (await verifyPeerCertificate(issued.certPem, { trust: [ca.certPem], expectedUri: 'nattrav://alice' })).keyFingerprint;
    const certificates: Record<string, string> = {
      native: nativeSelfSignedCertificate({ key, uri, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + DAY_MS) }),
      library: await forgeSelfSigned(key, [uri]),
      'two URIs': await forgeSelfSigned(key, [uri, 'nattrav://second']),
      'no URI': await forgeSelfSigned(key, []),
      expired: await forgeSelfSigned(key, [uri], past),
      'not yet valid': await forgeSelfSigned(key, [uri], future),
      'client only': await forgeSelfSigned(key, [uri], { eku: [CLIENT_AUTH] }),
      'server only': await forgeSelfSigned(key, [uri], { eku: [SERVER_AUTH] }),
      "another's URI": await forgeSelfSigned(other, [uri]),
      'CA-issued plain name': issued.certPem,
    };
    const cases: Array<Omit<VerifyPeerOptions, 'trust'>> = [
      { expectedUri: uri },
      { expectedUri: 'nattrav://alice' },
      { expectedUri: 'nattrav://alice', expectedKeyFingerprint: fingerprint },
      { expectedUri: 'nattrav://alice', expectedKeyFingerprint: fingerprint.replace(/^./, fingerprint.startsWith('a') ? 'b' : 'a') },
      { peerRole: 'client' },
      { expectedUri: uri, expectedKeyFingerprint: selfCertifyingUri(other.spki).slice('nattrav://k-'.length), keyPinned: true },
    ];
    let compared = 0;
    for (const [name, pem] of Object.entries(certificates)) {
      for (const options of cases) {
        const der = new X509Certificate(pem).raw;
        const native = await outcome(() => verifyPeerCertificate(der, { trust: [], ...options }));
        const library = await outcome(() => verifyWithAnchors(der, { trust: [], ...options }));
        assert.deepEqual(native, library, `${name} with ${JSON.stringify(options)}`);
        compared++;
      }
    }
    assert.equal(compared, 60);
  });

  test('a validity time node:crypto cannot read (month 13) is refused, as the library refuses it', async () => {
    const key = generateKeyPair('ed25519');
    const uri = selfCertifyingUri(key.spki);
    const der = Buffer.from(new X509Certificate(nativeSelfSignedCertificate({ key, uri, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + DAY_MS) })).raw);
    // The second UTCTime (tag 0x17, 13 bytes) is notAfter.
    const first = der.indexOf(Buffer.of(0x17, 0x0d));
    const second = der.indexOf(Buffer.of(0x17, 0x0d), first + 2);
    der.write('991399999999Z', second + 2, 'ascii');
    for (const run of [() => verifyPeerCertificate(der, { trust: [] }), () => verifyWithAnchors(der, { trust: [] })]) {
      await assert.rejects(run(), (err: unknown) => (err as { code?: string }).code === 'ERR_TLS');
    }
  });

  test('garbage is refused as unparseable, naming the peer\'s certificate', async () => {
    await assert.rejects(verifyPeerCertificate(Buffer.from('30050102', 'hex'), { trust: [] }), (err: unknown) => (err as { code?: string }).code === 'ERR_TLS' && /could not parse the peer's certificate/.test((err as Error).message));
  });
});
