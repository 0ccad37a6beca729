/** INSTANCE-ID, TAKEOVER, INSTANCE-CHECK and PREVIOUS-SESSION (wire/instance.ts), in bytes. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { previousSessionMac, verifyPreviousSessionMac } from '../../src/security/previous-session.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import {
  addInstanceCheck, addInstanceId, addPreviousSession, addTakeover, getInstanceCheck, getInstanceId, getPreviousSession, hasTakeover,
} from '../../src/wire/instance.js';
import { StunMessage } from '../../src/wire/message.js';
import { attributeName } from '../../src/wire/names.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');
const MALFORMED = (name: string) => (err: Error & { code?: string }): boolean => err.code === 'ERR_STUN_MALFORMED' && err.message.includes(name);

function register(): StunMessage {
  return new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
}

test('the types are comprehension-optional (an older broker or peer ignores them) and named', () => {
  for (const [type, name] of [[AttrType.InstanceId, 'INSTANCE-ID'], [AttrType.Takeover, 'TAKEOVER'], [AttrType.InstanceCheck, 'INSTANCE-CHECK'], [AttrType.PreviousSession, 'PREVIOUS-SESSION']] as const) {
    assert.ok(type >= 0x8000, name);
    assert.equal(attributeName(type), name);
  }
});

test('INSTANCE-ID, TAKEOVER and INSTANCE-CHECK in bytes', () => {
  const message = register();
  addInstanceId(message, hex('000102030405060708090a0b0c0d0e0f'));
  addTakeover(message);
  addInstanceCheck(message, 'takenOver');
  const bytes = encodeMessage(message);
  assert.deepEqual(Buffer.from(bytes.subarray(20)), hex('ce02 0010 000102030405060708090a0b0c0d0e0f  ce03 0004 00000001  ce04 0004 00000002'));
  const decoded = decodeMessage(bytes);
  assert.deepEqual(getInstanceId(decoded), Uint8Array.from(hex('000102030405060708090a0b0c0d0e0f')));
  assert.equal(hasTakeover(decoded), true);
  assert.equal(getInstanceCheck(decoded), 'takenOver');
  assert.equal(hasTakeover(register()), false);
  assert.equal(getInstanceId(register()), undefined);
  assert.equal(getInstanceCheck(register()), undefined);
});

test('malformed values are refused naming the attribute', () => {
  const short = register().add(AttrType.InstanceId, hex('0001'));
  assert.throws(() => getInstanceId(short), MALFORMED('INSTANCE-ID'));
  assert.throws(() => addInstanceId(register(), hex('00')), (err: Error & { code?: string }) => err.code === 'ERR_INVALID_ARGUMENT');
  assert.throws(() => hasTakeover(register().add(AttrType.Takeover, hex('00000002'))), MALFORMED('TAKEOVER'));
  assert.throws(() => getInstanceCheck(register().add(AttrType.InstanceCheck, hex('00000009'))), MALFORMED('INSTANCE-CHECK'));
  assert.throws(() => getPreviousSession(register().add(AttrType.PreviousSession, Buffer.alloc(32))), MALFORMED('PREVIOUS-SESSION'));
});

test('PREVIOUS-SESSION carries the session ID then the MAC, and the MAC is bound to the key, the nonce and the URI', () => {
  const key = Buffer.alloc(32, 5);
  const nonce = hex('aabbccdd');
  const mac = previousSessionMac(key, nonce, 'nattrav://laptop');
  const message = register();
  addPreviousSession(message, { sessionId: hex('0102030405060708090a0b0c0d0e0f10'), mac });
  const bytes = encodeMessage(message);
  assert.deepEqual(Buffer.from(bytes.subarray(20, 24)), hex('ce05 0030'));
  const previous = getPreviousSession(decodeMessage(bytes));
  assert.deepEqual(previous?.sessionId, Uint8Array.from(hex('0102030405060708090a0b0c0d0e0f10')));
  assert.equal(verifyPreviousSessionMac(key, nonce, 'nattrav://laptop', previous?.mac ?? new Uint8Array()), true);
  assert.equal(verifyPreviousSessionMac(Buffer.alloc(32, 6), nonce, 'nattrav://laptop', mac), false, 'another key');
  assert.equal(verifyPreviousSessionMac(key, hex('aabbccde'), 'nattrav://laptop', mac), false, 'another nonce');
  assert.equal(verifyPreviousSessionMac(key, nonce, 'nattrav://other', mac), false, 'another URI');
});
