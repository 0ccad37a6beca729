/**
 * Adaptive keepalive (peer/adaptive-keepalive.ts): the interval a measured lifetime gives
 * (80%, never below 5 s, never above the maximum nor half the granted lifetime), what the
 * adapter does on each registration (measures once per public address in the background,
 * remembers, resets when the NAT forgot sooner), the options, and one real server on
 * loopback whose refreshes ask the broker for the adapted lifetime.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import type { MappingLifetime } from '../../src/nat/lifetime.js';
import {
  KeepaliveAdapter,
  LifetimeMemory,
  adaptiveKeepaliveSettings,
  MEASURE_RETRY_MAX_MS,
  MEASURE_RETRY_MIN_MS,
  keepaliveFromLifetime,
  measureCeilingMs,
  type KeepaliveEvent,
} from '../../src/peer/adaptive-keepalive.js';
import type { RegisteredEvent } from '../../src/peer/registration.js';
import { toTransportAddress } from '../../src/common/endpoint.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { startRecipient, startWatchedBroker, until } from '../helpers/loopback.js';

const lifetime = (lifetimeMs: number, upperMs?: number): MappingLifetime => ({
  lifetimeMs,
  ...(upperMs === undefined ? {} : { upperMs }),
  end: upperMs === undefined ? 'at-least' : 'precise',
  probes: 10,
  packets: 20,
  elapsedMs: 70_000,
});

describe('keepaliveFromLifetime', () => {
  test('80% of the lifetime, never below 5 s, never above the maximum nor half the granted registration lifetime', () => {
    assert.equal(keepaliveFromLifetime(lifetime(30_000, 33_000), 60_000), 24_000);
    assert.equal(keepaliveFromLifetime(lifetime(4_000, 5_000), 60_000), 5_000, 'the floor wins over 80%');
    assert.equal(keepaliveFromLifetime(lifetime(0, 5_000), 60_000), 5_000, 'a lifetime below the shortest silence');
    assert.equal(keepaliveFromLifetime(lifetime(120_000), 60_000), 60_000, 'the default maximum');
    assert.equal(keepaliveFromLifetime(lifetime(120_000), 300_000), 96_000, 'a maximum the user raised');
    assert.equal(keepaliveFromLifetime(lifetime(120_000), 300_000, 60_000), 30_000, 'half what the broker granted');
    assert.equal(keepaliveFromLifetime(lifetime(30_000, 20_000), 60_000), 16_000, 'an inconsistent NAT: the shorter');
  });

  test('the silences measured reach what the longest interval needs', () => {
    assert.equal(measureCeilingMs(60_000), 75_000);
    assert.equal(measureCeilingMs(5_000), 10_000);
  });
});

describe('adaptiveKeepaliveSettings', () => {
  test('on by default, off with an explicit keepaliveMs unless asked for, bad values named', () => {
    assert.deepEqual(adaptiveKeepaliveSettings({}, 10_000, 30_000), { startMs: 10_000, startLifetimeMs: 30_000, maxMs: 60_000, explicit: false });
    assert.equal(adaptiveKeepaliveSettings({ keepaliveMs: 4_000 }, 4_000, 12_000), false);
    assert.equal(adaptiveKeepaliveSettings({ adaptiveKeepalive: false }, 10_000, 30_000), false);
    assert.equal(adaptiveKeepaliveSettings({ keepaliveMs: 4_000, adaptiveKeepalive: true, keepaliveMaxMs: 90_000 }, 4_000, 12_000) !== false, true);
    assert.throws(() => adaptiveKeepaliveSettings({ keepaliveMaxMs: 1_000 }, 10_000, 30_000), /keepaliveMaxMs: expected an integer of at least 5000 .*got 1000/);
    assert.throws(() => adaptiveKeepaliveSettings({ adaptiveKeepalive: 'yes' as unknown as boolean }, 10_000, 30_000), /adaptiveKeepalive: expected true or false, got yes/);
  });
});

describe('KeepaliveAdapter', () => {
  const broker = toTransportAddress('203.0.113.3', 3478);
  const registered = (kind: RegisteredEvent['kind'], address: string, port: number, extra: Partial<RegisteredEvent> = {}): RegisteredEvent => ({
    kind,
    publicEndpoint: toTransportAddress(address, port),
    lifetimeMs: 3_600_000,
    transport: 'udp',
    broker: { host: '203.0.113.3', port: 3478 },
    brokerAddress: broker,
    ...extra,
  });

  function setup(memory = new LifetimeMemory(), clock?: FakeClock) {
    const set: Array<[number, number]> = [];
    const measures: Array<{ broker: string; ceiling: number; resolve: (l: MappingLifetime) => void; reject: (e: Error) => void }> = [];
    const adapter = new KeepaliveAdapter(
      { setKeepalive: (k, l) => set.push([k, l]) },
      {
        startMs: 10_000,
        startLifetimeMs: 30_000,
        memory,
        ...(clock === undefined ? {} : { clock }),
        measure: (to, ceiling) =>
          new Promise((resolve, reject) => {
            measures.push({ broker: `${to.address}:${to.port}`, ceiling, resolve, reject });
          }),
      },
    );
    const events: KeepaliveEvent[] = [];
    adapter.on('keepalive', (e: KeepaliveEvent) => events.push(e));
    return { adapter, set, measures, events, memory };
  }

  test('measures once per public address in the background; until then the starting interval holds; then 80%, lifetime 3x', async () => {
    const { adapter, set, measures, events } = setup();
    adapter.registered(registered('first', '198.51.100.20', 40_000));
    adapter.registered(registered('refresh', '198.51.100.20', 40_000));
    assert.equal(measures.length, 1, 'one measurement, not one per refresh');
    assert.deepEqual({ broker: measures[0]?.broker, ceiling: measures[0]?.ceiling }, { broker: '203.0.113.3:3478', ceiling: 75_000 });
    assert.deepEqual(set, [], 'nothing changes before the measurement ends');
    assert.equal(adapter.keepaliveMs, 10_000);
    measures[0]?.resolve(lifetime(27_300, 30_500));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(set, [[21_840, 65_520]]);
    assert.equal(events[0]?.source, 'measured');
    assert.equal(events[0]?.lifetime?.lifetimeMs, 27_300);
    adapter.close();
  });

  test('a measurement is remembered per public address (for a while); another address measures again', async () => {
    const clock = new FakeClock(0);
    const memory = new LifetimeMemory(60_000, clock);
    const first = setup(memory);
    first.adapter.registered(registered('first', '198.51.100.20', 40_000));
    first.measures[0]?.resolve(lifetime(30_000, 33_000));
    await new Promise((resolve) => setImmediate(resolve));
    const second = setup(memory);
    second.adapter.registered(registered('first', '198.51.100.20', 40_100));
    assert.equal(second.measures.length, 0);
    assert.deepEqual(second.set, [[24_000, 72_000]]);
    assert.equal(second.events[0]?.source, 'remembered');
    second.adapter.registered(registered('again', '192.0.2.9', 50_000));
    assert.equal(second.measures.length, 1, 'a new public address: measured again');
    await clock.advance(60_000);
    const third = setup(memory);
    third.adapter.registered(registered('first', '198.51.100.20', 40_200));
    assert.equal(third.measures.length, 1, 'forgotten after rememberMs');
    for (const s of [first, second, third]) s.adapter.close();
  });

  test('a refresh with a new public port while adapted: the NAT forgot sooner, back to the starting interval', async () => {
    const { adapter, set, measures, events, memory } = setup();
    adapter.registered(registered('first', '198.51.100.20', 40_000));
    measures[0]?.resolve(lifetime(60_000, 66_000));
    await new Promise((resolve) => setImmediate(resolve));
    adapter.registered(registered('refresh', '198.51.100.20', 40_007));
    assert.deepEqual(set.at(-1), [10_000, 30_000]);
    assert.equal(events.at(-1)?.source, 'reset');
    assert.equal(memory.recall('198.51.100.20'), undefined);
    adapter.close();
  });

  test('the broker grants less than the adapted lifetime asked: the interval goes down to half of the grant', async () => {
    const { adapter, set, measures } = setup();
    // The first grant answers the starting ask (30 s): it does not cap the new interval.
    adapter.registered(registered('first', '198.51.100.20', 40_000, { lifetimeMs: 30_000 }));
    measures[0]?.resolve(lifetime(120_000));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(set.at(-1), [60_000, 180_000]);
    // The refresh that asked 180 s is granted 50 s (the broker's maximum).
    adapter.registered(registered('refresh', '198.51.100.20', 40_000, { lifetimeMs: 50_000 }));
    assert.deepEqual(set.at(-1), [25_000, 75_000]);
    adapter.close();
  });

  test('a TCP registration (no UDP mapping) is not measured; a failed measurement is reported once and not repeated on the next registrations', async () => {
    const { adapter, measures, set } = setup();
    adapter.registered(registered('first', '198.51.100.20', 40_000, { transport: 'tcp' }));
    assert.equal(measures.length, 0);
    const failures: Error[] = [];
    adapter.on('failed', (e: Error) => failures.push(e));
    adapter.registered(registered('again', '198.51.100.20', 40_000));
    measures[0]?.reject(Object.assign(new Error('no RESPONSE-PORT'), { code: 'ERR_PROTOCOL' }));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(failures.length, 1);
    assert.deepEqual(set, []);
    for (let i = 0; i < 5; i++) adapter.registered(registered('refresh', '198.51.100.20', 40_000));
    assert.equal(measures.length, 1, 'the refreshes right after a failure do not measure again');
    assert.equal(failures.length, 1);
    adapter.registered(registered('again', '192.0.2.9', 50_000));
    assert.equal(measures.length, 2, 'another public address measures at once');
    adapter.close();
  });

  test(`after failed measurements the same address measures again after ${MEASURE_RETRY_MIN_MS / 60_000} min, doubling to ${MEASURE_RETRY_MAX_MS / 60_000} min; one "failed" each; then a success adapts`, async () => {
    const clock = new FakeClock(0);
    const { adapter, measures, set } = setup(new LifetimeMemory(60 * 60_000, clock), clock);
    const failures: Error[] = [];
    adapter.on('failed', (e: Error) => failures.push(e));
    const refresh = (): void => adapter.registered(registered('refresh', '198.51.100.20', 40_000));
    /** Refreshes every 10 s (as the registration does) until a measurement starts; returns the ms waited. */
    const waitForMeasurement = async (limitMs: number): Promise<number> => {
      const before = measures.length;
      let waited = 0;
      while (measures.length === before && waited <= limitMs) {
        await clock.advance(10_000);
        waited += 10_000;
        refresh();
      }
      return waited;
    };
    refresh();
    const waits: number[] = [];
    for (let failure = 1; failure <= 6; failure++) {
      assert.equal(measures.length, failure);
      measures.at(-1)?.reject(new Error('no RESPONSE-PORT'));
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(failures.length, failure, 'one "failed" per failed measurement');
      waits.push(await waitForMeasurement(2 * MEASURE_RETRY_MAX_MS));
    }
    // Each wait is the backoff rounded up to the next 10 s refresh.
    assert.deepEqual(waits, [5, 10, 20, 40, 60, 60].map((min) => min * 60_000));
    measures.at(-1)?.resolve(lifetime(30_000, 33_000));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(set, [[24_000, 72_000]]);
    // Adapted: the refreshes keep the interval and measure nothing more.
    for (let i = 0; i < 3; i++) refresh();
    assert.equal(measures.length, 7);
    adapter.close();
  });
});

