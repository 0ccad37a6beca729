/**
 * Path `socks5-bind` on the wire and in the broker's plan: BOUND-ENDPOINT (0x4e19) in bytes,
 * strategy code 9, and the plan (nat/plan.ts, broker/schedule.ts): first when the recipient
 * registered the address its SOCKS5 proxy bound, the initiator aimed there (an unspecified
 * address standing for the recipient's public one), the recipient told whom to take, and
 * not planned when the bound address is another host's. Pure: no sockets.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scheduleAttempt, type AttemptSide, type Failures } from '../../src/broker/schedule.js';
import { planStrategies } from '../../src/nat/plan.js';
import { StrategyCode, strategyName } from '../../src/nat/strategy.js';
import { unusableStrategies } from '../../src/peer/dialer.js';
import { socks5Dialer } from '../../src/peer/socks5.js';
import { AttrType, Method, StunMessage, addBoundEndpoint, attributeName, decodeMessage, encodeMessage, getBoundEndpoint } from '../../src/wire/index.js';
import type { TransportAddress } from '../../src/wire/types.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TID = hex('00 01 02 03 04 05 06 07 08 09 0a 0b');
const at = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
const NOW = 1_000_000;
const fresh: Failures = { history: [], claimed: new Set(), budget: 100 };
const rtts = { initiatorMs: 10, recipientMs: 10 };

/** A side behind a random-symmetric NAT (two probes, two ports). */
const randomNat = (address: string): AttemptSide => ({ publicEndpoint: at(address, 40_000), privateEndpoints: [at('10.0.0.2', 5000)], probes: [at(address, 51_234)] });
/** A recipient registered through a SOCKS5 proxy: no probes (its sockets are the proxy's), its proxy's address as public. */
const proxied = (address: string, bound?: TransportAddress): AttemptSide => ({
  publicEndpoint: at(address, 33_000),
  privateEndpoints: [],
  probes: [],
  ...(bound === undefined ? {} : { boundEndpoint: bound }),
});

test('BOUND-ENDPOINT is type 0x4e19, named for errors; path socks5-bind is strategy code 9', () => {
  assert.equal(AttrType.BoundEndpoint, 0x4e19);
  assert.equal(attributeName(AttrType.BoundEndpoint), 'BOUND-ENDPOINT');
  assert.equal(StrategyCode['socks5-bind'], 9);
  assert.equal(strategyName(9), 'socks5-bind');
});

test('BOUND-ENDPOINT 203.0.113.7:40000 and the unspecified 0.0.0.0:41000 encode as XOR addresses', () => {
  const message = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  addBoundEndpoint(message, at('203.0.113.7', 40000));
  const bytes = encodeMessage(message);
  // 40000 = 0x9c40 ^ 0x2112 = 0xbd52; cb007107 ^ 2112a442 = ea12d545
  assert.deepEqual(Buffer.from(bytes.subarray(20)), hex('4e19 0008 0001 bd52 ea12d545'));
  assert.deepEqual(getBoundEndpoint(decodeMessage(bytes)), at('203.0.113.7', 40000));
  const unspecified = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  addBoundEndpoint(unspecified, at('0.0.0.0', 41000));
  // 41000 = 0xa028 ^ 0x2112 = 0x813a; 00000000 ^ 2112a442 = 2112a442
  assert.deepEqual(Buffer.from(encodeMessage(unspecified).subarray(20)), hex('4e19 0008 0001 813a 2112a442'));
});

