/**
 * The compact MemoryRegistry (src/broker/registry/memory.ts, slab.ts): whatever is stored
 * comes back equal, whether it packs into the slab (IPv4, up to two private endpoints, a
 * SHA-256 fingerprint in base32, a broker ID) or is kept whole (IPv6, more endpoints, any
 * other fingerprint); slots are reused after deletes and sweeps, and the slab grows.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import type { Registration } from '../../src/broker/registry/registry.js';
import { FINGERPRINT_BYTES, packFingerprint, packIPv4, unpackFingerprint, unpackIPv4 } from '../../src/broker/registry/slab.js';
import { keyFingerprint } from '../../src/security/keys.js';

const T0 = 1_800_000_000_000;
const fingerprintOf = (n: number): string => keyFingerprint(createHash('sha256').update(String(n)).digest());

function registry(): { registry: MemoryRegistry; advance(ms: number): void } {
  let now = T0;
  return { registry: new MemoryRegistry({ now: () => now, sweepIntervalMs: 0 }), advance: (ms) => (now += ms) };
}

test('packIPv4 and packFingerprint take exactly what comes back the same', () => {
  for (const ip of ['0.0.0.0', '127.0.0.1', '255.255.255.255', '198.51.100.7']) assert.equal(unpackIPv4(packIPv4(ip)), ip);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1..2.3', '::1', '1.2.3.4 ', 'a.b.c.d']) assert.equal(packIPv4(bad), -1, bad);
  const out = new Uint8Array(FINGERPRINT_BYTES + 3);
  for (let i = 0; i < 50; i++) {
    const fingerprint = fingerprintOf(i);
    assert.equal(packFingerprint(fingerprint, out, 3), true);
    assert.equal(unpackFingerprint(out, 3), fingerprint);
  }
  const good = fingerprintOf(1);
  const lastBitsSet = good.slice(0, -1) + 'b'; // 'b' = 1: a bit past the 32 bytes
  for (const bad of ['fp', good.toUpperCase(), good.slice(1), `${good}a`, lastBitsSet, good.replace(/.$/, '1')]) assert.equal(packFingerprint(bad, out, 0), false, bad);
});

test('every kind of registration comes back equal, packed or whole', async () => {
  const { registry: r } = registry();
  const base = { expiresAt: T0 + 60_000, privateEndpoints: [] };
  const v4 = (address: string, port: number) => ({ family: 'IPv4' as const, address, port });
  const cases: Registration[] = [
    { ...base, uri: 'nattrav://bare', publicEndpoint: v4('203.0.113.9', 40_000) },
    { ...base, uri: 'nattrav://udp', publicEndpoint: v4('203.0.113.9', 0), transport: 'udp', privateEndpoints: [v4('10.0.0.2', 65_535)] },
    { ...base, uri: 'nattrav://two', publicEndpoint: v4('1.2.3.4', 5), transport: 'tcp', privateEndpoints: [v4('10.0.0.2', 1), v4('192.168.0.9', 2)], keyFingerprint: fingerprintOf(7), broker: 'b-1' },
    { ...base, uri: 'nattrav://three', publicEndpoint: v4('1.2.3.4', 5), privateEndpoints: [v4('10.0.0.1', 1), v4('10.0.0.2', 2), v4('10.0.0.3', 3)] },
    { ...base, uri: 'nattrav://v6', publicEndpoint: { family: 'IPv6', address: '2001:db8::1', port: 9 }, broker: 'b-2' },
    { ...base, uri: 'nattrav://v6-private', publicEndpoint: v4('1.2.3.4', 5), privateEndpoints: [{ family: 'IPv6', address: 'fe80::1%eth0', port: 1 }] },
    { ...base, uri: 'nattrav://odd-fingerprint', publicEndpoint: v4('1.2.3.4', 5), keyFingerprint: 'fp' },
    { ...base, uri: 'nattrav://odd-address', publicEndpoint: v4('001.2.3.4', 5) },
    { ...base, uri: 'nattrav://fraction', publicEndpoint: v4('1.2.3.4', 5), expiresAt: T0 + 0.5 },
  ];
  for (const c of cases) await r.put(c);
  for (const c of cases) assert.deepEqual(await r.get(c.uri), c, c.uri);
  // Each switches between packed and whole.
  const swapped = cases.map((c, i) => ({ ...cases[(i + 3) % cases.length], uri: c.uri }) as Registration);
  for (const c of swapped) await r.put(c);
  for (const c of swapped) assert.deepEqual(await r.get(c.uri), c, `${c.uri} again`);
  assert.equal(await r.size(), cases.length);
});

test('a claim compares the stored fingerprint, packed or not', async () => {
  const { registry: r } = registry();
  const reg = { uri: 'nattrav://name', publicEndpoint: { family: 'IPv4' as const, address: '1.2.3.4', port: 5 }, privateEndpoints: [], expiresAt: T0 + 1_000 };
  assert.equal(await r.claim({ ...reg, keyFingerprint: fingerprintOf(1) }), undefined);
  assert.equal(await r.claim({ ...reg, keyFingerprint: fingerprintOf(2) }), fingerprintOf(1));
  await r.put({ ...reg, keyFingerprint: 'short' });
  assert.equal(await r.claim({ ...reg, keyFingerprint: fingerprintOf(2) }), 'short');
  assert.equal(await r.claim({ ...reg, keyFingerprint: 'short' }), undefined);
});

test('slots are reused after deletes and sweeps, past the first growth', async () => {
  const { registry: r, advance } = registry();
  const reg = (i: number, ttl: number): Registration => ({
    uri: `nattrav://p${i}`,
    publicEndpoint: { family: 'IPv4', address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: i & 0xffff },
    privateEndpoints: [],
    expiresAt: T0 + ttl,
    keyFingerprint: fingerprintOf(i),
  });
  for (let i = 0; i < 5_000; i++) await r.put(reg(i, i % 2 === 0 ? 1_000 : 10_000));
  assert.equal(await r.size(), 5_000);
  for (let i = 1; i < 5_000; i += 4) assert.equal(await r.delete(`nattrav://p${i}`), true);
  advance(1_000);
  r.sweep();
  assert.equal(await r.size(), 1_250);
  for (let i = 5_000; i < 8_750; i++) await r.put(reg(i, 10_000));
  assert.equal(await r.size(), 5_000);
  for (let i = 0; i < 8_750; i++) {
    const live = i >= 5_000 || i % 4 === 3;
    assert.deepEqual(await r.get(`nattrav://p${i}`), live ? reg(i, 10_000) : undefined, `p${i}`);
  }
  advance(9_000);
  assert.equal(await r.get('nattrav://p3'), undefined, 'gone at expiresAt');
  assert.equal(await r.size(), 0);
});
