/** MAPPED-ENDPOINT: the port mapping a recipient registers, in bytes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttrType, Method, StunMessage, addMappedEndpoint, attributeName, decodeMessage, encodeMessage, getMappedEndpoint } from '../../src/wire/index.js';
import { StrategyCode, strategyName } from '../../src/nat/strategy.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');

test('MAPPED-ENDPOINT is type 0x4e18 (comprehension-required), named for errors; path portmap is strategy code 8', () => {
  assert.equal(AttrType.MappedEndpoint, 0x4e18);
  assert.equal(attributeName(AttrType.MappedEndpoint), 'MAPPED-ENDPOINT');
  assert.equal(StrategyCode.portmap, 8);
  assert.equal(strategyName(8), 'portmap');
});

test('MAPPED-ENDPOINT 203.0.113.7:40000 encodes as an XOR address', () => {
  const message = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  addMappedEndpoint(message, { family: 'IPv4', address: '203.0.113.7', port: 40000 });
  const bytes = encodeMessage(message);
  // 40000 = 0x9c40 ^ 0x2112 = 0xbd52; cb007107 ^ 2112a442 = ea12d545
  assert.deepEqual(Buffer.from(bytes.subarray(20)), hex('4e18 0008 0001 bd52 ea12d545'));
  assert.deepEqual(getMappedEndpoint(decodeMessage(bytes)), { family: 'IPv4', address: '203.0.113.7', port: 40000 });
});

test('a Register without MAPPED-ENDPOINT has none; a truncated or repeated one is malformed and names MAPPED-ENDPOINT', () => {
  const message = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  assert.equal(getMappedEndpoint(message), undefined);
  message.add(AttrType.MappedEndpoint, hex('0001 bd52 ea12'));
  assert.throws(() => getMappedEndpoint(message), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /MAPPED-ENDPOINT/.test(err.message));
  const twice = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  addMappedEndpoint(twice, { family: 'IPv4', address: '203.0.113.7', port: 40000 });
  addMappedEndpoint(twice, { family: 'IPv4', address: '203.0.113.7', port: 40001 });
  assert.throws(() => getMappedEndpoint(decodeMessage(encodeMessage(twice))), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /MAPPED-ENDPOINT/.test(err.message));
});
