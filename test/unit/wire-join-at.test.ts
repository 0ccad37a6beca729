/** JOIN-AT: the broker a relayed ConnectionRequest asks the recipient to join at, in bytes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttrType, Method, StunMessage, addJoinAt, attributeName, decodeMessage, encodeMessage, getJoinAt } from '../../src/wire/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');

test('JOIN-AT is type 0x4e17 (comprehension-required), named for errors', () => {
  assert.equal(AttrType.JoinAt, 0x4e17);
  assert.equal(attributeName(AttrType.JoinAt), 'JOIN-AT');
});

test('JOIN-AT 192.0.2.10:3478 encodes as an XOR address (port ^ 0x2112, address ^ the magic cookie)', () => {
  const message = new StunMessage({ method: Method.ConnectionRequest, cls: 0, transactionId: TID });
  addJoinAt(message, { family: 'IPv4', address: '192.0.2.10', port: 3478 });
  const bytes = encodeMessage(message);
  // header (20) + attribute header 4e17 0008 + 00 01 | 0d96^2112=2c84 | c000020a^2112a442=e112a648
  assert.deepEqual(Buffer.from(bytes.subarray(20)), hex('4e17 0008 0001 2c84 e112a648'));
  assert.deepEqual(getJoinAt(decodeMessage(bytes)), { family: 'IPv4', address: '192.0.2.10', port: 3478 });
});

test('JOIN-AT with an IPv6 broker is XORed with the cookie and the transaction ID', () => {
  const message = new StunMessage({ method: Method.ConnectionRequest, cls: 0, transactionId: TID });
  addJoinAt(message, { family: 'IPv6', address: '2001:db8::1', port: 3478 });
  const bytes = encodeMessage(message);
  // 2001:0db8:0000...0001 ^ 2112a442 000102030405060708090a0b
  assert.deepEqual(Buffer.from(bytes.subarray(20)), hex('4e17 0014 0002 2c84 0113a9fa 00010203 04050607 0809 0a0a'));
  assert.deepEqual(getJoinAt(decodeMessage(bytes)), { family: 'IPv6', address: '2001:db8::1', port: 3478 });
});

test('a message without JOIN-AT has none; a truncated one is malformed and names JOIN-AT', () => {
  const message = new StunMessage({ method: Method.ConnectionRequest, cls: 0, transactionId: TID });
  assert.equal(getJoinAt(message), undefined);
  message.add(AttrType.JoinAt, hex('0001 2c84 e112'));
  assert.throws(() => getJoinAt(message), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /JOIN-AT/.test(err.message));
});
