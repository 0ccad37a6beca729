/** broker/family.ts: a registration seen from one address family, and the addresses a broker announces. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkAnnounce, otherFamilyBroker, registrationInFamily } from '../../src/broker/family.js';
import type { Registration } from '../../src/broker/registry/registry.js';

const NOW = 1_000_000;
const DUAL: Registration = {
  uri: 'nattrav://dual',
  publicEndpoint: { family: 'IPv4', address: '198.51.100.2', port: 40_000 },
  privateEndpoints: [{ family: 'IPv4', address: '10.0.0.2', port: 40_000 }],
  expiresAt: NOW + 30_000,
  transport: 'udp',
  keyFingerprint: 'k',
  broker: 'b-4',
  mappedEndpoint: { family: 'IPv4', address: '198.51.100.2', port: 5000 },
  secondFamily: {
    publicEndpoint: { family: 'IPv6', address: '2001:db8:2::2', port: 41_000 },
    privateEndpoints: [{ family: 'IPv6', address: '2001:db8:2::2', port: 41_000 }],
    expiresAt: NOW + 20_000,
    broker: 'b-6',
  },
};

test('seen from its first family a registration is itself; from its second, that family\'s endpoints and broker, without the first\'s port mapping', () => {
  assert.equal(registrationInFamily(DUAL, 'IPv4', NOW), DUAL);
  const v6 = registrationInFamily(DUAL, 'IPv6', NOW);
  assert.deepEqual(v6, {
    uri: 'nattrav://dual',
    publicEndpoint: { family: 'IPv6', address: '2001:db8:2::2', port: 41_000 },
    privateEndpoints: [{ family: 'IPv6', address: '2001:db8:2::2', port: 41_000 }],
    expiresAt: NOW + 30_000,
    transport: 'udp',
    keyFingerprint: 'k',
    broker: 'b-6',
  });
});

test('no registration in a family: none held, or the second one lapsed', () => {
  const { secondFamily: _none, ...single } = DUAL;
  assert.equal(registrationInFamily(single, 'IPv6', NOW), undefined);
  assert.equal(registrationInFamily(DUAL, 'IPv6', NOW + 20_000), undefined, 'gone at its expiresAt');
  assert.ok(registrationInFamily(DUAL, 'IPv6', NOW + 19_999));
});

test('announce: IP literals (brackets allowed), one per family; the other family is told on the broker port', () => {
  assert.deepEqual(checkAnnounce(['198.51.100.7', '[2001:db8::7]']), ['198.51.100.7', '2001:db8::7']);
  assert.deepEqual(checkAnnounce(undefined), []);
  assert.throws(() => checkAnnounce(['broker.example']), /announce\[0\]: expected an IPv4 or IPv6 address/);
  assert.throws(() => checkAnnounce(['198.51.100.7:3478']), /announce\[0\]/);
  assert.throws(() => checkAnnounce(['2001:db8::7', '2001:db8::8'], '--announce'), /--announce: two IPv6 addresses/);
  const announced = checkAnnounce(['198.51.100.7', '2001:db8::7']);
  assert.deepEqual(otherFamilyBroker(announced, 'IPv4', 3478), { family: 'IPv6', address: '2001:db8::7', port: 3478 });
  assert.deepEqual(otherFamilyBroker(announced, 'IPv6', 3478), { family: 'IPv4', address: '198.51.100.7', port: 3478 });
  assert.equal(otherFamilyBroker(['198.51.100.7'], 'IPv4', 3478), undefined, 'no IPv6 address announced');
});
