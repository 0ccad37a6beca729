/**
 * The registration's keepalive and retry schedule (peer/backoff.ts) on a fake clock:
 * the delays of the capped exponential backoff, when tries happen at start and after a
 * loss, what is reported, and fail-fast with `once`. No sockets, no real waiting.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KeepaliveLoop, REGISTRATION_BACKOFF, backoffDelayMs, type AttemptResult, type RegistrationKind, type RegistrationRetry } from '../../src/peer/backoff.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';

const KEEPALIVE_MS = 10_000;

/** A scripted broker: each try takes the next outcome ('ok', 'renewed' or an error message); records when each try ran. */
function scripted(clock: FakeClock, outcomes: string[]): { attempt: () => Promise<AttemptResult<string>>; tries: number[] } {
  const tries: number[] = [];
  let n = 0;
  const attempt = async (): Promise<AttemptResult<string>> => {
    tries.push(clock.now());
    const outcome = outcomes[n++] ?? 'ok';
    if (outcome === 'ok' || outcome === 'renewed') return { info: `grant ${n}`, renewed: outcome === 'renewed' };
    throw new Error(outcome);
  };
  return { attempt, tries };
}

function recorder(): { events: string[]; retries: RegistrationRetry[]; onRegistered: (info: string, kind: RegistrationKind) => void; onLost: (e: unknown) => void; onRetry: (r: RegistrationRetry) => void } {
  const events: string[] = [];
  const retries: RegistrationRetry[] = [];
  return {
    events,
    retries,
    onRegistered: (info, kind) => events.push(`registered:${kind}:${info}`),
    onLost: (e) => events.push(`lost:${(e as Error).message}`),
    onRetry: (r) => {
      retries.push(r);
      events.push(`retry:${r.phase}:${r.failures}:${r.delayMs}`);
    },
  };
}

describe('backoffDelayMs', () => {
  test('doubles from 1 s and stays at the 60 s cap; jitter takes up to half of a delay away, never adds', () => {
    const none = (): number => 0;
    const delays = Array.from({ length: 9 }, (_, i) => backoffDelayMs(REGISTRATION_BACKOFF, i + 1, none));
    assert.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    assert.equal(backoffDelayMs(REGISTRATION_BACKOFF, 1_000_000, none), 60_000, 'a huge count does not overflow');
    assert.equal(backoffDelayMs(REGISTRATION_BACKOFF, 3, () => 0.5), 3_000);
    assert.equal(backoffDelayMs(REGISTRATION_BACKOFF, 3, () => 0.999_999), 2_000);
    assert.equal(backoffDelayMs(REGISTRATION_BACKOFF, 8, none, 10_000), 10_000, 'a lower cap wins');
    assert.equal(backoffDelayMs({ initialMs: 50, maxMs: 400, jitter: 0 }, 5, () => 0.9), 400);
  });
});