test('a Register without BOUND-ENDPOINT has none; a truncated or repeated one is malformed and names BOUND-ENDPOINT', () => {
  const message = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  assert.equal(getBoundEndpoint(message), undefined);
  message.add(AttrType.BoundEndpoint, hex('0001 bd52 ea12'));
  assert.throws(() => getBoundEndpoint(message), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /BOUND-ENDPOINT/.test(err.message));
  const twice = new StunMessage({ method: Method.Register, cls: 0, transactionId: TID });
  addBoundEndpoint(twice, at('203.0.113.7', 40000));
  addBoundEndpoint(twice, at('203.0.113.7', 40001));
  assert.throws(() => getBoundEndpoint(decodeMessage(encodeMessage(twice))), (err: Error & { code?: string }) => err.code === 'ERR_STUN_MALFORMED' && /BOUND-ENDPOINT/.test(err.message));
});

test('a proxied recipient facing a random NAT is relayed, unless it holds a BIND: then socks5-bind comes first', () => {
  const without = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: proxied('203.0.113.9') }, rtts, fresh, NOW);
  assert.equal(without.plan.includes('socks5-bind'), false);
  const bound = at('203.0.113.9', 41_000);
  const schedule = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: proxied('203.0.113.9', bound) }, rtts, fresh, NOW);
  assert.equal(schedule.plan[0], 'socks5-bind');
  assert.equal(schedule.strategy, 'socks5-bind');
  assert.deepEqual(schedule.answers.initiator.peerPublicEndpoint, bound, 'the initiator dials the bound address');
  assert.deepEqual(schedule.answers.recipient.peerPublicEndpoint, at('198.51.100.7', 40_000), 'the recipient knows whom to take');
  assert.equal(schedule.cost, 0, 'one connection: a cheap strategy');
});

test('an unspecified bound address stands for the recipient\'s public one (the proxy\'s, as the broker saw it)', () => {
  const schedule = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: proxied('203.0.113.9', at('0.0.0.0', 41_000)) }, rtts, fresh, NOW);
  assert.equal(schedule.strategy, 'socks5-bind');
  assert.deepEqual(schedule.answers.initiator.peerPublicEndpoint, at('203.0.113.9', 41_000));
});

test('a bound address on another host than the recipient\'s public one, or port 0, is not planned (no aiming initiators at strangers)', () => {
  for (const bound of [at('192.0.2.66', 41_000), at('203.0.113.9', 0)]) {
    const schedule = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: proxied('203.0.113.9', bound) }, rtts, fresh, NOW);
    assert.equal(schedule.plan.includes('socks5-bind'), false, JSON.stringify(bound));
  }
});

test('after socks5-bind failed (scheduled here, and claimed), the next strategy runs aimed at the public endpoint', () => {
  const failed: Failures = { history: [{ strategy: 'socks5-bind', at: NOW - 1_000 }], claimed: new Set(['socks5-bind']), budget: 100 };
  const schedule = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: proxied('203.0.113.9', at('203.0.113.9', 41_000)) }, rtts, failed, NOW);
  assert.notEqual(schedule.strategy, 'socks5-bind');
  assert.deepEqual(schedule.failed, ['socks5-bind']);
  assert.deepEqual(schedule.answers.initiator.peerPublicEndpoint, at('203.0.113.9', 33_000));
});

test('only the recipient\'s BIND counts, and it goes first, before lan; a proxied initiator may still run it', () => {
  const none = { kind: 'random' } as const;
  assert.deepEqual(planStrategies({ mapping: none, publicAddress: 'a', bound: true }, { mapping: none, publicAddress: 'b' }), ['relay']);
  assert.deepEqual(planStrategies({ mapping: none, publicAddress: 'a' }, { mapping: none, publicAddress: 'b', bound: true }), ['socks5-bind', 'relay']);
  assert.deepEqual(planStrategies({ mapping: none, publicAddress: 'a' }, { mapping: none, publicAddress: 'a', bound: true }).slice(0, 2), ['socks5-bind', 'lan']);
  const unusable = unusableStrategies(socks5Dialer({ host: '127.0.0.1', port: 1080 }));
  assert.equal(unusable.includes('socks5-bind'), false, 'connecting to the bound address through CONNECT works');
  assert.equal(unusable.includes('direct'), true);
});
