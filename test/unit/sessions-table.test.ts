/**
 * The compact SessionTable (src/broker/sessions.ts): sessions that pack into the slab
 * (32-byte key, IPv4 endpoint, SHA-256 fingerprint in base32) and sessions kept whole
 * behave the same through open, find, advance, renew (also from a packed endpoint to one
 * that does not pack), end and drop; a full table refuses new URIs until one expires.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { SessionTable, type Session } from '../../src/broker/sessions.js';
import { keyFingerprint } from '../../src/security/keys.js';

const T0 = 1_800_000_000_000;
const fingerprintOf = (n: number): string => keyFingerprint(createHash('sha256').update(String(n)).digest());

function table(max = 100): { table: SessionTable; advance(ms: number): void } {
  let now = T0;
  return { table: new SessionTable(max, () => now), advance: (ms) => (now += ms) };
}

const kinds = [
  { name: 'packed', key: randomBytes(32), fingerprint: fingerprintOf(1), endpoint: { address: '198.51.100.7', port: 40_000 } },
  { name: 'IPv6 endpoint', key: randomBytes(32), fingerprint: fingerprintOf(2), endpoint: { address: '2001:db8::7', port: 1 } },
  { name: 'short key', key: randomBytes(16), fingerprint: fingerprintOf(3), endpoint: { address: '10.0.0.1', port: 2 } },
  { name: 'other fingerprint', key: randomBytes(32), fingerprint: 'fp', endpoint: { address: '10.0.0.1', port: 3 } },
];

for (const kind of kinds) {
  test(`a session's life (${kind.name})`, async () => {
    const { table: t, advance } = table();
    const uri = `nattrav://${kind.name.replace(/ /g, '-')}`;
    const opened = await t.open(uri, kind.key, kind.fingerprint, T0 + 10_000, kind.endpoint);
    assert.ok(opened !== undefined);
    assert.match(opened.id, /^[0-9a-f]{32}$/);
    const expected = { id: opened.id, uri, key: kind.key, keyFingerprint: kind.fingerprint, lastSequence: 0, expiresAt: T0 + 10_000, endpoint: kind.endpoint };
    assert.deepEqual(opened, expected);
    assert.deepEqual(await t.find(uri, opened.id), expected);
    assert.deepEqual(await t.byUri(uri), expected);
    assert.equal(await t.find(uri, '00'.repeat(16)), undefined);
    assert.equal(await t.advance(opened, 5), 'accepted');
    assert.equal(await t.advance(opened, 5), 'replayed');
    assert.equal(await t.advance(opened, 4_294_967_295), 'accepted');
    for (const endpoint of [{ address: '203.0.113.1', port: 9 }, { address: '::1', port: 8 }, { address: '203.0.113.2', port: 7 }]) {
      assert.equal(await t.renew(opened, endpoint, T0 + 20_000), true);
      assert.deepEqual(await t.find(uri, opened.id), { ...expected, lastSequence: 4_294_967_295, expiresAt: T0 + 20_000, endpoint });
    }
    const again = await t.open(uri, kind.key, kind.fingerprint, T0 + 30_000, kind.endpoint);
    assert.ok(again !== undefined && again.id !== opened.id);
    assert.equal(await t.find(uri, opened.id), undefined, 'the old session ended');
    assert.equal(await t.advance(opened, 9), 'unknown');
    assert.equal(await t.end(opened), false);
    assert.equal(await t.end(again), true);
    assert.equal(await t.byUri(uri), undefined);
    const third = await t.open(uri, kind.key, kind.fingerprint, T0 + 1_000, kind.endpoint);
    assert.ok(third !== undefined);
    advance(1_000);
    assert.equal(await t.find(uri, third.id), undefined, 'gone at expiresAt');
    assert.equal(await t.renew(third, kind.endpoint, T0 + 5_000), false);
    await t.drop(uri);
    assert.equal(t.size, 0);
  });
}

test('a full table refuses new URIs, sweeps expired sessions, and reuses their slots', async () => {
  const { table: t, advance } = table(1_000);
  const sessions: Array<Session | undefined> = [];
  for (let i = 0; i < 1_000; i++) sessions.push(await t.open(`nattrav://p${i}`, randomBytes(32), fingerprintOf(i), T0 + (i < 500 ? 1_000 : 60_000), { address: '10.0.0.1', port: i }));
  assert.equal(await t.open('nattrav://one-more', randomBytes(32), fingerprintOf(0), T0 + 60_000, { address: '10.0.0.1', port: 1 }), undefined);
  assert.ok((await t.open('nattrav://p700', randomBytes(32), fingerprintOf(700), T0 + 60_000, { address: '10.0.0.1', port: 1 })) !== undefined, 'a known URI may reopen');
  advance(1_000);
  for (let i = 0; i < 500; i++) assert.ok((await t.open(`nattrav://new${i}`, randomBytes(32), fingerprintOf(i), T0 + 60_000, { address: '10.0.0.2', port: i })) !== undefined, `new${i}`);
  assert.equal(t.size, 1_000);
  for (let i = 500; i < 1_000; i++) {
    if (i === 700) continue; // reopened: a new session
    const s = sessions[i];
    assert.ok(s !== undefined);
    assert.deepEqual(await t.find(s.uri, s.id), s, s.uri);
  }
});
