/** SECOND-FAMILY, FAMILY-ONLY and OTHER-FAMILY-BROKER (wire/family.ts), in bytes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AttrType,
  Method,
  StunErrorCode,
  StunMessage,
  addFamilyOnly,
  addOtherFamilyBroker,
  addSecondFamily,
  attributeName,
  decodeMessage,
  encodeMessage,
  getOtherFamilyBroker,
  hasFamilyOnly,
  hasSecondFamily,
} from '../../src/wire/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');
const message = (method: number): StunMessage => new StunMessage({ method, cls: 0, transactionId: TID });

test('the types: SECOND-FAMILY 0x4e20 and FAMILY-ONLY 0x4e21 comprehension-required, OTHER-FAMILY-BROKER 0xce20 optional; 476 refuses a family', () => {
  assert.equal(AttrType.SecondFamily, 0x4e20);
  assert.equal(AttrType.FamilyOnly, 0x4e21);
  assert.equal(AttrType.OtherFamilyBroker, 0xce20);
  assert.equal(StunErrorCode.NoRegistrationInFamily, 476);
  assert.equal(attributeName(AttrType.SecondFamily), 'SECOND-FAMILY');
  assert.equal(attributeName(AttrType.FamilyOnly), 'FAMILY-ONLY');
  assert.equal(attributeName(AttrType.OtherFamilyBroker), 'OTHER-FAMILY-BROKER');
});

test('SECOND-FAMILY and FAMILY-ONLY are u32 1; absent reads false; another value is malformed, named', () => {
  const register = addSecondFamily(message(Method.Register));
  assert.deepEqual(Buffer.from(encodeMessage(register).subarray(20)), hex('4e20 0004 00000001'));
  assert.equal(hasSecondFamily(decodeMessage(encodeMessage(register))), true);
  const connect = addFamilyOnly(message(Method.Connect));
  assert.deepEqual(Buffer.from(encodeMessage(connect).subarray(20)), hex('4e21 0004 00000001'));
  assert.equal(hasFamilyOnly(decodeMessage(encodeMessage(connect))), true);
  assert.equal(hasSecondFamily(connect), false);
  assert.equal(hasFamilyOnly(register), false);
  const bad = message(Method.Connect);
  bad.add(AttrType.FamilyOnly, hex('00000002'));
  assert.throws(() => hasFamilyOnly(bad), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /FAMILY-ONLY/.test(err.message));
  const short = message(Method.Register);
  short.add(AttrType.SecondFamily, hex('01'));
  assert.throws(() => hasSecondFamily(short), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /SECOND-FAMILY/.test(err.message));
});

test('OTHER-FAMILY-BROKER [2001:db8::1]:3478 is an XOR address (cookie and transaction ID); IPv4 too', () => {
  const answer = addOtherFamilyBroker(message(Method.Register), { family: 'IPv6', address: '2001:db8::1', port: 3478 });
  assert.deepEqual(Buffer.from(encodeMessage(answer).subarray(20)), hex('ce20 0014 0002 2c84 0113a9fa 00010203 04050607 0809 0a0a'));
  assert.deepEqual(getOtherFamilyBroker(decodeMessage(encodeMessage(answer))), { family: 'IPv6', address: '2001:db8::1', port: 3478 });
  const v4 = addOtherFamilyBroker(message(Method.Register), { family: 'IPv4', address: '192.0.2.10', port: 3478 });
  assert.deepEqual(Buffer.from(encodeMessage(v4).subarray(20)), hex('ce20 0008 0001 2c84 e112a648'));
  assert.equal(getOtherFamilyBroker(message(Method.Register)), undefined);
});
