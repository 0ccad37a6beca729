/**
 * The pure parts of `--workers`: the primary's attempt directory (who runs which attempt,
 * what waits for an owner and what goes back) and each worker's share of the limits.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BROKER_LIMITS_DEFAULTS } from '../../src/broker/limits.js';
import { AttemptDirectory, MAX_WAITING, ROUTE_WAIT_MS } from '../../src/broker/workers/directory.js';
import type { IpcMessage } from '../../src/broker/workers/ipc.js';
import { shareLimits } from '../../src/broker/workers/worker.js';

function directory(): { dir: AttemptDirectory; posted: Array<{ to: number; message: IpcMessage }> } {
  const posted: Array<{ to: number; message: IpcMessage }> = [];
  return { dir: new AttemptDirectory((to, message) => posted.push({ to, message })), posted };
}

describe('attempt directory', () => {
  test('a Join for a claimed attempt goes to its owner at once, naming the worker it came from', () => {
    const { dir, posted } = directory();
    dir.own('a1', 2);
    dir.route({ nt: 'route', kind: 'join', ref: 7, attempt: 'a1' }, 1);
    assert.deepEqual(posted, [{ to: 2, message: { nt: 'routed', kind: 'join', ref: 7, attempt: 'a1', from: 1 } }]);
    dir.close();
  });

  test('a probe that overtakes its Connect waits for the owner, then goes there', () => {
    const { dir, posted } = directory();
    dir.route({ nt: 'route', kind: 'probe', ref: 1, attempt: 'early' }, 1);
    dir.route({ nt: 'route', kind: 'probe', ref: 2, attempt: 'early' }, 2);
    assert.equal(posted.length, 0);
    dir.own('early', 2);
    assert.deepEqual(posted.map((p) => [p.to, p.message['ref'], p.message['from'], p.message.nt]), [
      [2, 1, 1, 'routed'],
      [2, 2, 2, 'routed'],
    ]);
    dir.close();
  });

  test('nobody claims the attempt: the message goes back to its worker (unrouted) after the wait', async () => {
    const { dir, posted } = directory();
    dir.route({ nt: 'route', kind: 'join', ref: 9, attempt: 'nobody' }, 3);
    await new Promise((resolve) => setTimeout(resolve, ROUTE_WAIT_MS + 200));
    assert.deepEqual(posted, [{ to: 3, message: { nt: 'unrouted', ref: 9 } }]);
    dir.close();
  });

  test('a dead worker\'s attempts are forgotten; waiting is bounded (past it, back at once)', () => {
    const { dir, posted } = directory();
    dir.own('gone', 1);
    dir.forgetWorker(1);
    assert.equal(dir.owner('gone'), undefined);
    for (let i = 0; i < MAX_WAITING; i++) dir.route({ nt: 'route', kind: 'probe', ref: i, attempt: `w${i}` }, 1);
    assert.equal(posted.length, 0);
    dir.route({ nt: 'route', kind: 'probe', ref: -1, attempt: 'one-more' }, 2);
    assert.deepEqual(posted, [{ to: 2, message: { nt: 'unrouted', ref: -1 } }]);
    dir.close();
  });
});

describe('shareLimits', () => {
  test('one worker keeps every limit as given', () => {
    assert.deepEqual(shareLimits({ maxConnections: 10 }, 1), { ...BROKER_LIMITS_DEFAULTS, maxConnections: 10 });
  });

  test('N workers: rates and caps divided by N (never below 1), timeouts and sizes untouched', () => {
    const shared = shareLimits({ connect: { perSecond: 1, burst: 6 }, maxRegistrations: 1000, maxPendingPerUri: 1 }, 4);
    assert.deepEqual(shared.connect, { perSecond: 0.25, burst: 1.5 });
    assert.deepEqual(shared.udpBinding, { perSecond: BROKER_LIMITS_DEFAULTS.udpBinding.perSecond / 4, burst: BROKER_LIMITS_DEFAULTS.udpBinding.burst / 4 });
    assert.equal(shared.maxRegistrations, 250);
    assert.equal(shared.maxPendingPerUri, 1, 'a cap of 1 stays usable');
    assert.equal(shared.firstMessageTimeoutMs, BROKER_LIMITS_DEFAULTS.firstMessageTimeoutMs);
    assert.equal(shared.maxWriteBufferBytes, BROKER_LIMITS_DEFAULTS.maxWriteBufferBytes);
    assert.equal(shared.trackedBuckets, BROKER_LIMITS_DEFAULTS.trackedBuckets);
    assert.deepEqual(shareLimits({ amplificationAllowance: { perSecond: 0, burst: 0 } }, 2).amplificationAllowance, { perSecond: 0, burst: 0 }, 'strict stays strict');
  });
});
