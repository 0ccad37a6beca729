/**
 * The broker's UDP planning (datagram-plan.ts), pure: which strategies each NAT pair
 * gets, that a mapping not on the exchange's address leaves only the relay, and that
 * prediction aims at the last port a sequential NAT gave out.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { datagramSide, planDatagram, scheduleDatagram } from '../../src/broker/datagram-plan.js';
import type { MappingKind } from '../../src/nat/mapping.js';
import { BIRTHDAY_CONE_LAG_MS } from '../../src/broker/schedule.js';
import { BIRTHDAY_PORTS_PER_ROUND, BIRTHDAY_UDP_PROBES, birthdayPorts } from '../../src/peer/datagram/birthday.js';
import { AttrType, MAX_PRIVATE_ENDPOINTS, Method, TransportCode } from '../../src/wire/constants.js';
import { datagramCandidates } from '../../src/peer/datagram/attempt.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addXorAddress } from '../../src/wire/nattrav.js';
import type { TransportAddress } from '../../src/wire/types.js';

const v4 = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
const side = (mapping: MappingKind['kind'], publicAddress: string, verified = true): { mapping: MappingKind; publicAddress: string; verified: boolean } => ({
  mapping: mapping === 'sequential' ? { kind: 'sequential', step: 1 } : ({ kind: mapping } as MappingKind),
  publicAddress,
  verified,
});

test('UDP plans per NAT pair: both sending covers cones, prediction for sequential, birthday for random against a cone, relay last', () => {
  assert.deepEqual(planDatagram(side('eim', '198.51.100.1'), side('eim', '203.0.113.1')), ['direct', 'relay']);
  assert.deepEqual(planDatagram(side('eim', '198.51.100.1'), side('none', '203.0.113.1')), ['public', 'direct', 'relay']);
  assert.deepEqual(planDatagram(side('none', '198.51.100.1'), side('eim', '203.0.113.1')), ['reversal', 'direct', 'relay']);
  assert.deepEqual(planDatagram(side('eim', '198.51.100.1'), side('eim', '198.51.100.1')), ['lan', 'direct', 'relay']);
  assert.deepEqual(planDatagram(side('sequential', '198.51.100.1'), side('eim', '203.0.113.1')), ['predicted', 'relay']);
  assert.deepEqual(planDatagram(side('random', '198.51.100.1'), side('eim', '203.0.113.1')), ['birthday', 'relay']);
  assert.deepEqual(planDatagram(side('eim', '198.51.100.1'), side('random', '203.0.113.1')), ['birthday', 'relay']);
  assert.deepEqual(planDatagram(side('random', '198.51.100.1'), side('none', '203.0.113.1')), ['public', 'relay']);
  assert.deepEqual(planDatagram(side('random', '198.51.100.1'), side('random', '203.0.113.1')), ['relay']);
  assert.deepEqual(planDatagram(side('random', '198.51.100.1'), side('sequential', '203.0.113.1')), ['relay']);
  assert.deepEqual(planDatagram(side('eim', '198.51.100.1', false), side('eim', '203.0.113.1')), ['relay']);
});

test('UDP plans over IPv6 as over IPv4; an IPv4 side and an IPv6 side have only the relay', () => {
  assert.deepEqual(planDatagram(side('none', '2001:db8:a::1'), side('none', '2001:db8:b::1')), ['public', 'direct', 'relay']);
  assert.deepEqual(planDatagram(side('none', '2001:db8:a::1'), side('none', '203.0.113.1')), ['relay']);
  assert.deepEqual(planDatagram(side('eim', '198.51.100.1'), side('none', '2001:db8:b::1')), ['relay']);
});

test('a UDP mapping counts only on the exchange address; private endpoints take the UDP port', () => {
  const request = StunMessage.request(Method.Connect);
  addU32(request, AttrType.Transport, TransportCode.datagram);
  addU32(request, AttrType.UdpPort, 40_000);
  addXorAddress(request, AttrType.UdpMapped, v4('198.51.100.7', 61_000));
  addXorAddress(request, AttrType.UdpMappedAlternate, v4('198.51.100.7', 61_001));
  const honest = datagramSide(request, v4('198.51.100.7', 50_000), [v4('10.0.0.2', 50_000)]);
  assert.equal(honest.verified, true);
  assert.deepEqual(honest.publicEndpoint, v4('198.51.100.7', 61_000));
  assert.deepEqual(honest.privateEndpoints, [v4('10.0.0.2', 40_000)]);
  // The same request through an exchange from another address: its mapping aims elsewhere and is not used.
  const elsewhere = datagramSide(request, v4('203.0.113.9', 50_000), []);
  assert.equal(elsewhere.verified, false);
  assert.deepEqual(elsewhere.probes, []);
});

test('a claimed UDP mapping to port 0 is not verified (only the relay serves it)', () => {
  const request = StunMessage.request(Method.Connect);
  addU32(request, AttrType.Transport, TransportCode.datagram);
  addU32(request, AttrType.UdpPort, 40_000);
  addXorAddress(request, AttrType.UdpMapped, v4('198.51.100.7', 0));
  addXorAddress(request, AttrType.UdpMappedAlternate, v4('198.51.100.7', 0));
  const side = datagramSide(request, v4('198.51.100.7', 50_000), []);
  assert.equal(side.verified, false);
  assert.deepEqual(side.publicEndpoint, v4('198.51.100.7', 50_000));
  assert.deepEqual(side.probes, []);
});

test('private endpoints a peer names: at most MAX_PRIVATE_ENDPOINTS, only LAN addresses passed on to probe; a host without NAT still plans public', () => {
  const request = (mapped: TransportAddress): StunMessage => {
    const message = StunMessage.request(Method.Connect);
    addU32(message, AttrType.Transport, TransportCode.datagram);
    addU32(message, AttrType.UdpPort, mapped.port);
    addXorAddress(message, AttrType.UdpMapped, mapped);
    return message;
  };
  const named = [v4('10.1.2.3', 1), v4('8.8.8.8', 1), v4('172.20.0.1', 1), v4('172.32.0.1', 1), v4('192.168.9.9', 1), v4('100.64.0.9', 1), v4('169.254.1.1', 1), v4('203.0.113.9', 1)];
  const many = Array.from({ length: 40 }, (_, i) => v4(`10.9.0.${i + 1}`, 1));
  const natted = datagramSide(request(v4('198.51.100.7', 40_000)), v4('198.51.100.7', 50_000), [...named, ...many]);
  assert.equal(natted.privateEndpoints.length, MAX_PRIVATE_ENDPOINTS);
  // No NAT: its private endpoint is its public address, which classifies it ('public' is planned).
  const open = datagramSide(request(v4('203.0.113.30', 41_000)), v4('203.0.113.30', 50_000), [v4('203.0.113.30', 1)]);
  const schedule = scheduleDatagram({ initiator: natted, recipient: open }, { initiatorMs: 10, recipientMs: 10 }, { history: [], claimed: new Set(), budget: 10 }, 0);
  assert.equal(schedule.strategy, 'public');
  assert.deepEqual(schedule.answers.initiator.peerPrivateEndpoints, [], 'a public address is not passed on as a LAN endpoint');
  assert.deepEqual(schedule.answers.recipient.peerPrivateEndpoints.slice(0, 5).map((e) => e.address), ['10.1.2.3', '172.20.0.1', '192.168.9.9', '100.64.0.9', '169.254.1.1']);
  assert.ok(schedule.answers.recipient.peerPrivateEndpoints.every((e) => !['8.8.8.8', '172.32.0.1', '203.0.113.9'].includes(e.address)));
  // The peer's side: an older broker may forward anything; only LAN addresses are probed, and no more than the cap.
  const peerPrivateEndpoints = [v4('203.0.113.50', 9), v4('192.168.1.20', 9), v4('192.168.1.21', 0), ...many.map((e) => ({ ...e, port: 9 }))];
  const candidates = datagramCandidates('lan', { peerPublicEndpoint: v4('198.51.100.7', 61_000), peerPrivateEndpoints, peerMapping: { kind: 'eim' } });
  assert.deepEqual(candidates[0], { address: '192.168.1.20', port: 9, family: 'IPv4' });
  assert.ok(!candidates.some((c) => c.address === '203.0.113.50' || c.port === 0), 'no public host and no port 0 among the LAN probes');
  assert.equal(candidates.length, MAX_PRIVATE_ENDPOINTS + 1, 'the capped LAN endpoints and the public one');
  assert.deepEqual(candidates.at(-1), { address: '198.51.100.7', port: 61_000, family: 'IPv4' });
});

test('prediction tells the cone side the last port the sequential NAT gave out', () => {
  const sequential = { publicEndpoint: v4('198.51.100.7', 61_000), privateEndpoints: [v4('10.0.0.2', 40_000)], probes: [v4('198.51.100.7', 61_001)], verified: true };
  const cone = { publicEndpoint: v4('203.0.113.5', 7_000), privateEndpoints: [v4('10.1.0.2', 7_100)], probes: [v4('203.0.113.5', 7_000)], verified: true };
  const schedule = scheduleDatagram({ initiator: sequential, recipient: cone }, { initiatorMs: 10, recipientMs: 10 }, { history: [], claimed: new Set(), budget: 10 }, 0);
  assert.equal(schedule.strategy, 'predicted');
  assert.equal(schedule.answers.recipient.peerPublicEndpoint.port, 61_001);
  assert.deepEqual(schedule.answers.recipient.peerMapping, { kind: 'sequential', step: 1 });
  assert.equal(schedule.answers.initiator.peerPublicEndpoint.port, 7_000);
});

test('birthday: the cone side starts later, and probes fresh random ports each round up to the bound', () => {
  const random = { publicEndpoint: v4('198.51.100.7', 61_000), privateEndpoints: [v4('10.0.0.2', 40_000)], probes: [v4('198.51.100.7', 33_017)], verified: true };
  const cone = { publicEndpoint: v4('203.0.113.5', 7_000), privateEndpoints: [v4('10.1.0.2', 7_100)], probes: [v4('203.0.113.5', 7_000)], verified: true };
  const schedule = scheduleDatagram({ initiator: random, recipient: cone }, { initiatorMs: 10, recipientMs: 10 }, { history: [], claimed: new Set(), budget: 10 }, 0);
  assert.equal(schedule.strategy, 'birthday');
  assert.equal(schedule.delays.recipientMs - schedule.delays.initiatorMs, BIRTHDAY_CONE_LAG_MS);
  const next = birthdayPorts({ address: '198.51.100.7', port: 61_000, family: 'IPv4' });
  const seen = new Set<number>();
  for (let round = 0; round < BIRTHDAY_UDP_PROBES / BIRTHDAY_PORTS_PER_ROUND; round++) {
    const ports = next();
    assert.equal(ports.length, BIRTHDAY_PORTS_PER_ROUND);
    for (const p of ports) {
      assert.equal(p.address, '198.51.100.7');
      assert.ok(p.port >= 1024 && p.port <= 65_535 && !seen.has(p.port), `port ${p.port} fresh and in range`);
      seen.add(p.port);
    }
  }
  assert.deepEqual(next(), [], 'no more than BIRTHDAY_UDP_PROBES ports in all');
});
