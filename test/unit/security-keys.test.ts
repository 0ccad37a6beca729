/**
 * Keys, signatures, fingerprints and self-certifying URIs: bytes checked
 * against independent computations, not only round trips.
 */
import assert from 'node:assert/strict';
import { createHash, createPublicKey, ECDH, sign as nodeSign } from 'node:crypto';
import { describe, test } from 'node:test';
import { ErrorCode, isNattravError } from '../../src/errors.js';
import { FINGERPRINT_LENGTH, base32, generateKeyPair, importPublicKey, keyFingerprint, keyPairFromPrivatePem, sign, verify, type KeyType } from '../../src/security/keys.js';
import { selfCertifyingUri, uriKeyFingerprint, uriMatchesKey } from '../../src/security/uri.js';

const TYPES: KeyType[] = ['ecdsa-p256', 'ed25519'];

describe('security keys', () => {
  test('base32 matches the RFC 4648 section 10 test vectors (lowercase, no padding)', () => {
    const vectors: Array<[string, string]> = [
      ['', ''],
      ['f', 'my'],
      ['fo', 'mzxq'],
      ['foo', 'mzxw6'],
      ['foob', 'mzxw6yq'],
      ['fooba', 'mzxw6ytb'],
      ['foobar', 'mzxw6ytboi'],
    ];
    for (const [input, expected] of vectors) assert.equal(base32(Buffer.from(input)), expected, input);
  });

  test('keyFingerprint is base32(SHA-256(spki)): 52 characters of a-z2-7', () => {
    const key = generateKeyPair();
    const fingerprint = keyFingerprint(key.spki);
    assert.equal(fingerprint.length, FINGERPRINT_LENGTH);
    assert.match(fingerprint, /^[a-z2-7]{52}$/);
    assert.equal(fingerprint, base32(createHash('sha256').update(key.spki).digest()));
    // A fixed input: SHA-256 of the empty string, e3b0c442..., in base32.
    assert.equal(keyFingerprint(new Uint8Array(0)), '4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq');
  });

  for (const type of TYPES) {
    test(`${type}: generate, PEM round trip, sign/verify, tamper`, () => {
      const key = generateKeyPair(type);
      assert.equal(key.type, type);
      assert.match(key.privateKeyPem, /^-----BEGIN PRIVATE KEY-----/);
      assert.match(key.publicKeyPem, /^-----BEGIN PUBLIC KEY-----/);
      assert.deepEqual(createPublicKey(key.publicKeyPem).export({ format: 'der', type: 'spki' }), key.spki);
      const again = keyPairFromPrivatePem(key.privateKeyPem);
      assert.deepEqual(again.spki, key.spki);
      assert.equal(again.type, type);

      const data = Buffer.from('nattrav signs this');
      const signature = sign(key.privateKeyPem, data);
      if (type === 'ed25519') assert.equal(signature.length, 64);
      else assert.equal(signature[0], 0x30, 'ECDSA signatures are DER SEQUENCEs');
      assert.equal(verify(key.spki, data, signature), true);

      const tamperedData = Buffer.from(data);
      tamperedData[0] ^= 1;
      assert.equal(verify(key.spki, tamperedData, signature), false);
      const tamperedSig = Buffer.from(signature);
      tamperedSig[tamperedSig.length - 1] ^= 1;
      assert.equal(verify(key.spki, data, tamperedSig), false);
      assert.equal(verify(generateKeyPair(type).spki, data, signature), false, 'another key');
    });
  }

  test('signatures interoperate with node:crypto directly', () => {
    const key = generateKeyPair('ecdsa-p256');
    const data = Buffer.from('x');
    assert.equal(verify(key.spki, data, nodeSign('sha256', data, key.privateKeyPem)), true);
    const ed = generateKeyPair('ed25519');
    assert.equal(verify(ed.spki, data, nodeSign(null, data, ed.privateKeyPem)), true);
  });

  test('verify takes every SPKI encoding of a key (the usual ones through JWK, others as DER), and no point off the curve', () => {
    const data = Buffer.from('payload');
    const p256 = generateKeyPair('ecdsa-p256');
    const signature = sign(p256.privateKeyPem, data);
    const compressed = createPublicKey(p256.publicKeyPem).export({ format: 'jwk' });
    const point = Buffer.concat([Buffer.of(4), Buffer.from(compressed.x ?? '', 'base64url'), Buffer.from(compressed.y ?? '', 'base64url')]);
    const compressedPoint = ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'compressed') as Buffer;
    const compressedSpki = Buffer.concat([Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'), compressedPoint]);
    assert.deepEqual(createPublicKey({ key: compressedSpki, format: 'der', type: 'spki' }).export({ format: 'jwk' }), compressed, 'the same key, compressed');
    assert.equal(verify(p256.spki, data, signature), true);
    assert.equal(verify(compressedSpki, data, signature), true);
    assert.equal(verify(p256.spki, Buffer.from('other'), signature), false);
    // A point off the curve (y changed): refused at import, as DER refuses it.
    const offCurve = Buffer.from(p256.spki);
    offCurve[offCurve.length - 1] ^= 1;
    for (const bad of [offCurve]) {
      assert.throws(() => createPublicKey({ key: bad, format: 'der', type: 'spki' }), 'DER refuses it');
      assert.throws(() => importPublicKey(bad), 'so does the fast import');
      assert.equal(verify(bad, data, signature), false);
    }
    const ed = generateKeyPair('ed25519');
    assert.equal(verify(ed.spki, data, sign(ed.privateKeyPem, data)), true);
    assert.equal(verify(ed.spki, data, sign(p256.privateKeyPem, data)), false);
  });

  test('verify never throws on garbage', () => {
    const key = generateKeyPair();
    assert.equal(verify(Buffer.from('not a key'), Buffer.from('x'), Buffer.from('y')), false);
    assert.equal(verify(key.spki, Buffer.from('x'), Buffer.alloc(0)), false);
    assert.equal(verify(new Uint8Array(0), new Uint8Array(0), new Uint8Array(0)), false);
  });

  test('unsupported keys and bad input are ERR_INVALID_ARGUMENT', () => {
    assert.throws(() => keyPairFromPrivatePem('nope'), (err) => isNattravError(err, ErrorCode.InvalidArgument));
    assert.throws(() => generateKeyPair('rsa' as KeyType), (err) => isNattravError(err, ErrorCode.InvalidArgument));
  });
});

describe('self-certifying URIs', () => {
  const key = generateKeyPair();
  const fingerprint = keyFingerprint(key.spki);

  test('selfCertifyingUri and its parse', () => {
    const uri = selfCertifyingUri(key.spki);
    assert.equal(uri, `nattrav://k-${fingerprint}`);
    assert.equal(uri.length, 64);
    assert.equal(uriKeyFingerprint(uri), fingerprint);
    assert.equal(uriMatchesKey(uri, key.spki), true);
    assert.equal(uriMatchesKey(uri, generateKeyPair().spki), false);

    const labelled = selfCertifyingUri(key.spki, 'chat/room-1');
    assert.equal(labelled, `nattrav://k-${fingerprint}/chat/room-1`);
    assert.equal(uriKeyFingerprint(labelled), fingerprint);
    assert.equal(uriMatchesKey(labelled, key.spki), true);
  });

  test('edge cases are ordinary names, not self-certifying', () => {
    const notSelfCertifying = [
      'nattrav://alice',
      `nattrav://k-${fingerprint.slice(1)}`, // 51 characters
      `nattrav://k-${fingerprint}a`, // 53 characters
      `nattrav://K-${fingerprint}`,
      `nattrav://k-${fingerprint.toUpperCase()}`,
      `NATTRAV://k-${fingerprint}`,
      `other://k-${fingerprint}`,
      `nattrav://k-${fingerprint.slice(0, 51)}1`, // 1 is not in the alphabet
      `nattrav://k-${fingerprint}/`,
      `nattrav://k-${fingerprint}//x`,
      `nattrav://k-${fingerprint}/a b`,
      `nattrav://k-${fingerprint}/x?q=1`,
      `nattrav://k-${fingerprint}#f`,
      `nattrav://k-${fingerprint}/${'a'.repeat(201)}`,
      ` nattrav://k-${fingerprint}`,
      '',
    ];
    for (const uri of notSelfCertifying) assert.equal(uriKeyFingerprint(uri), undefined, uri);
    assert.equal(uriKeyFingerprint(`nattrav://k-${fingerprint}/${'a'.repeat(200)}`), fingerprint);
    assert.equal(uriKeyFingerprint(`nattrav://k-${fingerprint}/A.b_c~d-e`), fingerprint);
  });

  test('an invalid label is refused with ERR_INVALID_ARGUMENT', () => {
    for (const label of ['', 'a b', '/x', 'x/', 'a//b', 'ä', 'x?y']) {
      assert.throws(() => selfCertifyingUri(key.spki, label), (err) => isNattravError(err, ErrorCode.InvalidArgument), label);
    }
  });
});
