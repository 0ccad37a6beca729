/**
 * Message encoding/decoding against hand-written bytes, every malformed case
 * we could think of, MESSAGE-INTEGRITY-SHA256, and STUN-over-TCP framing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { NattravError } from '../../src/errors.js';
import {
  AttrType,
  HEADER_LENGTH,
  MAX_MESSAGE_LENGTH,
  MessageClass,
  Method,
  StunMessage,
  StunStreamDecoder,
  addU32,
  addUri,
  addXorAddress,
  decodeDatagram,
  decodeMessage,
  encodeErrorCode,
  encodeMessage,
  getErrorCode,
  getU32Attr,
  getUri,
  getXorAddressAttrs,
  isStunMessage,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from '../../src/wire/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+|\/\/[^\n]*/g, ''), 'hex');
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');

function assertMalformed(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof NattravError, `expected NattravError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_STUN_MALFORMED');
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}

/** Binding request, SOFTWARE "nattrav", no FINGERPRINT. */
const BINDING_REQUEST = hex(`
  00 01 00 0c  // type 0x0001 (Binding, class request), length 12
  21 12 a4 42  // magic cookie
  00 01 02 03 04 05 06 07 08 09 0a 0b  // transaction ID
  80 22 00 07  6e 61 74 74 72 61 76 00  // SOFTWARE, 7 bytes "nattrav" + 1 byte padding
`);
/** The same with FINGERPRINT: length 12 + 8 = 20; CRC-32 computed independently with Python's zlib.crc32, XOR 0x5354554e. */
const BINDING_REQUEST_FP = hex(`
  00 01 00 14 21 12 a4 42 00 01 02 03 04 05 06 07 08 09 0a 0b
  80 22 00 07 6e 61 74 74 72 61 76 00
  80 28 00 04 02 cc a2 8d
`);

/**
 * nattrav Register request (method 0xE01, request -> type 0x3801: M11-M7 = 0b11100
 * shifted up 2 gives 0x3800, M3-M0 = 1).
 */
const REGISTER_REQUEST = hex(`
  38 01 00 38  // type 0x3801, length 56 = 12 + 12 + 24 + 8
  21 12 a4 42  00 01 02 03 04 05 06 07 08 09 0a 0b
  4e 01 00 05  61 6c 69 63 65 00 00 00  // URI "alice", 3 bytes padding
  4e 03 00 08  00 01 32 9a  e1 ba a5 48  // PRIVATE-ENDPOINT IPv4: port 5000 = 0x1388 ^ 0x2112 = 0x329a,
                                          // 192.168.1.10 = c0a8010a ^ 2112a442 = e1baa548
  4e 03 00 14  00 02 32 9a                // PRIVATE-ENDPOINT IPv6 [fd00::1]:5000:
  dc 12 a4 42  00 01 02 03  04 05 06 07  08 09 0a 0a  // fd000000 00000000 00000000 00000001 ^ cookie || TID
  4e 07 00 04  00 00 75 30               // LIFETIME 30000 ms
`);

function buildRegister(): StunMessage {
  const msg = StunMessage.request(Method.Register, TID);
  addUri(msg, 'alice');
  addXorAddress(msg, AttrType.PrivateEndpoint, { family: 'IPv4', address: '192.168.1.10', port: 5000 });
  addXorAddress(msg, AttrType.PrivateEndpoint, { family: 'IPv6', address: 'fd00::1', port: 5000 });
  addU32(msg, AttrType.Lifetime, 30000);
  return msg;
}

test('Binding request encodes to hand-written bytes, with and without FINGERPRINT', () => {
  const msg = StunMessage.request(Method.Binding, TID);
  assert.deepEqual(encodeMessage(msg, { software: 'nattrav' }), BINDING_REQUEST);
  assert.deepEqual(encodeMessage(msg, { software: 'nattrav', fingerprint: true }), BINDING_REQUEST_FP);
  for (const bytes of [BINDING_REQUEST, BINDING_REQUEST_FP]) {
    const d = decodeMessage(bytes);
    assert.equal(d.method, Method.Binding);
    assert.equal(d.cls, MessageClass.Request);
    assert.deepEqual(Buffer.from(d.transactionId), TID);
    assert.equal(Buffer.from(d.get(AttrType.Software)!).toString(), 'nattrav');
    assert.deepEqual(d.raw, bytes);
    assert.equal(isStunMessage(bytes), true);
  }
});

test('Register request with URI + PRIVATE-ENDPOINTs encodes to hand-written bytes and decodes', () => {
  assert.deepEqual(encodeMessage(buildRegister()), REGISTER_REQUEST);
  const d = decodeMessage(REGISTER_REQUEST);
  assert.equal(d.method, Method.Register);
  assert.equal(d.cls, MessageClass.Request);
  assert.equal(getUri(d), 'alice');
  assert.deepEqual(getXorAddressAttrs(d, AttrType.PrivateEndpoint), [
    { family: 'IPv4', address: '192.168.1.10', port: 5000 },
    { family: 'IPv6', address: 'fd00::1', port: 5000 },
  ]);
  assert.equal(getU32Attr(d, AttrType.Lifetime), 30000);
  assert.equal(getU32Attr(d, AttrType.StartDelay), undefined);
});

test('MESSAGE-INTEGRITY and FINGERPRINT bytes match an independent computation', () => {
  const key = Buffer.from('secret');
  const out = encodeMessage(buildRegister(), { integrityKey: key, fingerprint: true });
  const miAt = REGISTER_REQUEST.length;
  assert.deepEqual(out.subarray(0, 2), REGISTER_REQUEST.subarray(0, 2));
  assert.equal(out.readUInt16BE(2), 56 + 24 + 8);
  assert.deepEqual(out.subarray(4, miAt), REGISTER_REQUEST.subarray(4));
  assert.deepEqual(out.subarray(miAt, miAt + 4), hex('00 08 00 14'));
  const covered = Buffer.from(REGISTER_REQUEST);
  covered.writeUInt16BE(56 + 24, 2); // length as if MESSAGE-INTEGRITY were last
  assert.deepEqual(out.subarray(miAt + 4, miAt + 24), createHmac('sha1', key).update(covered).digest());
  assert.deepEqual(out.subarray(miAt + 24, miAt + 28), hex('80 28 00 04'));
  assert.equal(verifyMessageIntegrity(decodeMessage(out), key), true);
  assert.equal(verifyMessageIntegrity(decodeMessage(out), Buffer.from('Secret')), false);
  assert.equal(verifyMessageIntegrity(decodeMessage(REGISTER_REQUEST), key), false, 'absent');
  assert.equal(verifyMessageIntegrity(buildRegister(), key), false, 'not decoded: no raw');
});

test('MESSAGE-INTEGRITY-SHA256: round trip, tamper detection, truncation, order with MESSAGE-INTEGRITY', () => {
  const key = Buffer.from('sha256 key');
  const out = encodeMessage(buildRegister(), { integrityKey: Buffer.from('k1'), integritySha256Key: key, fingerprint: true });
  const d = decodeMessage(out);
  assert.deepEqual(d.attributes.slice(-3).map((a) => a.type), [AttrType.MessageIntegrity, AttrType.MessageIntegritySha256, AttrType.Fingerprint]);
  assert.equal(verifyMessageIntegritySha256(d, key), true);
  assert.equal(verifyMessageIntegrity(d, Buffer.from('k1')), true);
  assert.equal(verifyMessageIntegritySha256(d, Buffer.from('k1')), false);
  const only = decodeMessage(encodeMessage(buildRegister(), { integritySha256Key: key }));
  assert.equal(verifyMessageIntegritySha256(only, key), true);
  assert.equal(verifyMessageIntegrity(only, key), false, 'no SHA1 integrity present');
  for (let i = HEADER_LENGTH; i < only.raw!.length; i++) {
    const tampered = Buffer.from(only.raw!);
    tampered[i] ^= 0x40;
    const m = new StunMessage({ method: only.method, cls: only.cls, transactionId: only.transactionId }, tampered);
    assert.equal(verifyMessageIntegritySha256(m, key), false, `byte ${i}`);
  }
  // §14.6: a 16-byte truncated value is valid; built by hand here.
  const body = Buffer.from(REGISTER_REQUEST);
  body.writeUInt16BE(56 + 4 + 16, 2);
  const mac = createHmac('sha256', key).update(body).digest().subarray(0, 16);
  const truncated = Buffer.concat([body, hex('00 1c 00 10'), mac]);
  assert.equal(verifyMessageIntegritySha256(decodeMessage(truncated), key), true);
  truncated[truncated.length - 1] ^= 1;
  assert.equal(verifyMessageIntegritySha256(decodeMessage(truncated), key), false);
});

test('attributes after MESSAGE-INTEGRITY other than MI-SHA256/FINGERPRINT are ignored (RFC 8489 §14.5)', () => {
  const key = Buffer.from('k');
  const signed = encodeMessage(buildRegister(), { integrityKey: key });
  const extra = hex('4e 07 00 04 00 00 00 01'); // a second LIFETIME after MESSAGE-INTEGRITY
  const appended = Buffer.concat([signed, extra]);
  appended.writeUInt16BE(appended.length - HEADER_LENGTH, 2);
  const d = decodeMessage(appended);
  assert.equal(d.getAll(AttrType.Lifetime).length, 1);
  assert.equal(d.attributes.at(-1)!.type, AttrType.MessageIntegrity);
  assert.equal(verifyMessageIntegrity(d, key), true);
});

/** Mutates a copy of `bytes`. */
function mutate(bytes: Buffer, f: (b: Buffer) => void): Buffer {
  const b = Buffer.from(bytes);
  f(b);
  return b;
}

test('decodeMessage rejects malformed messages with ERR_STUN_MALFORMED', () => {
  const fp = BINDING_REQUEST_FP;
  assertMalformed(() => decodeMessage(fp.subarray(0, 19)), /shorter than the 20-byte header/);
  assertMalformed(() => decodeMessage(Buffer.alloc(0)), /header/);
  assertMalformed(() => decodeMessage(mutate(fp, (b) => (b[0] |= 0x40))), /most significant bits/);
  assertMalformed(() => decodeMessage(mutate(fp, (b) => (b[5] ^= 1))), /magic cookie/);
  assertMalformed(() => decodeMessage(mutate(fp, (b) => b.writeUInt16BE(0x13, 2))), /multiple of 4/);
  assertMalformed(() => decodeMessage(mutate(fp, (b) => b.writeUInt16BE(0x18, 2))), /length field says 24/);
  assertMalformed(() => decodeMessage(fp.subarray(0, fp.length - 4)), /length field says 20/);
  assertMalformed(() => decodeMessage(Buffer.concat([fp, Buffer.alloc(4)])), /length field says 20/);
  assertMalformed(() => decodeMessage(mutate(BINDING_REQUEST, (b) => b.writeUInt16BE(9, 22))), /SOFTWARE .*overruns/);
  assertMalformed(() => decodeMessage(mutate(BINDING_REQUEST, (b) => b.writeUInt16BE(0xfff0, 22))), /overruns/);
  assertMalformed(() => decodeMessage(mutate(fp, (b) => (b[fp.length - 1] ^= 1))), /FINGERPRINT .*does not match/);
  assertMalformed(() => decodeMessage(mutate(fp, (b) => (b[25] ^= 1))), /FINGERPRINT .*does not match/);
  // FINGERPRINT not last: SOFTWARE after it.
  const fpFirst = Buffer.concat([fp, hex('80 22 00 01 41 00 00 00')]);
  fpFirst.writeUInt16BE(fpFirst.length - HEADER_LENGTH, 2);
  assertMalformed(() => decodeMessage(fpFirst), /FINGERPRINT must be the last attribute, but SOFTWARE follows/);
  // FINGERPRINT of the wrong length.
  assertMalformed(() => decodeMessage(mutate(fp, (b) => b.writeUInt16BE(0, 34))), /FINGERPRINT is 0 bytes/);
  // MESSAGE-INTEGRITY of the wrong length; MESSAGE-INTEGRITY-SHA256 of 12 and of 18 bytes.
  const withAttr = (attr: string): Buffer => {
    const b = Buffer.concat([BINDING_REQUEST, hex(attr)]);
    b.writeUInt16BE(b.length - HEADER_LENGTH, 2);
    return b;
  };
  assertMalformed(() => decodeMessage(withAttr('00 08 00 10' + ' 00'.repeat(16))), /MESSAGE-INTEGRITY is 16 bytes/);
  assertMalformed(() => decodeMessage(withAttr('00 1c 00 0c' + ' 00'.repeat(12))), /MESSAGE-INTEGRITY-SHA256 is 12 bytes/);
  assertMalformed(() => decodeMessage(withAttr('00 1c 00 12' + ' 00'.repeat(20))), /MESSAGE-INTEGRITY-SHA256 is 18 bytes/);
  // Over the size limit (whole message > MAX_MESSAGE_LENGTH), even when all bytes are there.
  const big = Buffer.alloc(MAX_MESSAGE_LENGTH + 4);
  BINDING_REQUEST.copy(big, 0, 0, HEADER_LENGTH);
  big.writeUInt16BE(big.length - HEADER_LENGTH, 2);
  assertMalformed(() => decodeMessage(big), /exceeds the 4096-byte limit/);
  assert.equal(isStunMessage(big), false);
  assert.equal(isStunMessage(mutate(fp, (b) => (b[4] = 0))), false);
  assert.equal(isStunMessage(fp.subarray(0, 19)), false);
});

test('accessors reject malformed attribute values with ERR_STUN_MALFORMED naming the attribute', () => {
  const msgWith = (type: number, value: string): StunMessage => new StunMessage({ method: Method.Register, cls: MessageClass.Request, transactionId: TID, attributes: [{ type, value: hex(value) }] });
  assertMalformed(() => getXorAddressAttrs(msgWith(AttrType.PrivateEndpoint, '00 03 32 9a e1 ba a5 48'), AttrType.PrivateEndpoint), /PRIVATE-ENDPOINT has unknown address family 0x03/);
  assertMalformed(() => getXorAddressAttrs(msgWith(AttrType.PrivateEndpoint, '00 01 32 9a e1 ba a5'), AttrType.PrivateEndpoint), /PRIVATE-ENDPOINT is IPv4 but 7 bytes/);
  assertMalformed(() => getXorAddressAttrs(msgWith(AttrType.PrivateEndpoint, '00 01 32 9a e1 ba a5 48 00 00 00 00'), AttrType.PrivateEndpoint), /IPv4 but 12 bytes/);
  assertMalformed(() => getErrorCode(msgWith(AttrType.ErrorCode, '00 00 02 00')), /ERROR-CODE class 2/);
  assertMalformed(() => getErrorCode(msgWith(AttrType.ErrorCode, '00 00 07 00')), /ERROR-CODE class 7/);
  assertMalformed(() => getErrorCode(msgWith(AttrType.ErrorCode, '00 00 04 64')), /ERROR-CODE number 100/);
  assertMalformed(() => getErrorCode(msgWith(AttrType.ErrorCode, '00 00 04')), /ERROR-CODE is 3 bytes/);
  assertMalformed(() => getErrorCode(msgWith(AttrType.ErrorCode, '00 00 04 04 c3 28')), /ERROR-CODE reason phrase is not valid UTF-8/);
  assertMalformed(() => getUri(msgWith(AttrType.Uri, '61 ff 62')), /URI is not valid UTF-8/);
  assertMalformed(() => getUri(msgWith(AttrType.Uri, 'ed a0 80')), /not valid UTF-8/); // a UTF-16 surrogate
  assertMalformed(() => getUri(msgWith(AttrType.Uri, '')), /URI is empty/);
  assertMalformed(() => getUri(msgWith(AttrType.Uri, '61'.repeat(513))), /URI is 513 bytes, more than the 512/);
  assert.equal(getUri(msgWith(AttrType.Uri, '61'.repeat(512))), 'a'.repeat(512));
  // Too long a URI inside a whole decoded message, too.
  const longUri = StunMessage.request(Method.Register, TID).add(AttrType.Uri, Buffer.alloc(600, 0x61));
  assertMalformed(() => getUri(decodeMessage(encodeMessage(longUri))), /URI is 600 bytes/);
  // More than 16 PRIVATE-ENDPOINTs.
  const many = StunMessage.request(Method.Register, TID);
  for (let i = 0; i < 17; i++) addXorAddress(many, AttrType.PrivateEndpoint, { family: 'IPv4', address: `10.0.0.${i}`, port: 1 });
  assertMalformed(() => getXorAddressAttrs(decodeMessage(encodeMessage(many)), AttrType.PrivateEndpoint), /17 PRIVATE-ENDPOINT attributes; at most 16/);
  assertMalformed(() => getU32Attr(msgWith(AttrType.StartDelay, '00 00 01'), AttrType.StartDelay), /START-DELAY is 3 bytes/);
});

test('error responses carry ERROR-CODE', () => {
  const req = StunMessage.request(Method.Connect, TID);
  const res = decodeMessage(encodeMessage(req.errorResponse(404, 'Not Found')));
  assert.equal(res.cls, MessageClass.ErrorResponse);
  assert.equal(res.method, Method.Connect);
  assert.deepEqual(getErrorCode(res), { code: 404, reason: 'Not Found' });
  assert.deepEqual(Buffer.from(res.get(AttrType.ErrorCode)!), Buffer.from(encodeErrorCode({ code: 404, reason: 'Not Found' })));
});

// ---- STUN over TCP (RFC 8489 §6.2.2) ----

const APP_BYTES = Buffer.from('HTTP/1.1 200 OK\r\n\r\nhello');

function twoMessageStream(): { stream: Buffer; first: Buffer; second: Buffer } {
  const first = encodeMessage(buildRegister(), { integrityKey: Buffer.from('k'), fingerprint: true });
  const second = encodeMessage(StunMessage.request(Method.Binding, hex('ff'.repeat(12))), { software: 'x', fingerprint: true });
  return { stream: Buffer.concat([first, second]), first, second };
}

test('StunStreamDecoder: a 2-message stream split at every byte offset yields both messages', () => {
  const { stream, first } = twoMessageStream();
  for (let split = 0; split <= stream.length; split++) {
    const dec = new StunStreamDecoder();
    const got = [...dec.push(stream.subarray(0, split)), ...dec.push(stream.subarray(split))];
    assert.equal(got.length, 2, `split at ${split}`);
    assert.equal(got[0].method, Method.Register);
    assert.deepEqual(got[0].raw, first);
    assert.equal(getUri(got[0]), 'alice');
    assert.equal(got[1].method, Method.Binding);
    assert.equal(dec.buffered, 0);
    if (split > 0 && split < first.length) assert.equal(new StunStreamDecoder().push(stream.subarray(0, split)).length, 0);
  }
  const dec = new StunStreamDecoder();
  let count = 0;
  for (const byte of stream) count += dec.push(Uint8Array.of(byte)).length;
  assert.equal(count, 2, 'one byte at a time');
});

test('StunStreamDecoder.pushUntilOne stops after one message and leaves application bytes untouched', () => {
  const { first, second } = twoMessageStream();
  const dec = new StunStreamDecoder();
  assert.equal(dec.pushUntilOne(first.subarray(0, 10)), undefined);
  assert.equal(dec.buffered, 10);
  const msg = dec.pushUntilOne(Buffer.concat([first.subarray(10), APP_BYTES]));
  assert.ok(msg);
  assert.equal(msg.method, Method.Register);
  assert.equal(dec.buffered, APP_BYTES.length);
  assert.deepEqual(dec.takeRemainder(), APP_BYTES); // 'H' = 0x48 is not STUN, but was never parsed
  assert.equal(dec.buffered, 0);
  assert.equal(dec.takeRemainder().length, 0);
  // A following STUN message is left alone too, and returned by the next call.
  const dec2 = new StunStreamDecoder();
  assert.equal(dec2.pushUntilOne(Buffer.concat([first, second]))?.method, Method.Register);
  assert.equal(dec2.buffered, second.length);
  assert.equal(dec2.pushUntilOne(new Uint8Array(0))?.method, Method.Binding);
  assert.equal(dec2.buffered, 0);
});

test('StunStreamDecoder rejects garbage as soon as it cannot be STUN', () => {
  assertMalformed(() => new StunStreamDecoder().push(APP_BYTES.subarray(0, 1)), /two most significant bits/);
  // First bits fine, cookie wrong: rejected with the 20-byte header present, before any body arrives.
  const badCookie = mutate(BINDING_REQUEST.subarray(0, HEADER_LENGTH), (b) => b.writeUInt32BE(0x12345678, 4));
  assertMalformed(() => new StunStreamDecoder().push(badCookie), /magic cookie/);
  assertMalformed(() => new StunStreamDecoder().push(badCookie.subarray(0, 5)), /magic cookie/);
  // Over-long length: rejected from the length field alone.
  const huge = hex('00 01 ff f0');
  assertMalformed(() => new StunStreamDecoder().push(huge), /exceeds the 4096-byte limit/);
  assertMalformed(() => new StunStreamDecoder().push(hex('00 01 00 0d')), /multiple of 4/);
  // A larger limit can be configured.
  const big = new StunStreamDecoder(8192);
  assert.deepEqual(big.push(hex('00 01 1f ec 21 12 a4 42')), []); // 20 + 0x1fec = 8192
  assert.equal(big.buffered, 8);
  assertMalformed(() => new StunStreamDecoder(8192).push(hex('00 01 1f f0')), /exceeds the 8192-byte limit/);
  // A bad FINGERPRINT on a complete message.
  assertMalformed(() => new StunStreamDecoder().push(mutate(BINDING_REQUEST_FP, (b) => (b[b.length - 1] ^= 1))), /FINGERPRINT/);
  // Garbage after a good message is rejected by push.
  const dec = new StunStreamDecoder();
  assertMalformed(() => dec.push(Buffer.concat([BINDING_REQUEST, APP_BYTES])), /not STUN/);
  assert.equal(dec.buffered, APP_BYTES.length);
});

test('decodeDatagram: the message, or undefined for stray, truncated or corrupted bytes (never throws)', () => {
  const good = encodeMessage(StunMessage.request(Method.Binding), { fingerprint: true });
  const decoded = decodeDatagram(good);
  assert.equal(decoded?.method, Method.Binding);
  assert.equal(decodeDatagram(Buffer.from('GET / HTTP/1.1\r\n\r\n')), undefined);
  assert.equal(decodeDatagram(good.subarray(0, good.length - 4)), undefined);
  const corrupted = Buffer.from(good);
  corrupted[corrupted.length - 1] ^= 0xff; // FINGERPRINT no longer matches
  assert.equal(decodeDatagram(corrupted), undefined);
});
