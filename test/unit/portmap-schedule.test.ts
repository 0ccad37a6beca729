/**
 * Path `portmap` in the broker's plan (nat/plan.ts, broker/schedule.ts): first when the
 * recipient registered a mapping of its gateway, the initiator aimed at the mapped endpoint,
 * the recipient told the initiator's public endpoint (to take its connection), and the usual
 * plan when the mapping failed or cannot be reached from outside. Pure: no sockets.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scheduleAttempt, type AttemptSide, type Failures } from '../../src/broker/schedule.js';
import { planStrategies } from '../../src/nat/plan.js';
import type { TransportAddress } from '../../src/wire/types.js';

const at = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
const NOW = 1_000_000;
const fresh: Failures = { history: [], claimed: new Set(), budget: 100 };
const rtts = { initiatorMs: 10, recipientMs: 10 };

/** A side behind a random-symmetric NAT (two probes, two ports). */
const randomNat = (address: string): AttemptSide => ({ publicEndpoint: at(address, 40_000), privateEndpoints: [at('10.0.0.2', 5000)], probes: [at(address, 51_234)] });
/** A side behind an endpoint-independent NAT. */
const coneNat = (address: string, mapped?: TransportAddress): AttemptSide => ({
  publicEndpoint: at(address, 40_000),
  privateEndpoints: [at('192.168.1.2', 6000)],
  probes: [at(address, 40_000)],
  ...(mapped === undefined ? {} : { mappedEndpoint: mapped }),
});

test('a random NAT facing a random NAT is relayed, unless the recipient holds a mapping: then portmap comes first', () => {
  const without = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: randomNat('203.0.113.9') }, rtts, fresh, NOW);
  assert.deepEqual(without.plan, ['relay']);
  const mapped = at('203.0.113.9', 40_123);
  const recipient = { ...randomNat('203.0.113.9'), mappedEndpoint: mapped };
  const schedule = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient }, rtts, fresh, NOW);
  assert.deepEqual(schedule.plan, ['portmap', 'relay']);
  assert.equal(schedule.strategy, 'portmap');
  assert.deepEqual(schedule.answers.initiator.peerPublicEndpoint, mapped, 'the initiator dials the mapped endpoint');
  assert.deepEqual(schedule.answers.recipient.peerPublicEndpoint, at('198.51.100.7', 40_000), 'the recipient knows whom to take');
  assert.equal(schedule.cost, 0, 'one connection: a cheap strategy');
});

test('portmap goes before direct against a cone, and after lan when both share one NAT', () => {
  const mapped = at('203.0.113.9', 40_123);
  const cone = scheduleAttempt({ initiator: coneNat('198.51.100.7'), recipient: coneNat('203.0.113.9', mapped) }, rtts, fresh, NOW);
  assert.deepEqual(cone.plan, ['portmap', 'direct', 'public', 'relay']);
  const sameNat = scheduleAttempt({ initiator: coneNat('203.0.113.9'), recipient: coneNat('203.0.113.9', mapped) }, rtts, fresh, NOW);
  assert.equal(sameNat.plan[0], 'lan');
  assert.equal(sameNat.plan[1], 'portmap');
});

test('after portmap failed (scheduled here, and claimed), the next strategy runs with the usual answers', () => {
  const mapped = at('203.0.113.9', 40_123);
  const failed: Failures = { history: [{ strategy: 'portmap', at: NOW - 1_000 }], claimed: new Set(['portmap']), budget: 100 };
  const schedule = scheduleAttempt({ initiator: coneNat('198.51.100.7'), recipient: coneNat('203.0.113.9', mapped) }, rtts, failed, NOW);
  assert.equal(schedule.strategy, 'direct');
  assert.deepEqual(schedule.failed, ['portmap']);
  assert.deepEqual(schedule.answers.initiator.peerPublicEndpoint, at('203.0.113.9', 40_000), 'direct aims at the public endpoint, not the mapping');
});

test('a mapping on another address than the recipient\'s public one (a gateway behind carrier-grade NAT) is not planned', () => {
  const behindCgn = { ...randomNat('203.0.113.9'), mappedEndpoint: at('100.64.0.5', 40_123) };
  const schedule = scheduleAttempt({ initiator: randomNat('198.51.100.7'), recipient: behindCgn }, rtts, fresh, NOW);
  assert.deepEqual(schedule.plan, ['relay']);
});

test('only the recipient\'s mapping counts: an initiator\'s is ignored by the planner', () => {
  const none = { kind: 'random' } as const;
  assert.deepEqual(planStrategies({ mapping: none, publicAddress: 'a', mapped: true }, { mapping: none, publicAddress: 'b' }), ['relay']);
  assert.deepEqual(planStrategies({ mapping: none, publicAddress: 'a' }, { mapping: none, publicAddress: 'b', mapped: true }), ['portmap', 'relay']);
});
