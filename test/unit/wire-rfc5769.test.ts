/**
 * RFC 5769 §2 test vectors ("Test Vectors for STUN", April 2010), byte for
 * byte. Each vector is decoded field by field, its MESSAGE-INTEGRITY (and
 * FINGERPRINT) verified, and re-encoded from its decoded attributes to the
 * exact same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AttrType,
  MessageClass,
  Method,
  StunMessage,
  decodeMessage,
  decodeText,
  encodeMessage,
  encodeXorAddress,
  getSoftware,
  getXorMappedAddress,
  longTermKey,
  verifyMessageIntegrity,
  type EncodeOptions,
} from '../../src/wire/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** RFC 8445 §16.1 (ICE) attributes that appear in the §2.1 vector. */
const ATTR_PRIORITY = 0x0024;
const ATTR_ICE_CONTROLLED = 0x8029;

/** §2.1-2.3 use this short-term password as the MESSAGE-INTEGRITY key. */
const SHORT_TERM_KEY = Buffer.from('VOkJxbRl1RmTxUk/WvJxBt', 'utf8');
const VECTOR_TID = hex('b7 e7 a7 01 bc 34 d6 86 fa 87 df ae');

/** §2.1 Sample Request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MI, FINGERPRINT; padding 0x20). */
const SAMPLE_REQUEST = hex(`
  00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
  00 24 00 04 6e 00 01 ff
  80 29 00 08 93 2f f9 b1 51 26 3b 36
  00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
  00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
  80 28 00 04 e5 7a 3b cf`);

/** §2.2 Sample IPv4 Response. */
const IPV4_RESPONSE = hex(`
  01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
  00 20 00 08 00 01 a1 47 e1 12 a6 43
  00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
  80 28 00 04 c0 7d 4c 96`);

/** §2.3 Sample IPv6 Response. */
const IPV6_RESPONSE = hex(`
  01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
  00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
  00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
  80 28 00 04 c8 fb 0b 4c`);

/** §2.4 Sample Request with Long-Term Authentication (USERNAME, NONCE, REALM, MI; zero padding, no FINGERPRINT). */
const LONG_TERM_REQUEST = hex(`
  00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
  00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
  00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
  00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
  00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66`);

const LT_USERNAME = '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9';
const LT_PASSWORD = 'The\u00ADM\u00AAtr\u2168';
const LT_PASSWORD_SASLPREP = 'TheMatrIX';
const LT_REALM = 'example.org';
const LT_NONCE = 'f//499k954d6OL34oL9FSTvy64sA';

/** Re-encodes a decoded message without its MESSAGE-INTEGRITY and FINGERPRINT, which `options` adds back. */
function reencode(msg: StunMessage, options: EncodeOptions): Buffer {
  const attributes = msg.attributes.filter((a) => a.type !== AttrType.MessageIntegrity && a.type !== AttrType.Fingerprint);
  return encodeMessage(new StunMessage({ method: msg.method, cls: msg.cls, transactionId: msg.transactionId, attributes }), options);
}

function types(msg: StunMessage): number[] {
  return msg.attributes.map((a) => a.type);
}

test('RFC 5769 §2.1 sample request: fields, MESSAGE-INTEGRITY, FINGERPRINT, byte-exact re-encode', () => {
  const msg = decodeMessage(SAMPLE_REQUEST); // throws if FINGERPRINT were wrong
  assert.equal(msg.method, Method.Binding);
  assert.equal(msg.cls, MessageClass.Request);
  assert.deepEqual(Buffer.from(msg.transactionId), VECTOR_TID);
  assert.deepEqual(types(msg), [AttrType.Software, ATTR_PRIORITY, ATTR_ICE_CONTROLLED, AttrType.Username, AttrType.MessageIntegrity, AttrType.Fingerprint]);
  assert.equal(getSoftware(msg), 'STUN test client');
  assert.deepEqual(Buffer.from(msg.get(ATTR_PRIORITY)!), hex('6e 00 01 ff'));
  assert.deepEqual(Buffer.from(msg.get(ATTR_ICE_CONTROLLED)!), hex('93 2f f9 b1 51 26 3b 36'));
  assert.equal(decodeText(msg.get(AttrType.Username)!, 513, 'USERNAME'), 'evtj:h6vY');
  assert.equal(verifyMessageIntegrity(msg, SHORT_TERM_KEY), true);
  assert.equal(verifyMessageIntegrity(msg, Buffer.from('VOkJxbRl1RmTxUk/WvJxBu')), false);
  assert.deepEqual(reencode(msg, { integrityKey: SHORT_TERM_KEY, fingerprint: true, paddingByte: 0x20 }), SAMPLE_REQUEST);
});

test('RFC 5769 §2.2 IPv4 response: XOR-MAPPED-ADDRESS 192.0.2.1:32853, byte-exact re-encode', () => {
  const msg = decodeMessage(IPV4_RESPONSE);
  assert.equal(msg.method, Method.Binding);
  assert.equal(msg.cls, MessageClass.SuccessResponse);
  assert.deepEqual(Buffer.from(msg.transactionId), VECTOR_TID);
  assert.deepEqual(types(msg), [AttrType.Software, AttrType.XorMappedAddress, AttrType.MessageIntegrity, AttrType.Fingerprint]);
  assert.equal(getSoftware(msg), 'test vector');
  assert.deepEqual(getXorMappedAddress(msg), { family: 'IPv4', address: '192.0.2.1', port: 32853 });
  assert.deepEqual(Buffer.from(encodeXorAddress({ family: 'IPv4', address: '192.0.2.1', port: 32853 }, VECTOR_TID)), hex('00 01 a1 47 e1 12 a6 43'));
  assert.equal(verifyMessageIntegrity(msg, SHORT_TERM_KEY), true);
  assert.deepEqual(reencode(msg, { integrityKey: SHORT_TERM_KEY, fingerprint: true, paddingByte: 0x20 }), IPV4_RESPONSE);
});

