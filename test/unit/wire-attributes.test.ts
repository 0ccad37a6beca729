/** Each attribute family's bytes, the message-type interleaving, and the StunMessage model. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SocketAddress } from 'node:net';
import { NattravError } from '../../src/errors.js';
import {
  AttrType,
  MessageClass,
  Method,
  StunMessage,
  addAttemptId,
  addAddress,
  addUri,
  decodeAddress,
  decodeChangeRequest,
  decodeErrorCode,
  decodeMessage,
  decodeMessageType,
  decodePadding,
  decodeResponsePort,
  decodeText,
  decodeU32,
  decodeUnknownAttributes,
  decodeXorAddress,
  encodeAddress,
  encodeChangeRequest,
  encodeErrorCode,
  encodeMessage,
  encodeMessageType,
  encodePadding,
  encodeResponsePort,
  encodeText,
  encodeU32,
  encodeUnknownAttributes,
  encodeXorAddress,
  formatIPv6,
  getAttemptId,
  getChangeRequest,
  getMappedAddress,
  getOtherAddress,
  getResponseOrigin,
  getResponsePort,
  newTransactionId,
  unknownComprehensionRequired,
  type TransportAddress,
} from '../../src/wire/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const bytes = (v: Uint8Array): Buffer => Buffer.from(v);
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');

function assertCode(fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof NattravError, `expected NattravError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}
const malformed = (fn: () => unknown, pattern?: RegExp): void => assertCode(fn, 'ERR_STUN_MALFORMED', pattern);
const invalid = (fn: () => unknown, pattern?: RegExp): void => assertCode(fn, 'ERR_INVALID_ARGUMENT', pattern);

test('message type interleaving (RFC 8489 §5) against known values', () => {
  const cases: Array<[number, (typeof MessageClass)[keyof typeof MessageClass], number]> = [
    [Method.Binding, MessageClass.Request, 0x0001],
    [Method.Binding, MessageClass.Indication, 0x0011],
    [Method.Binding, MessageClass.SuccessResponse, 0x0101],
    [Method.Binding, MessageClass.ErrorResponse, 0x0111],
    // 0xE01 = 0b1110_0000_0001: M11-M7 = 11100 -> bits 13-9 = 0x3800; M3-M0 = 1.
    [Method.Register, MessageClass.Request, 0x3801],
    [Method.Register, MessageClass.Indication, 0x3811],
    [Method.Register, MessageClass.SuccessResponse, 0x3901],
    [Method.Register, MessageClass.ErrorResponse, 0x3911],
    [Method.Hello, MessageClass.Indication, 0x3816],
    // TURN Allocate 0x003 and ChannelBind 0x009 (RFC 8656 §17): 0x0003, 0x0113, 0x0009.
    [0x003, MessageClass.Request, 0x0003],
    [0x003, MessageClass.ErrorResponse, 0x0113],
    // 0x0F0: M6-M4 = 111 -> bits 7-5 = 0xE0, M7 = 1 -> bit 9 = 0x200.
    [0x0f0, MessageClass.Request, 0x02e0],
    [0xfff, MessageClass.ErrorResponse, 0x3fff],
  ];
  for (const [method, cls, type] of cases) {
    assert.equal(encodeMessageType(method, cls), type, `method 0x${method.toString(16)} class ${cls}`);
    assert.deepEqual(decodeMessageType(type), { method, cls });
  }
  malformed(() => decodeMessageType(0x4001), /two most significant bits/);
  invalid(() => encodeMessageType(0x1000, MessageClass.Request));
});

test('MAPPED-ADDRESS and XOR-MAPPED-ADDRESS bytes (RFC 8489 §14.1/14.2)', () => {
  const v4: TransportAddress = { family: 'IPv4', address: '192.0.2.1', port: 32853 };
  assert.deepEqual(bytes(encodeAddress(v4)), hex('00 01 80 55 c0 00 02 01'));
  assert.deepEqual(decodeAddress(hex('00 01 80 55 c0 00 02 01')), v4);
  assert.deepEqual(decodeAddress(hex('ff 01 80 55 c0 00 02 01')), v4, 'reserved byte ignored');
  const v6: TransportAddress = { family: 'IPv6', address: '2001:db8::1', port: 1 };
  assert.deepEqual(bytes(encodeAddress(v6)), hex('00 02 00 01 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01'));
  assert.deepEqual(bytes(encodeXorAddress(v6, TID)), hex('00 02 21 13 01 13 a9 fa 00 01 02 03 04 05 06 07 08 09 0a 0a'));
  for (const a of [v4, v6, { family: 'IPv6', address: '::', port: 0 }, { family: 'IPv4', address: '255.255.255.255', port: 65535 }] as const) {
    assert.deepEqual(decodeAddress(encodeAddress(a)), a);
    assert.deepEqual(decodeXorAddress(encodeXorAddress(a, TID), TID), a);
  }
  // Input forms are normalised on the way through.
  assert.equal(decodeAddress(encodeAddress({ family: 'IPv6', address: '2001:0DB8:0:0:0:0:0:0001', port: 1 })).address, '2001:db8::1');
  assert.equal(decodeAddress(encodeAddress({ family: 'IPv6', address: 'fe80::1%eth0', port: 1 })).address, 'fe80::1');
  assert.equal(decodeAddress(encodeAddress({ family: 'IPv6', address: '::ffff:7f00:1', port: 1 })).address, '::ffff:127.0.0.1');
  invalid(() => encodeAddress({ family: 'IPv4', address: '::1', port: 1 }), /not an IPv4 address/);
  invalid(() => encodeAddress({ family: 'IPv6', address: '1.2.3.4', port: 1 }), /not an IPv6 address/);
  invalid(() => encodeAddress({ family: 'IPv4', address: '1.2.3.4', port: 65536 }), /port/);
  invalid(() => encodeAddress({ family: 'IPv4', address: 'localhost', port: 1 }));
  invalid(() => encodeXorAddress(v4, new Uint8Array(11)), /transactionId/);
  malformed(() => decodeAddress(hex('00 01 00')), /MAPPED-ADDRESS is 3 bytes/);
  malformed(() => decodeAddress(hex('00 02 00 01 00 00 00 00')), /MAPPED-ADDRESS is IPv6 but 8 bytes/);
  malformed(() => decodeXorAddress(hex('00 00 00 01 00 00 00 00'), TID, 'OTHER'), /OTHER has unknown address family 0x00/);
});

test('IPv6 formatting matches Node (net.SocketAddress) for zero runs, mapped and compatible forms', () => {
  let checked = 0;
  // Every pattern of zero and non-zero groups (0xffff fillers give the IPv4-mapped forms), then special forms.
  for (let mask = 0; mask < 256; mask++) {
    for (const filler of [1, 0xabc, 0xffff]) {
      const b = Buffer.alloc(16);
      for (let g = 0; g < 8; g++) if (mask & (1 << g)) b.writeUInt16BE(filler, g * 2);
      assert.equal(formatIPv6(b), new SocketAddress({ address: formatIPv6(b), family: 'ipv6' }).address);
      const full = [...Array(8).keys()].map((g) => b.readUInt16BE(g * 2).toString(16)).join(':');
      assert.equal(formatIPv6(b), new SocketAddress({ address: full, family: 'ipv6' }).address, full);
      checked++;
    }
  }
  for (const text of ['::ffff:1.2.3.4', '::1.2.3.4', '::ffff:0:0', '::ffff:0:1', '0:0:0:0:0:1:0:0', '1:0:0:2:0:0:0:3', '1:0:0:2:0:0:3:4', 'ffff::', '::ffff']) {
    const b = encodeAddress({ family: 'IPv6', address: text, port: 0 }).subarray(4);
    assert.equal(formatIPv6(b), new SocketAddress({ address: text, family: 'ipv6' }).address, text);
  }
  assert.equal(checked, 256 * 3);
});

test('ERROR-CODE bytes (RFC 8489 §14.8)', () => {
  assert.deepEqual(bytes(encodeErrorCode({ code: 404, reason: 'Not Found' })), hex('00 00 04 04 4e 6f 74 20 46 6f 75 6e 64'));
  assert.deepEqual(bytes(encodeErrorCode({ code: 699, reason: '' })), hex('00 00 06 63'));
  assert.deepEqual(decodeErrorCode(hex('00 00 03 00')), { code: 300, reason: '' });
  assert.deepEqual(decodeErrorCode(hex('ff ff fc 14 c3 a9')), { code: 420, reason: '\u00e9' }, 'reserved bits ignored');
  invalid(() => encodeErrorCode({ code: 299, reason: '' }), /300 to 699/);
  invalid(() => encodeErrorCode({ code: 700, reason: '' }));
  invalid(() => encodeErrorCode({ code: 400, reason: 'x'.repeat(764) }), /at most 763/);
  malformed(() => decodeErrorCode(hex('00 00 04 04' + '41'.repeat(764))), /reason phrase is 764 bytes/);
});

test('text attributes: UTF-8, limits, BOM kept', () => {
  assert.deepEqual(bytes(encodeText('\u30DE', 10, 'USERNAME')), hex('e3 83 9e'));
  assert.equal(decodeText(hex('ef bb bf 61'), 10, 'SOFTWARE'), '\ufeffa');
  invalid(() => encodeText('abc', 2, 'SOFTWARE'), /SOFTWARE is 3 bytes of UTF-8; shorten it to at most 2/);
  malformed(() => decodeText(hex('c0 80'), 10, 'REALM'), /REALM is not valid UTF-8/);
  malformed(() => decodeText(hex('61 62 63'), 2, 'NONCE'), /NONCE is 3 bytes/);
});

test('UNKNOWN-ATTRIBUTES, CHANGE-REQUEST, RESPONSE-PORT, PADDING, u32 bytes', () => {
  assert.deepEqual(bytes(encodeUnknownAttributes([0x4e99, 0x0002, 0x7fff])), hex('4e 99 00 02 7f ff'));
  assert.deepEqual(decodeUnknownAttributes(hex('4e 99 00 02')), [0x4e99, 0x0002]);
  malformed(() => decodeUnknownAttributes(hex('4e 99 00')), /UNKNOWN-ATTRIBUTES length 3/);
  invalid(() => encodeUnknownAttributes([0x10000]));

  assert.deepEqual(bytes(encodeChangeRequest({ changeIp: true, changePort: true })), hex('00 00 00 06'));
  assert.deepEqual(bytes(encodeChangeRequest({ changeIp: true, changePort: false })), hex('00 00 00 04'));
  assert.deepEqual(bytes(encodeChangeRequest({ changeIp: false, changePort: true })), hex('00 00 00 02'));
  assert.deepEqual(decodeChangeRequest(hex('00 00 00 04')), { changeIp: true, changePort: false });
  malformed(() => decodeChangeRequest(hex('00 00 04')), /CHANGE-REQUEST is 3 bytes/);

  assert.deepEqual(bytes(encodeResponsePort(3478)), hex('0d 96 00 00'));
  assert.equal(decodeResponsePort(hex('0d 96 00 00')), 3478);
  malformed(() => decodeResponsePort(hex('0d 96')), /RESPONSE-PORT is 2 bytes/);
  invalid(() => encodeResponsePort(-1));

  assert.deepEqual(bytes(encodePadding(5)), hex('00 00 00 00 00'));
  assert.equal(decodePadding(hex('ff ff ff')), 3);

  assert.deepEqual(bytes(encodeU32(0xdeadbeef)), hex('de ad be ef'));
  assert.equal(decodeU32(hex('de ad be ef'), 'LIFETIME'), 0xdeadbeef);
  malformed(() => decodeU32(hex('00 00 00 00 00'), 'LIFETIME'), /LIFETIME is 5 bytes/);
  invalid(() => encodeU32(2 ** 32));
  invalid(() => encodeU32(1.5));
});

test('RFC 5780 accessors and nattrav adders', () => {
  const msg = StunMessage.request(Method.Binding, TID);
  addAddress(msg, AttrType.MappedAddress, { family: 'IPv4', address: '10.0.0.1', port: 1 });
  addAddress(msg, AttrType.OtherAddress, { family: 'IPv4', address: '10.0.0.2', port: 2 });
  addAddress(msg, AttrType.ResponseOrigin, { family: 'IPv6', address: '::1', port: 3 });
  msg.add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: false, changePort: true }));
  msg.add(AttrType.ResponsePort, encodeResponsePort(4000));
  const id = Buffer.alloc(16, 7);
  addAttemptId(msg, id);
  const d = decodeMessage(encodeMessage(msg, { fingerprint: true }));
  assert.deepEqual(getMappedAddress(d), { family: 'IPv4', address: '10.0.0.1', port: 1 });
  assert.deepEqual(getOtherAddress(d), { family: 'IPv4', address: '10.0.0.2', port: 2 });
  assert.deepEqual(getResponseOrigin(d), { family: 'IPv6', address: '::1', port: 3 });
  assert.deepEqual(getChangeRequest(d), { changeIp: false, changePort: true });
  assert.equal(getResponsePort(d), 4000);
  assert.deepEqual(bytes(getAttemptId(d)!), id);
  const empty = StunMessage.request(Method.Binding);
  for (const get of [getMappedAddress, getOtherAddress, getResponseOrigin, getChangeRequest, getResponsePort, getAttemptId]) {
    assert.equal(get(empty), undefined);
  }
  invalid(() => addAttemptId(empty, new Uint8Array(15)), /16 bytes/);
  invalid(() => addUri(empty, ''), /must not be empty/);
  invalid(() => addUri(empty, 'x'.repeat(513)), /at most 512/);
  malformed(() => getAttemptId(new StunMessage({ method: 1, cls: 0, attributes: [{ type: AttrType.AttemptId, value: new Uint8Array(17) }] })), /ATTEMPT-ID is 17 bytes/);
});

test('StunMessage model: responses, get/getAll/has, validation', () => {
  const req = StunMessage.request(Method.Join);
  assert.equal(req.transactionId.length, 12);
  assert.notDeepEqual(bytes(req.transactionId), bytes(StunMessage.request(Method.Join).transactionId));
  assert.equal(newTransactionId().length, 12);
  const ok = req.successResponse();
  assert.equal(ok.cls, MessageClass.SuccessResponse);
  assert.equal(ok.method, Method.Join);
  assert.equal(ok.transactionId, req.transactionId);
  assert.equal(ok.raw, undefined);
  invalid(() => ok.successResponse(), /only requests get responses/);
  invalid(() => StunMessage.indication(Method.Hello).errorResponse(400, 'x'));
  const m = StunMessage.indication(Method.Hello, TID).add(0x8001, hex('01')).add(0x8001, hex('02'));
  assert.equal(m.cls, MessageClass.Indication);
  assert.deepEqual(bytes(m.get(0x8001)!), hex('01'));
  assert.deepEqual(m.getAll(0x8001).map(bytes), [hex('01'), hex('02')]);
  assert.equal(m.has(0x8001), true);
  assert.equal(m.has(0x8002), false);
  assert.equal(m.get(0x8002), undefined);
  invalid(() => new StunMessage({ method: 1, cls: 0, transactionId: new Uint8Array(16) }), /transactionId must be 12 bytes/);
  invalid(() => new StunMessage({ method: 0x1000, cls: 0 }));
  invalid(() => m.add(0x10000, hex('00')));
  invalid(() => m.add(1, new Uint8Array(0x10000)));
  invalid(() => encodeMessage(StunMessage.request(1).add(AttrType.Fingerprint, hex('00000000'))), /FINGERPRINT is added by encodeMessage/);
  invalid(() => encodeMessage(StunMessage.request(1).add(AttrType.Padding, encodePadding(5000))), /over the 4096-byte limit/);
  invalid(() => encodeMessage(StunMessage.request(1), { paddingByte: 256 }));
});

test('unknownComprehensionRequired (RFC 8489 §6.3.1)', () => {
  const m = StunMessage.request(Method.Register, TID)
    .add(AttrType.Uri, hex('61'))
    .add(0x4e99, hex(''))
    .add(0x8099, hex(''))
    .add(0x4e99, hex(''))
    .add(0x0030, hex(''));
  assert.deepEqual(unknownComprehensionRequired(m, new Set([AttrType.Uri])), [0x4e99, 0x0030]);
  assert.deepEqual(unknownComprehensionRequired(m, new Set([AttrType.Uri, 0x4e99, 0x0030])), []);
});
