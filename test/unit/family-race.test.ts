/**
 * The IPv6/IPv4 race's state machine (peer/family-race.ts) on a fake clock: what it starts,
 * aborts, releases and decides, and when. No sockets: the test plays both attempts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { raceFamilies } from '../../src/peer/connect-race.js';
import { FAMILY_RACE_DELAY_MS, FAMILY_SECURE_STALL_MS, FamilyRace, type Family, type RaceAction } from '../../src/peer/family-race.js';
import type { NattravSocket } from '../../src/peer/info.js';
import type { ConnectOptions } from '../../src/peer/options.js';
import { FakeClock } from '../helpers/fake-clock.js';

/** A race on a fake clock whose actions are recorded as short strings ("start 6", "won 4 v4-direct"). */
function race(delayMs = FAMILY_RACE_DELAY_MS, timeoutMs = 30_000): { clock: FakeClock; race: FamilyRace<string>; log: string[]; actions: Array<RaceAction<string>> } {
  const clock = new FakeClock();
  const log: string[] = [];
  const actions: Array<RaceAction<string>> = [];
  const r = new FamilyRace<string>(clock, delayMs, (action) => {
    actions.push(action);
    if (action.type === 'failed') log.push(`failed ${[...action.errors].map(([f, e]) => `${f}:${e.message}`).join(' ')}`);
    else if (action.type === 'start' || action.type === 'abort') log.push(`${action.type} ${action.family}`);
    else log.push(`${action.type} ${action.family} ${action.value}`);
  }, timeoutMs);
  return { clock, race: r, log, actions };
}

const direct = (value: string) => ({ ok: true, value, direct: true }) as const;
const relayed = (value: string) => ({ ok: true, value, direct: false }) as const;
const failure = (message: string) => ({ ok: false, error: new Error(message) }) as const;