test('RFC 5769 §2.3 IPv6 response: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853, byte-exact re-encode', () => {
  const msg = decodeMessage(IPV6_RESPONSE);
  assert.equal(msg.method, Method.Binding);
  assert.equal(msg.cls, MessageClass.SuccessResponse);
  assert.deepEqual(types(msg), [AttrType.Software, AttrType.XorMappedAddress, AttrType.MessageIntegrity, AttrType.Fingerprint]);
  assert.equal(getSoftware(msg), 'test vector');
  const mapped = { family: 'IPv6', address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 } as const;
  assert.deepEqual(getXorMappedAddress(msg), mapped);
  assert.deepEqual(Buffer.from(encodeXorAddress(mapped, VECTOR_TID)), hex('00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9'));
  assert.equal(verifyMessageIntegrity(msg, SHORT_TERM_KEY), true);
  assert.deepEqual(reencode(msg, { integrityKey: SHORT_TERM_KEY, fingerprint: true, paddingByte: 0x20 }), IPV6_RESPONSE);
});

test('RFC 5769 §2.4 long-term credentials: fields, key, MESSAGE-INTEGRITY, byte-exact re-encode', () => {
  const msg = decodeMessage(LONG_TERM_REQUEST);
  assert.equal(msg.method, Method.Binding);
  assert.equal(msg.cls, MessageClass.Request);
  assert.deepEqual(Buffer.from(msg.transactionId), hex('78 ad 34 33 c6 ad 72 c0 29 da 41 2e'));
  assert.deepEqual(types(msg), [AttrType.Username, AttrType.Nonce, AttrType.Realm, AttrType.MessageIntegrity]);
  assert.equal(decodeText(msg.get(AttrType.Username)!, 513, 'USERNAME'), LT_USERNAME);
  assert.equal(decodeText(msg.get(AttrType.Nonce)!, 763, 'NONCE'), LT_NONCE);
  assert.equal(decodeText(msg.get(AttrType.Realm)!, 763, 'REALM'), LT_REALM);
  // SASLprep (RFC 4013) of the vector's password: soft hyphen mapped to nothing, then NFKC.
  assert.equal(LT_PASSWORD.replace(/\u00AD/g, '').normalize('NFKC'), LT_PASSWORD_SASLPREP);
  const key = longTermKey(LT_USERNAME, LT_REALM, LT_PASSWORD_SASLPREP);
  assert.equal(verifyMessageIntegrity(msg, key), true);
  assert.equal(verifyMessageIntegrity(msg, longTermKey(LT_USERNAME, LT_REALM, LT_PASSWORD)), false, 'the un-prepared password is a different key');
  // §2.4 pads with zeros and has no FINGERPRINT.
  assert.deepEqual(reencode(msg, { integrityKey: key }), LONG_TERM_REQUEST);
});

test('RFC 5769: flipping any one bit before MESSAGE-INTEGRITY makes verification fail', () => {
  const longTermKeyValue = longTermKey(LT_USERNAME, LT_REALM, LT_PASSWORD_SASLPREP);
  for (const [vector, key, miOffset] of [
    [SAMPLE_REQUEST, SHORT_TERM_KEY, SAMPLE_REQUEST.length - 32],
    [IPV4_RESPONSE, SHORT_TERM_KEY, IPV4_RESPONSE.length - 32],
    [IPV6_RESPONSE, SHORT_TERM_KEY, IPV6_RESPONSE.length - 32],
    [LONG_TERM_REQUEST, longTermKeyValue, LONG_TERM_REQUEST.length - 24],
  ] as const) {
    const original = decodeMessage(vector);
    assert.equal(vector.readUInt16BE(miOffset), AttrType.MessageIntegrity);
    // Every bit the HMAC covers, header included. FINGERPRINT would reject most of these in
    // decodeMessage already, so the flipped bytes go straight in as `raw`.
    for (let bit = 0; bit < miOffset * 8; bit++) {
      const flipped = Buffer.from(vector);
      flipped[bit >> 3] ^= 0x80 >> (bit & 7);
      const msg = new StunMessage({ method: original.method, cls: original.cls, transactionId: original.transactionId }, flipped);
      assert.equal(verifyMessageIntegrity(msg, key), false, `bit ${bit} flipped`);
    }
  }
  // §2.4 has no FINGERPRINT, so a flipped value bit still decodes and only MESSAGE-INTEGRITY catches it.
  const flipped = Buffer.from(LONG_TERM_REQUEST);
  flipped[24] ^= 0x01;
  assert.equal(verifyMessageIntegrity(decodeMessage(flipped), longTermKeyValue), false);
  assert.equal(verifyMessageIntegrity(decodeMessage(LONG_TERM_REQUEST), longTermKeyValue), true);
});
