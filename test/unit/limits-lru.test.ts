/** The generational LRU map behind the broker's rate-limit buckets and report throttling (src/broker/limits.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LruMap, RateLimiter, resolveLimits } from '../../src/broker/limits.js';

test('never holds more than max entries', () => {
  for (const max of [1, 2, 3, 10, 101]) {
    const map = new LruMap<number, number>(max);
    for (let i = 0; i < max * 5; i++) {
      map.set(i, i);
      assert.ok(map.size <= max, `max ${max}: ${map.size} held after ${i + 1} inserts`);
    }
    assert.equal(map.get(max * 5 - 1), max * 5 - 1, 'the newest entry is held');
  }
});

test('an entry used within the last max / 2 insertions is kept; one left alone is forgotten', () => {
  const map = new LruMap<string, number>(100);
  map.set('hot', 1);
  map.set('cold', 2);
  for (let i = 0; i < 1_000; i++) {
    map.set(`k${i}`, i);
    if (i % 49 === 0) assert.equal(map.get('hot'), 1, `hot after ${i} inserts`);
  }
  assert.equal(map.get('hot'), 1);
  assert.equal(map.get('cold'), undefined);
  assert.equal(map.get('k999'), 999);
  assert.equal(map.get('k0'), undefined);
});

test('set replaces a value in either generation without growing', () => {
  const map = new LruMap<string, number>(4);
  map.set('a', 1);
  map.set('b', 2);
  map.set('c', 3); // a and b are now the old generation
  map.set('a', 10);
  map.set('c', 30);
  assert.equal(map.size, 3);
  assert.equal(map.get('a'), 10);
  assert.equal(map.get('b'), 2);
  assert.equal(map.get('c'), 30);
});

test('a busy source keeps its bucket while other sources come and go (no fresh burst by eviction)', () => {
  const limiter = new RateLimiter(resolveLimits({ trackedBuckets: 10, udpBinding: { perSecond: 0, burst: 5 } }), () => 1_000);
  let granted = 0;
  for (let i = 0; i < 300; i++) {
    if (limiter.take('udp-binding', 'hot')) granted++;
    if (limiter.take('udp-binding', 'hot')) granted++;
    assert.equal(limiter.take('udp-binding', `other-${i}`), true, 'a new source starts with a full bucket');
    assert.ok(limiter.size <= 10);
  }
  assert.equal(granted, 5, 'the burst once, never again');
  // A source left alone long enough is forgotten, and starts full again.
  for (let i = 0; i < 20; i++) limiter.take('udp-binding', `later-${i}`);
  assert.equal(limiter.take('udp-binding', 'hot'), true);
});