describe('the IPv6/IPv4 race', () => {
  test('IPv6 starts at once, IPv4 after the delay; IPv6 going direct first wins and IPv4 is aborted', async () => {
    const { clock, race: r, log } = race();
    r.start();
    assert.deepEqual(log, ['start 6']);
    await clock.advance(FAMILY_RACE_DELAY_MS - 1);
    assert.deepEqual(log, ['start 6'], 'IPv4 waits the whole delay');
    await clock.advance(1);
    assert.deepEqual(log, ['start 6', 'start 4']);
    r.settle(6, direct('v6'));
    assert.deepEqual(log, ['start 6', 'start 4', 'abort 4', 'won 6 v6']);
    assert.equal(r.over, true);
    // The aborted IPv4 attempt had connected in the meantime: its connection is closed, not used.
    r.settle(4, direct('v4-late'));
    assert.deepEqual(log.slice(4), ['release 4 v4-late']);
  });

  test('IPv6 done before the delay: IPv4 never starts', async () => {
    const { clock, race: r, log } = race();
    r.start();
    r.settle(6, direct('v6'));
    await clock.advance(10 * FAMILY_RACE_DELAY_MS);
    assert.deepEqual(log, ['start 6', 'won 6 v6']);
    assert.equal(clock.pending, 0, 'the delay timer is cleared');
  });

  test('IPv6 traversed directly before the delay (TLS still running): IPv4 does not start; it starts at once if IPv6 then fails', async () => {
    {
      const { clock, race: r, log } = race();
      r.start();
      await clock.advance(10);
      r.traversed(6);
      await clock.advance(10 * FAMILY_RACE_DELAY_MS);
      assert.deepEqual(log, ['start 6'], 'no IPv4 attempt while IPv6 secures its connection');
      r.settle(6, direct('v6'));
      assert.deepEqual(log, ['start 6', 'won 6 v6']);
    }
    {
      const { clock, race: r, log } = race();
      r.start();
      r.traversed(6);
      await clock.advance(10 * FAMILY_RACE_DELAY_MS);
      r.settle(6, failure('TLS handshake failed'));
      assert.deepEqual(log, ['start 6', 'start 4']);
    }
  });

  test('IPv6 traversed, then its TLS failed and its connect starts another attempt: IPv4 starts then, not after IPv6\'s retries', async () => {
    const { clock, race: r, log } = race();
    r.start();
    r.retrying(6);
    await clock.advance(5);
    assert.deepEqual(log, ['start 6'], 'a first attempt starting is no reason');
    r.traversed(6);
    await clock.advance(1_000);
    assert.deepEqual(log, ['start 6'], 'IPv4 held back while IPv6 secures its connection');
    r.retrying(6);
    assert.deepEqual(log, ['start 6', 'start 4'], 'IPv6\'s connection failed: IPv4 at once');
    r.retrying(6);
    assert.deepEqual(log, ['start 6', 'start 4'], 'once');
    r.settle(4, direct('v4'));
    assert.deepEqual(log.slice(2), ['abort 6', 'won 4 v4']);
  });

  test('one deadline for the race: each family starts with what is left of the caller\'s time limit', async () => {
    {
      const { clock, race: r, actions } = race(FAMILY_RACE_DELAY_MS, 30_000);
      r.start();
      await clock.advance(FAMILY_RACE_DELAY_MS);
      assert.deepEqual(actions.map((a) => (a.type === 'start' ? [a.family, a.timeoutMs] : a.type)), [[6, 30_000], [4, 30_000 - FAMILY_RACE_DELAY_MS]]);
    }
    {
      // IPv6 traversed in 5 ms, then its TLS failed 1 s in: IPv4 gets the 29 s left, not a fresh 30 s.
      const { clock, race: r, actions } = race(FAMILY_RACE_DELAY_MS, 30_000);
      r.start();
      await clock.advance(5);
      r.traversed(6);
      await clock.advance(995);
      r.retrying(6);
      assert.deepEqual(actions.map((a) => (a.type === 'start' ? [a.family, a.timeoutMs] : a.type)), [[6, 30_000], [4, 29_000]]);
    }
    {
      const { clock, race: r, actions } = race(FAMILY_RACE_DELAY_MS, 1_000);
      r.start();
      r.traversed(6);
      await clock.advance(5_000);
      r.settle(6, failure('timed out'));
      assert.deepEqual(actions.at(-1), { type: 'start', family: 4, timeoutMs: 1 }, 'past the deadline: the least limit there is, so it fails at once');
    }
  });

  test(`IPv6 traversed and its TLS stalls: IPv4 starts ${FAMILY_SECURE_STALL_MS} ms later beside it, with what is left of the deadline; the first direct wins`, async () => {
    for (const winner of [4, 6] as const) {
      const { clock, race: r, log, actions } = race(FAMILY_RACE_DELAY_MS, 30_000);
      r.start();
      await clock.advance(5);
      r.traversed(6);
      await clock.advance(FAMILY_SECURE_STALL_MS - 1);
      assert.deepEqual(log, ['start 6'], 'IPv4 held back while IPv6 secures its connection');
      await clock.advance(1);
      assert.deepEqual(actions.at(-1), { type: 'start', family: 4, timeoutMs: 30_000 - 5 - FAMILY_SECURE_STALL_MS });
      r.settle(winner, direct(`v${winner}`));
      assert.deepEqual(log.slice(2), [`abort ${winner === 4 ? 6 : 4}`, `won ${winner} v${winner}`]);
      assert.equal(clock.pending, 0);
    }
  });

  test('IPv6 hangs: IPv4 starts after the delay and wins; IPv6 is aborted', async () => {
    const { clock, race: r, log } = race();
    r.start();
    await clock.advance(FAMILY_RACE_DELAY_MS);
    await clock.advance(5_000);
    r.settle(4, direct('v4'));
    assert.deepEqual(log, ['start 6', 'start 4', 'abort 6', 'won 4 v4']);
  });

  test('IPv6 fails fast: IPv4 starts at once, without waiting for the delay', async () => {
    const { clock, race: r, log } = race(250);
    r.start();
    await clock.advance(3);
    r.settle(6, failure('no IPv6 route'));
    assert.deepEqual(log, ['start 6', 'start 4'], 'IPv4 started 3 ms in, not at 250');
    assert.equal(clock.pending, 0, 'the delay timer is cleared');
    r.settle(4, direct('v4'));
    assert.deepEqual(log.slice(2), ['won 4 v4']);
  });

  test('both fail: the race fails naming both errors', async () => {
    const { clock, race: r, log, actions } = race();
    r.start();
    await clock.advance(FAMILY_RACE_DELAY_MS);
    r.settle(4, failure('v4 refused'));
    assert.deepEqual(log, ['start 6', 'start 4'], 'no decision while IPv6 runs');
    r.settle(6, failure('v6 timed out'));
    const failed = actions.at(-1);
    assert.ok(failed?.type === 'failed');
    assert.equal(failed.errors.get(6)?.message, 'v6 timed out');
    assert.equal(failed.errors.get(4)?.message, 'v4 refused');
  });

  test('a relayed connection is held until the other family ends: a direct one replaces it, else it is used', async () => {
    {
      const { race: r, log } = race();
      r.start();
      r.settle(6, relayed('v6-relay'));
      assert.deepEqual(log, ['start 6', 'start 4'], 'IPv6 only reached the relay: IPv4 starts at once');
      r.settle(4, direct('v4'));
      assert.deepEqual(log.slice(2), ['release 6 v6-relay', 'won 4 v4']);
    }
    {
      const { race: r, log } = race();
      r.start();
      r.settle(6, relayed('v6-relay'));
      r.settle(4, failure('v4 blocked'));
      assert.deepEqual(log.slice(2), ['won 6 v6-relay'], 'neither went direct: the relay is used');
    }
    {
      const { race: r, log } = race();
      r.start();
      r.settle(6, relayed('v6-relay'));
      r.settle(4, relayed('v4-relay'));
      assert.deepEqual(log.slice(2), ['release 4 v4-relay', 'won 6 v6-relay'], 'both relayed: IPv6 is kept, one connection only');
    }
  });

  test('abort cancels both attempts and releases a held relay; nothing is decided after it', async () => {
    const { clock, race: r, log } = race();
    r.start();
    await clock.advance(FAMILY_RACE_DELAY_MS);
    r.settle(6, relayed('v6-relay'));
    r.abort();
    assert.deepEqual(log, ['start 6', 'start 4', 'release 6 v6-relay', 'abort 4']);
    r.settle(4, failure('aborted'));
    r.abort();
    assert.deepEqual(log.length, 4, 'nothing after the abort');
  });

  test('abort before the delay: only IPv6 is aborted, IPv4 never starts', async () => {
    const { clock, race: r, log } = race();
    r.start();
    r.abort();
    await clock.advance(10 * FAMILY_RACE_DELAY_MS);
    assert.deepEqual(log, ['start 6', 'abort 6']);
  });

  test('raceFamilies: both families\' connects share the caller\'s timeoutMs; IPv6 traversed, then retrying after its TLS failed, starts IPv4 at once', async () => {
    const clock = new FakeClock();
    const calls: ConnectOptions[] = [];
    const settle = new Map<Family, { resolve(socket: NattravSocket): void; reject(err: Error): void }>();
    const connectIn = (options: ConnectOptions): Promise<NattravSocket> =>
      new Promise((resolve, reject) => {
        calls.push(options);
        settle.set(options.family as Family, { resolve, reject });
      });
    const won = raceFamilies({ broker: '127.0.0.1:3478', uri: 'nattrav://raced', timeoutMs: 10_000 }, connectIn, clock);
    assert.deepEqual(calls.map((c) => [c.family, c.timeoutMs]), [[6, 10_000]]);
    await clock.advance(5);
    calls[0]?.onTrace?.({ attempt: 1, strategy: 'direct', outcome: 'succeeded', ms: 5 });
    await clock.advance(1_000);
    assert.equal(calls.length, 1, 'IPv4 held back while IPv6 secures its connection');
    // IPv6's TLS failed; its connect runs its next attempt.
    calls[0]?.onTrace?.({ attempt: 2, strategy: 'direct', outcome: 'started', ms: 0 });
    assert.deepEqual(calls.map((c) => [c.family, c.timeoutMs]), [[6, 10_000], [4, 10_000 - 1_005]], 'IPv4 at once, within the same deadline');
    const socket = { nattrav: { path: 'direct' }, destroy: () => undefined } as unknown as NattravSocket;
    settle.get(4)?.resolve(socket);
    assert.equal(await won, socket);
    assert.equal(calls[0]?.signal?.aborted, true, 'the IPv6 attempt is aborted');
    settle.get(6)?.reject(new Error('aborted'));
  });
});