describe('a server on loopback with adaptiveKeepalive: true', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('measures for real through the broker (RESPONSE-PORT), adapts, and its next refresh asks the adapted lifetime', { timeout: 60_000 }, async () => {
    const { address, broker } = await startWatchedBroker(closers);
    const startedAt = Date.now();
    // keepaliveMaxMs 5 s: the silences tested are 5 and 10 s, so the measurement takes about 12 s.
    const { server } = await startRecipient(address, 'nattrav://adaptive', { adaptiveKeepalive: true, keepaliveMs: 3_000, keepaliveMaxMs: 5_000, tls: false });
    const listeningMs = Date.now() - startedAt;
    assert.ok(listeningMs < 5_000, `registration waited ${listeningMs} ms: it must not wait for the measurement`);
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const adapted: KeepaliveEvent[] = [];
    server.on('keepalive', (e: KeepaliveEvent) => adapted.push(e));
    await until(() => adapted.length > 0, 30_000, 'the keepalive event');
    // Loopback has no NAT: every mapping lives; the interval is the maximum.
    assert.equal(adapted[0]?.lifetime?.end, 'at-least');
    assert.equal(adapted[0]?.lifetime?.lifetimeMs, 10_000);
    assert.equal(adapted[0]?.keepaliveMs, 5_000);
    assert.equal(adapted[0]?.lifetimeMs, 15_000);
    // Every refresh asking the adapted lifetime, with when the broker saw it.
    const refreshes: number[] = [];
    broker.on('event', (e: BrokerEvent) => {
      if (e.type === 'registered' && e.lifetimeMs === 15_000) refreshes.push(Date.now());
    });
    await until(() => refreshes.length >= 3, 30_000, 'three refreshes asking 15 s');
    // They come every 5 s (the adapted interval), not every 3 s (the starting one).
    for (let i = 1; i < refreshes.length; i++) {
      const gap = (refreshes[i] as number) - (refreshes[i - 1] as number);
      assert.ok(gap >= 4_500, `refreshes ${gap} ms apart`);
    }
  });
});