describe('KeepaliveLoop', () => {
  test('start: an unreachable broker is retried with growing delays until it answers; then refreshes every keepalive', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, ['refused', 'refused', 'refused', 'ok']);
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    let first: string | undefined;
    void loop.start().then((info) => (first = info));
    await clock.advance(7_000);
    assert.deepEqual(broker.tries, [0, 1_000, 3_000, 7_000]);
    assert.equal(first, 'grant 4');
    assert.deepEqual(rec.events, ['retry:start:1:1000', 'retry:start:2:2000', 'retry:start:3:4000', 'registered:first:grant 4']);
    assert.equal(loop.state, 'registered');
    await clock.advance(2 * KEEPALIVE_MS);
    assert.deepEqual(broker.tries.slice(4), [17_000, 27_000]);
    assert.deepEqual(rec.events.slice(4), ['registered:refresh:grant 5', 'registered:refresh:grant 6']);
    loop.close(new Error('closed'));
    assert.equal(clock.pending, 0);
  });

  test('refreshMs (several brokers): refreshes come at that interval instead of the keepalive, asked again after each success', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, []);
    let interval = 4_000;
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, refreshMs: () => interval, clock, random: () => 0 });
    void loop.start();
    await clock.advance(8_000);
    assert.deepEqual(broker.tries, [0, 4_000, 8_000]);
    // Asked after each success: the refresh already planned (at 12 s) keeps its time, the next follows the new interval.
    interval = 6_000;
    await clock.advance(10_000);
    assert.deepEqual(broker.tries, [0, 4_000, 8_000, 12_000, 18_000]);
    loop.close(new Error('closed'));
  });

  test('refreshNow (what we register changed): a refresh at once, the next keepalive counted from it; nothing while starting or lost', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, ['down', 'ok', 'ok', 'down']);
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    void loop.start();
    loop.refreshNow();
    await clock.advance(0);
    assert.deepEqual(broker.tries, [0], 'while starting, no extra try');
    await clock.advance(1_000);
    assert.equal(loop.state, 'registered');
    await clock.advance(3_000);
    loop.refreshNow();
    await clock.advance(0);
    assert.deepEqual(broker.tries, [0, 1_000, 4_000], 'a refresh at once');
    await clock.advance(KEEPALIVE_MS - 1);
    assert.equal(broker.tries.length, 3, 'the keepalive interval counts from the early refresh');
    await clock.advance(1);
    assert.deepEqual(broker.tries, [0, 1_000, 4_000, 14_000]);
    assert.equal(loop.state, 'lost');
    loop.refreshNow();
    await clock.advance(0);
    assert.equal(broker.tries.length, 4, 'while lost the retry schedule holds');
    loop.close(new Error('closed'));
  });

  test('refreshNow while a try is on the wire (it may carry the old value): one more refresh right after it succeeds, then the usual interval', async () => {
    const clock = new FakeClock(0);
    const tries: number[] = [];
    // Each try takes 500 ms of fake time.
    const attempt = async (): Promise<AttemptResult<string>> => {
      tries.push(clock.now());
      await new Promise<void>((resolve) => clock.setTimeout(() => resolve(), 500));
      return { info: 'grant', renewed: false };
    };
    const loop = new KeepaliveLoop({ attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0 });
    void loop.start();
    await clock.advance(200);
    loop.refreshNow();
    loop.refreshNow();
    await clock.advance(300);
    await clock.advance(0);
    assert.deepEqual(tries, [0, 500], 'the first registration, then one refresh at once');
    await clock.advance(500 + KEEPALIVE_MS - 1);
    assert.deepEqual(tries, [0, 500], 'then the keepalive interval from the end of that refresh');
    await clock.advance(1);
    assert.deepEqual(tries, [0, 500, 11_000]);
    loop.close(new Error('closed'));
  });

  test('at start the delays grow to the 60 s cap, however long the broker stays away', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, Array.from({ length: 40 }, () => 'down'));
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    void loop.start().catch(() => undefined);
    await clock.advance(10 * 60_000);
    assert.deepEqual(rec.retries.map((r) => r.delayMs).slice(0, 9), [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    assert.ok(rec.retries.every((r) => r.phase === 'start'));
    assert.equal(loop.state, 'starting');
    loop.close(new Error('closed'));
  });

  test('a lost registration: reported once, retried with delays capped at one keepalive, then registered again', async () => {
    const clock = new FakeClock(0);
    const outcomes = ['ok', ...Array.from({ length: 8 }, () => 'timed out'), 'ok'];
    const broker = scripted(clock, outcomes);
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    await Promise.all([loop.start(), clock.advance(0)]);
    await clock.advance(KEEPALIVE_MS); // the first refresh fails
    assert.equal(loop.state, 'lost');
    await clock.advance(2 * 60_000);
    assert.equal(rec.events.filter((e) => e.startsWith('lost:')).length, 1, rec.events.join(' '));
    assert.equal(rec.events[1], 'lost:timed out');
    const delays = rec.retries.map((r) => r.delayMs);
    assert.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000, 10_000]);
    assert.ok(rec.retries.every((r) => r.phase === 'lost'));
    const again = rec.events.indexOf('registered:again:grant 10');
    assert.ok(again > 0, rec.events.join(' | '));
    // Back to refreshes every keepalive.
    assert.ok(rec.events.slice(again + 1).every((e) => e.startsWith('registered:refresh:')));
    const gaps = broker.tries.slice(9).map((t, i) => t - (broker.tries[8 + i] as number));
    assert.ok(gaps.length >= 2 && gaps.slice(1).every((gap) => gap === KEEPALIVE_MS), gaps.join(','));
    loop.close(new Error('closed'));
  });

  test('a refresh that needed a new proof of key (the broker restarted) is a loss and a registration again', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, ['ok', 'ok', 'renewed', 'ok']);
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    await Promise.all([loop.start(), clock.advance(0)]);
    await clock.advance(3 * KEEPALIVE_MS);
    assert.equal(rec.events.length, 5, rec.events.join(' | '));
    assert.deepEqual([rec.events[0], rec.events[1]], ['registered:first:grant 1', 'registered:refresh:grant 2']);
    assert.match(rec.events[2] as string, /^lost:the broker no longer knew our registration/);
    assert.deepEqual([rec.events[3], rec.events[4]], ['registered:again:grant 3', 'registered:refresh:grant 4']);
    loop.close(new Error('closed'));
  });

  test('a refresh whose broker did not answer, made good within the try by another broker, reports that loss, then again; no retry waits', async () => {
    const clock = new FakeClock(0);
    let n = 0;
    const attempt = async (): Promise<AttemptResult<string>> => {
      n++;
      return n === 2 ? { info: 'other broker', renewed: true, lost: new Error('broker unreachable: no answer') } : { info: `grant ${n}`, renewed: false };
    };
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    await Promise.all([loop.start(), clock.advance(0)]);
    await clock.advance(2 * KEEPALIVE_MS);
    assert.deepEqual(rec.events, ['registered:first:grant 1', 'lost:broker unreachable: no answer', 'registered:again:other broker', 'registered:refresh:grant 3']);
    assert.deepEqual(rec.retries, []);
    loop.close(new Error('closed'));
  });

  test('once: the first failure is final, no retry is scheduled', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, ['broker unreachable']);
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, once: true, ...rec });
    await assert.rejects(loop.start(), /broker unreachable/);
    assert.equal(loop.state, 'closed');
    assert.equal(clock.pending, 0);
    assert.deepEqual(rec.events, []);
  });

  test('an error isFinal calls incurable ends the start at once; others are retried', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, ['transient', 'bad identity']);
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, isFinal: (e) => (e as Error).message === 'bad identity' });
    const started = loop.start();
    const rejected = assert.rejects(started, /bad identity/);
    await clock.advance(1_000);
    await rejected;
    assert.deepEqual(broker.tries, [0, 1_000]);
    assert.equal(clock.pending, 0);
  });

  test('close while starting rejects start with the given error; an attempt that settles afterwards changes nothing', async () => {
    const clock = new FakeClock(0);
    let release: (() => void) | undefined;
    const events: string[] = [];
    const loop = new KeepaliveLoop<string>({
      attempt: () => new Promise((resolve) => (release = () => resolve({ info: 'late', renewed: false }))),
      keepaliveMs: KEEPALIVE_MS,
      clock,
      onRegistered: (info) => events.push(info),
    });
    const started = loop.start();
    loop.close(new Error('closed by the user'));
    await assert.rejects(started, /closed by the user/);
    release?.();
    await settle();
    assert.deepEqual(events, []);
    assert.equal(clock.pending, 0);
    assert.equal(loop.state, 'closed');
  });

  test('interrupt (a control connection closed) loses the registration now and retries after the first delay', async () => {
    const clock = new FakeClock(0);
    const broker = scripted(clock, ['ok', 'ok']);
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt: broker.attempt, keepaliveMs: KEEPALIVE_MS, clock, random: () => 0, ...rec });
    await Promise.all([loop.start(), clock.advance(0)]);
    await clock.advance(3_000);
    loop.interrupt(new Error('control connection closed'));
    loop.interrupt(new Error('a second report changes nothing'));
    await clock.advance(1_000);
    assert.deepEqual(broker.tries, [0, 4_000]);
    assert.deepEqual(rec.events, ['registered:first:grant 1', 'lost:control connection closed', 'retry:lost:1:1000', 'registered:again:grant 2']);
    loop.close(new Error('closed'));
  });

  test('a retry counts its delay from when the failed try started: slow failures do not stretch the gap beyond the delay', async () => {
    const clock = new FakeClock(0);
    const tries: number[] = [];
    let n = 0;
    // The first try succeeds; every later one fails after 600 ms (a registration timing out).
    const attempt = async (): Promise<AttemptResult<string>> => {
      tries.push(clock.now());
      if (n++ === 0) return { info: 'first', renewed: false };
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 600));
      throw new Error('timed out');
    };
    const rec = recorder();
    const loop = new KeepaliveLoop({ attempt, keepaliveMs: 2_000, clock, random: () => 0, ...rec });
    await Promise.all([loop.start(), clock.advance(0)]);
    await clock.advance(2_000 + 12_000);
    // Lost at 2_600; tries start 1 s, 2 s, then every keepalive (2 s) after the previous start.
    assert.deepEqual(tries.slice(0, 7), [0, 2_000, 3_000, 5_000, 7_000, 9_000, 11_000]);
    assert.deepEqual(rec.retries.slice(0, 3).map((r) => r.delayMs), [400, 1_400, 1_400]);
    loop.close(new Error('closed'));
  });
});
