/** The broker's registration caps (src/broker/registration-cap.ts): per source, in total, expiry, a URI changing hands. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CAP_SWEEP_INTERVAL_MS, RegistrationCap } from '../../src/broker/registration-cap.js';

const T0 = 1_800_000_000_000;

test('per-source cap: a source holds at most maxPerSource URIs, refreshes of its own always pass', () => {
  const cap = new RegistrationCap(2, 100);
  for (const uri of ['a', 'b']) {
    assert.equal(cap.admit(uri, '10.0.0.1', T0), 'ok');
    cap.record(uri, '10.0.0.1', T0 + 1_000);
  }
  assert.equal(cap.admit('c', '10.0.0.1', T0), 'per-source');
  assert.equal(cap.admit('a', '10.0.0.1', T0), 'ok', 'its own URI');
  assert.equal(cap.admit('c', '10.0.0.2', T0), 'ok', 'another source');
  cap.forget('a');
  assert.equal(cap.admit('c', '10.0.0.1', T0), 'ok', 'after a withdrawal');
});

test('total cap: new URIs are refused when full, a known URI may change hands', () => {
  const cap = new RegistrationCap(10, 3);
  for (const [i, uri] of ['a', 'b', 'c'].entries()) cap.record(uri, `10.0.0.${i}`, T0 + 1_000);
  assert.equal(cap.size, 3);
  assert.equal(cap.admit('d', '10.0.0.9', T0), 'total');
  assert.equal(cap.admit('a', '10.0.0.9', T0), 'ok', 'taking over a URI adds none');
  cap.record('a', '10.0.0.9', T0 + 1_000);
  assert.equal(cap.size, 3);
  // 10.0.0.0 no longer holds anything: its count went with the URI.
  const perSource = new RegistrationCap(1, 10);
  perSource.record('a', '10.0.0.1', T0 + 1_000);
  perSource.record('a', '10.0.0.2', T0 + 1_000);
  assert.equal(perSource.admit('b', '10.0.0.1', T0), 'ok');
  assert.equal(perSource.admit('b', '10.0.0.2', T0), 'per-source');
});

test('expired entries stop counting once swept, at most every CAP_SWEEP_INTERVAL_MS when full', () => {
  const cap = new RegistrationCap(10, 2);
  cap.record('a', '10.0.0.1', T0 + 1_000);
  cap.record('b', '10.0.0.1', T0 + 5_000);
  assert.equal(cap.admit('c', '10.0.0.2', T0 + 999), 'total');
  assert.equal(cap.admit('c', '10.0.0.2', T0 + 999 + CAP_SWEEP_INTERVAL_MS), 'ok', 'a expired and was swept');
  assert.equal(cap.size, 1);
  cap.record('c', '10.0.0.2', T0 + 9_000);
  assert.equal(cap.admit('d', '10.0.0.2', T0 + 4_000), 'total', 'nothing expired yet');
  assert.equal(cap.admit('d', '10.0.0.2', T0 + 5_000), 'ok', 'b expired at 5000');
  cap.record('d', '10.0.0.2', T0 + 5_050);
  assert.equal(cap.admit('e', '10.0.0.2', T0 + 5_050), 'total', 'd expired, but the last sweep was too recent');
  assert.equal(cap.admit('e', '10.0.0.2', T0 + 5_000 + CAP_SWEEP_INTERVAL_MS), 'ok');
  cap.sweep(T0 + 20_000);
  assert.equal(cap.size, 0);
});

test('many sources and URIs: slots and source numbers are reused', () => {
  const cap = new RegistrationCap(3, 10_000);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5_000; i++) cap.record(`u${i}`, `10.0.${i >> 8}.${i & 255}`, T0 + round * 10_000 + 1_000);
    assert.equal(cap.size, 5_000);
    cap.sweep(T0 + round * 10_000 + 1_000);
    assert.equal(cap.size, 0);
  }
  assert.equal(cap.admit('x', '10.0.0.1', T0 + 40_000), 'ok');
});
