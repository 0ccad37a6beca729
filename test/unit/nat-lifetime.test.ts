/**
 * The mapping-lifetime measurement (nat/lifetime.ts, nat/lifetime-search.ts) against a
 * simulated NAT on a fake clock: the search converges within the promised precision and
 * time, with bounded sockets and packets, never refreshes a mapping under test, and
 * reports a server without RESPONSE-PORT and an abort clearly.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { measureMappingLifetime, type LifetimeProbeEvent } from '../../src/nat/lifetime.js';
import { firstRound, nextRound, recordProbe, searchEnd, searchSettings, EMPTY_BRACKET } from '../../src/nat/lifetime-search.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { FakeNat, runClock } from '../helpers/fake-nat.js';

/** Fake time allowed for one measurement: the brief's "about 1-2 minutes", with room. */
const LIMIT_MS = 5 * 60_000;

async function measure(lifetimeMs: number, extra: { dropSends?: number[] } = {}) {
  const clock = new FakeClock(0);
  const nat = new FakeNat(clock, { lifetimeMs, ...extra });
  const probes: LifetimeProbeEvent[] = [];
  const result = await runClock(clock, measureMappingLifetime({ io: nat.io, clock, onProbe: (e) => probes.push(e) }), LIMIT_MS);
  return { result, nat, probes, clock };
}

describe('mapping lifetime search (pure)', () => {
  test('the first round spreads at most maxProbes silences from minMs to maxMs, neighbours at most a factor 2 apart', () => {
    const s = searchSettings();
    const first = firstRound(s);
    assert.deepEqual(first, [5_000, 9_400, 17_800, 33_700, 63_600, 120_000]);
    for (let i = 1; i < first.length; i++) assert.ok((first[i] as number) / (first[i - 1] as number) <= 2);
    assert.equal(firstRound(searchSettings({ maxProbes: 3 })).length, 3);
  });

  test('refining rounds split the bracket; the search stops once it is narrow, or every mapping lived, or none did', () => {
    const s = searchSettings();
    let b = { ...EMPTY_BRACKET, rounds: 1 };
    b = recordProbe(recordProbe(b, 17_800, true), 33_700, false);
    assert.equal(searchEnd(b, s), undefined);
    assert.deepEqual(nextRound(b, s), [21_000, 24_200, 27_300, 30_500]);
    b = { ...recordProbe(recordProbe(b, 27_300, true), 30_500, false), rounds: 2 };
    assert.equal(searchEnd(b, s), 'precise');
    assert.equal(searchEnd({ aliveMs: 120_000, deadMs: undefined, rounds: 1 }, s), 'at-least');
    assert.equal(searchEnd({ aliveMs: 0, deadMs: 5_000, rounds: 1 }, s), 'below');
  });

  test('bad options are refused, naming the field', () => {
    assert.throws(() => searchSettings({ minMs: 0 }), /minMs must be a positive integer, got 0/);
    assert.throws(() => searchSettings({ minMs: 10_000, maxMs: 5_000 }), /maxMs \(5000\) must be more than minMs \(10000\)/);
    assert.throws(() => searchSettings({ maxProbes: 1 }), /maxProbes must be at least 2/);
    assert.throws(() => searchSettings({ precision: -1 }), /precision must be a positive number/);
  });
});

describe('measureMappingLifetime on a simulated NAT (fake clock)', () => {
  test('a 30 s lifetime is known within 20% in under 2 minutes, with at most 7 sockets open', async () => {
    const { result, nat } = await measure(30_000);
    assert.equal(result.end, 'precise');
    assert.ok(result.lifetimeMs <= 30_000 && result.lifetimeMs >= 24_000, `measured ${result.lifetimeMs} ms`);
    assert.ok(result.upperMs !== undefined && result.upperMs >= 30_000, `upper ${result.upperMs}`);
    assert.ok(result.elapsedMs <= 120_000, `took ${result.elapsedMs} ms`);
    assert.ok(nat.maxOpen <= 7, `${nat.maxOpen} sockets open at once`);
    assert.equal(nat.open, 0, 'every socket closed');
    assert.ok(result.packets <= 2 * 3 * result.probes, `${result.packets} packets for ${result.probes} probes`);
  });

  test('a socket under test sends exactly one datagram: nothing refreshes its mapping during the silence', async () => {
    const { nat, result } = await measure(30_000);
    const [y, ...xs] = nat.mappings;
    assert.ok(y !== undefined && xs.length === result.probes);
    for (const x of xs) assert.equal(x.sends.length, 1, `an X socket sent at ${x.sends.join(', ')}`);
  });

  for (const lifetimeMs of [7_000, 12_000, 45_000, 100_000]) {
    test(`a ${lifetimeMs / 1000} s lifetime is bracketed within 15%`, async () => {
      const { result, probes } = await measure(lifetimeMs);
      assert.equal(result.end, 'precise', JSON.stringify(result));
      assert.ok(result.lifetimeMs <= lifetimeMs && result.lifetimeMs >= lifetimeMs * 0.85, `measured ${result.lifetimeMs} ms`);
      // Every probe told the truth.
      for (const p of probes) assert.equal(p.alive, p.silenceMs < lifetimeMs, JSON.stringify(p));
    });
  }

  test('a mapping that outlives the longest silence is reported as "at least"; one shorter than the shortest as "below"', async () => {
    const long = await measure(10 * 60_000);
    assert.equal(long.result.end, 'at-least');
    assert.equal(long.result.lifetimeMs, 120_000);
    assert.equal(long.result.upperMs, undefined);
    const short = await measure(3_000);
    assert.equal(short.result.end, 'below');
    assert.equal(short.result.lifetimeMs, 0);
  });

  test('a lost request is sent again: the result does not change', async () => {
    const clean = await measure(30_000);
    // Datagram 1 is the first X's Binding; 8 is among the first round's later sends.
    const lossy = await measure(30_000, { dropSends: [1, 8] });
    assert.equal(lossy.result.lifetimeMs, clean.result.lifetimeMs);
    assert.equal(lossy.result.packets, clean.result.packets + 2);
  });

  test('a server that ignores RESPONSE-PORT: ERR_PROTOCOL naming it, every socket closed', async () => {
    const clock = new FakeClock(0);
    const nat = new FakeNat(clock, { lifetimeMs: 30_000, ignoreResponsePort: true });
    await assert.rejects(runClock(clock, measureMappingLifetime({ io: nat.io, clock }), LIMIT_MS), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_PROTOCOL');
      assert.match(err.message, /does not support RESPONSE-PORT/);
      return true;
    });
    assert.equal(nat.open, 0);
  });

  test('abort: ERR_ABORTED at once, every socket closed, no timer left', async () => {
    const clock = new FakeClock(0);
    const nat = new FakeNat(clock, { lifetimeMs: 30_000 });
    const controller = new AbortController();
    const running = measureMappingLifetime({ io: nat.io, clock, signal: controller.signal });
    await clock.advance(10_000);
    controller.abort();
    await assert.rejects(running, { code: 'ERR_ABORTED' });
    assert.equal(nat.open, 0);
    assert.equal(clock.pending, 0);
  });

  test('no answer at all: ERR_BROKER_UNREACHABLE', async () => {
    const clock = new FakeClock(0);
    const nat = new FakeNat(clock, { lifetimeMs: 30_000, dropSends: Array.from({ length: 100 }, (_, i) => i + 1) });
    await assert.rejects(runClock(clock, measureMappingLifetime({ io: nat.io, clock }), LIMIT_MS), { code: 'ERR_BROKER_UNREACHABLE' });
    assert.equal(nat.open, 0);
  });
});
