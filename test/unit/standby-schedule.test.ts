/**
 * The broker's side of warm recipients on a fake clock with fake channels: the standby
 * table (broker/standby.ts: grant and cap, proof, refreshes), the warm attempt
 * (rendezvous.ts: answered down the standby the moment the Connect arrives, no
 * ConnectionRequest, start delays from the refreshes' and the Connect's round trips) and
 * the mapping memory (mapping-memory.ts). No sockets; no test waits in real time.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { MAX_CONNECT_RTT_MS } from '../../src/broker/exchange-requests.js';
import { MAPPING_MEMORY_TTL_MS, MappingMemory } from '../../src/broker/mapping-memory.js';
import { MAPPING_WAIT_MS } from '../../src/broker/rendezvous.js';
import { STANDBY_REFRESH_MS, STANDBY_REFRESH_TIMEOUT_MS } from '../../src/broker/standby.js';
import { openSecret, recipientSealKey } from '../../src/security/attempt-secret.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addRole, addXorAddress, getAttemptId, getErrorCode, getU32Attr } from '../../src/wire/nattrav.js';
import { FakeChannel } from '../helpers/fake-channel.js';
import { settle } from '../helpers/fake-clock.js';
import { StrategyCode } from '../../src/nat/strategy.js';
import { A, B, BOB, CAROL, NOW, answerOf, at, connectRequest, firstAttempt, harness, initiatorProbe, scheduledEvents, standby, warmStandby, type Harness } from '../helpers/standby-harness.js';

describe('standby table: grants, proof, refreshes', () => {
  test('granted while under the cap; at the cap another URI is refused, the same URI replaces its own', async () => {
    const h = await harness(1);
    assert.equal(h.rendezvous.standbyGrant(), 1);
    const first = await standby(h, BOB, h.keys.get(BOB));
    assert.equal(answerOf(first).cls, MessageClass.SuccessResponse);
    assert.equal(getU32Attr(answerOf(first), AttrType.StandbyRefreshMs), STANDBY_REFRESH_MS);
    assert.equal(getU32Attr(answerOf(first), AttrType.AlternatePort), 3479);
    assert.deepEqual(first.sentOptions[0]?.integritySha256Key, h.keys.get(BOB), 'the answer is under the session key');
    assert.equal(h.rendezvous.standbyGrant(), 0, 'at the cap a registration is granted none');
    const other = await standby(h, CAROL, h.keys.get(CAROL));
    assert.equal(getErrorCode(answerOf(other))?.code, StunErrorCode.ServerError);
    assert.ok(other.ended);
    const again = await standby(h, BOB, h.keys.get(BOB), 50_002);
    assert.equal(answerOf(again).cls, MessageClass.SuccessResponse);
    assert.ok(first.ended, 'the old standby of the URI is closed');
    assert.equal(h.rendezvous.standbys, 1);
  });

  test('unproven, proven for another URI, unknown, or over a control connection: refused and closed', async () => {
    const h = await harness();
    const cases: Array<[string, Buffer | undefined, number]> = [
      [BOB, undefined, StunErrorCode.Forbidden],
      [BOB, randomBytes(32), StunErrorCode.Forbidden],
      // Carol's holder proves Carol's session, not Bob's.
      [BOB, h.keys.get(CAROL), StunErrorCode.Forbidden],
      ['nattrav://nobody', randomBytes(32), StunErrorCode.NotFound],
      ['nattrav://control', h.keys.get('nattrav://control'), StunErrorCode.Forbidden],
    ];
    for (const [uri, key, code] of cases) {
      const channel = await standby(h, uri, key);
      assert.equal(getErrorCode(answerOf(channel))?.code, code, `${uri} under ${key === undefined ? 'no key' : 'a key'}`);
      assert.ok(channel.ended);
    }
    assert.equal(h.rendezvous.standbys, 0);
  });

  test('refreshed at once and every interval; an unanswered refresh, a session gone or a withdrawal drops it', async () => {
    const h = await harness();
    const channel = await standby(h, BOB, h.keys.get(BOB));
    assert.equal(channel.requested.length, 1, 'the first refresh at once');
    assert.equal(channel.requested[0]?.method, Method.StandbyRefresh);
    await h.clock.advance(50 + STANDBY_REFRESH_MS);
    assert.equal(channel.requested.length, 2);
    // The session ends (withdrawn): the next refresh's check drops the standby.
    h.keys.delete(BOB);
    await h.clock.advance(50);
    assert.ok(channel.ended);
    assert.equal(h.rendezvous.standbys, 0);

    // A withdrawal closes it at once, not at the next refresh.
    const withdrawn = await standby(h, CAROL, h.keys.get(CAROL), 50_006);
    h.rendezvous.withdrawn(CAROL);
    assert.ok(withdrawn.ended);
    assert.equal(h.rendezvous.standbys, 0);

    const silent = await standby(h, CAROL, h.keys.get(CAROL), 50_000, STANDBY_REFRESH_TIMEOUT_MS + 1_000);
    await h.clock.advance(STANDBY_REFRESH_TIMEOUT_MS);
    assert.ok(silent.ended, 'a standby that does not answer its refresh is dropped');
    assert.equal(h.rendezvous.standbys, 0);
  });
});

describe('a warm attempt', () => {
  test('answered down the standby the moment the Connect arrives: no ConnectionRequest, no Probe, delays from both round trips', async () => {
    const h = await harness();
    await firstAttempt(h);
    // The initiator's NAT is remembered from that attempt: nothing to wait for.
    const standbyChannel = await warmStandby(h, BOB, 50_004);
    const initiator = new FakeChannel(h.clock, at(A, 40_010), 10);
    await h.rendezvous.connect(initiator, connectRequest(2, 10));
    assert.equal(h.notified.length, 0, 'no ConnectionRequest');
    assert.equal(initiator.requested.length, 0, 'no Probe of the initiator');
    const answer = answerOf(initiator);
    assert.equal(answer.cls, MessageClass.SuccessResponse, 'answered with no time passing');
    const down = standbyChannel.sent.find((m) => m.method === Method.StandbyAttempt);
    assert.ok(down !== undefined && down.cls === MessageClass.Request, 'the recipient is answered down its standby');
    assert.deepEqual(standbyChannel.sentOptions[standbyChannel.sent.indexOf(down)]?.integritySha256Key, h.keys.get(BOB));
    // One-way 5 ms to the initiator, 25 ms to the recipient: the initiator waits 20 ms.
    assert.equal(getU32Attr(answer, AttrType.StartDelay), 20);
    assert.equal(getU32Attr(down, AttrType.StartDelay), 0);
    const id = getAttemptId(down) as Uint8Array;
    assert.ok(openSecret(recipientSealKey(h.keys.get(BOB), id), down.get(AttrType.AttemptSecret) as Uint8Array, id) !== undefined);
    assert.ok(standbyChannel.ended && initiator.ended, 'the broker closes both first');
    const scheduled = scheduledEvents(h).at(-1);
    assert.equal(scheduled?.warm, true);
    assert.equal(scheduled?.rttRecipientMs, 50, 'the refresh measured it');
    assert.equal(h.rendezvous.standbys, 0, 'used: the recipient opens the next one');
  });

  test('a new initiator NAT: its mapping probe is waited for, then remembered for its next attempt', async () => {
    const h = await harness();
    const initiator = await firstAttempt(h);
    assert.equal(answerOf(initiator).cls, MessageClass.SuccessResponse);
    assert.equal(scheduledEvents(h).at(-1)?.initiatorMapping, 'eim');
    // The next attempt from that NAT needs no probe (and the recipient's next standby comes).
    await warmStandby(h, BOB, 50_004);
    const next = new FakeChannel(h.clock, at(A, 40_010), 10);
    await h.rendezvous.connect(next, connectRequest(2, 10));
    assert.equal(answerOf(next).cls, MessageClass.SuccessResponse, 'answered at once');
    assert.equal(h.notified.length, 0);
  });

  test("a standby closed while its attempt waits for the initiator's probe (the recipient got busy): the attempt goes cold, and the recipient's refusal reaches the initiator with its reason", async () => {
    const h = await harness();
    const standbyChannel = await warmStandby(h);
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    const connecting = h.rendezvous.connect(initiator, connectRequest(1, 10));
    await settle();
    assert.equal(initiator.answer, undefined, "waiting for the initiator's probe");
    assert.equal(h.notified.length, 0);
    standbyChannel.hangUp();
    await settle();
    assert.equal(h.notified.length, 1, 'a ConnectionRequest instead');
    assert.equal(initiator.answer, undefined, 'no failure for the closed standby');
    // The probe comes: the warm path, its standby gone, must not conclude now.
    initiatorProbe(h, 1, at(A, 40_000));
    await connecting;
    assert.equal(initiator.answer, undefined, 'nothing concluded on the closed standby');
    assert.equal(scheduledEvents(h).length, 0);
    const request = h.notified[0] as StunMessage;
    const refusal = request.errorResponse(StunErrorCode.TooManyRequests, 'recipient busy: 16 attempts in progress');
    h.rendezvous.acknowledge(decodeMessage(encodeMessage(refusal, { integritySha256Key: h.keys.get(BOB) as Buffer, fingerprint: true })), { transport: 'udp', from: at(B, 3478) });
    const error = getErrorCode(answerOf(initiator));
    assert.equal(error?.code, StunErrorCode.RecipientUnreachable);
    assert.match(String(error?.reason), /refused the connection request: recipient busy: 16 attempts in progress/);
  });

  test('no usable standby (its mapping probe never came, or a CONNECT-RTT out of range is probed): the old paths', async () => {
    const h = await harness();
    const cold = await standby(h, BOB, h.keys.get(BOB));
    await h.clock.advance(5_000); // the probe wait ends with no probe
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    await h.rendezvous.connect(initiator, connectRequest(1, 10));
    assert.equal(h.notified.length, 1, 'a ConnectionRequest: the standby\'s mapping is unknown');
    assert.equal(cold.ended, false, 'the standby stays for later');

    const w = await harness();
    await firstAttempt(w);
    await warmStandby(w, BOB, 50_004);
    const liar = new FakeChannel(w.clock, at(A, 40_010), 10);
    const connecting = w.rendezvous.connect(liar, connectRequest(2, 999_999));
    await settle();
    assert.equal(liar.requested[0]?.method, Method.Probe, 'a CONNECT-RTT past the bound is not believed: the broker probes');
    await w.clock.advance(10);
    await connecting;
    assert.equal(getU32Attr(answerOf(liar), AttrType.StartDelay), 20);
  });
});

describe('mapping memory', () => {
  test('bounded, oldest out; expires; remembers only eim (never none: a claim of one peer); disagreement disputes the address', () => {
    const memory = new MappingMemory(2, 1_000);
    memory.record('192.0.2.1', { kind: 'eim' }, 0);
    memory.record('192.0.2.2', { kind: 'eim' }, 10);
    memory.record('192.0.2.3', { kind: 'eim' }, 20);
    assert.equal(memory.size, 2);
    assert.equal(memory.known('192.0.2.1', 30), undefined, 'the oldest went');
    assert.deepEqual(memory.known('192.0.2.2', 30), { kind: 'eim' });
    assert.equal(memory.known('192.0.2.3', 1_020), undefined, 'expired');
    memory.record('192.0.2.4', { kind: 'sequential', step: 1 }, 0);
    assert.equal(memory.known('192.0.2.4', 1), undefined, 'prediction needs fresh ports');
    memory.record('192.0.2.2', { kind: 'unknown' }, 20);
    assert.deepEqual(memory.known('192.0.2.2', 30), { kind: 'eim' }, 'no probe teaches nothing');
    memory.record('192.0.2.5', { kind: 'none' }, 40);
    assert.equal(memory.known('192.0.2.5', 41), undefined, "'none' is the peer's own claim: never remembered");
    assert.equal(MAPPING_MEMORY_TTL_MS, 600_000);

    // Two hosts behind one address: an eim one and a random one. Once they disagree, nothing is known ahead for the TTL.
    const shared = new MappingMemory(8, 1_000);
    shared.record('192.0.2.9', { kind: 'eim' }, 0);
    shared.record('192.0.2.9', { kind: 'random' }, 10);
    shared.record('192.0.2.9', { kind: 'eim' }, 20);
    assert.equal(shared.known('192.0.2.9', 30), undefined, 'disputed: the eim host does not win it back');
    assert.deepEqual(shared.known('192.0.2.9', 1_021), undefined, 'the dispute and the record expire together');
    shared.record('192.0.2.9', { kind: 'eim' }, 1_100);
    assert.deepEqual(shared.known('192.0.2.9', 1_101), { kind: 'eim' }, 'after the TTL the address starts afresh');
    shared.contradict('192.0.2.9', 1_200);
    assert.equal(shared.known('192.0.2.9', 1_201), undefined, 'a contradicting late probe disputes it too');
  });

  test("a stranger claiming PRIVATE-ENDPOINT = its public endpoint gets 'none' for its own attempt only", async () => {
    const h = await harness();
    await warmStandby(h);
    const stranger = new FakeChannel(h.clock, at(A, 40_000), 10);
    const connecting = h.rendezvous.connect(stranger, connectRequest(1, 10, at(A, 40_000)));
    await settle();
    // Its own claim needs no probe: answered at once.
    await connecting;
    assert.equal(scheduledEvents(h).at(-1)?.initiatorMapping, 'none');
    initiatorProbe(h, 1, at(A, 40_000));
    // Another host behind A: nothing is known for it, so its attempt waits for its own probe.
    await warmStandby(h, BOB, 50_004);
    const victim = new FakeChannel(h.clock, at(A, 40_010), 10);
    const next = h.rendezvous.connect(victim, connectRequest(2, 10));
    await settle();
    assert.equal(victim.answer, undefined, "the stranger's 'none' is not remembered for A");
    initiatorProbe(h, 2, at(A, 61_000));
    await next;
    assert.equal(scheduledEvents(h).at(-1)?.initiatorMapping, 'random');
  });

  test("two hosts behind one address (CGNAT): the random host's late probe disputes the eim record; its next attempt waits and is planned as random", async () => {
    const h = await harness();
    await firstAttempt(h); // host 1 (eim) teaches the broker A
    await warmStandby(h, BOB, 50_004);
    const host2 = new FakeChannel(h.clock, at(A, 40_010), 10);
    await h.rendezvous.connect(host2, connectRequest(2, 10, at('192.168.7.9', 5_555)));
    assert.equal(scheduledEvents(h).at(-1)?.initiatorMapping, 'eim', 'the warm path is fast: scheduled with what was remembered');
    // Host 2's probe comes after the decision, from another port: its NAT is not eim.
    initiatorProbe(h, 2, at(A, 61_000));
    await warmStandby(h, BOB, 50_008);
    const again = new FakeChannel(h.clock, at(A, 40_020), 10);
    const next = h.rendezvous.connect(again, connectRequest(3, 10, at('192.168.7.9', 5_556)));
    await settle();
    assert.equal(again.answer, undefined, 'disputed: the next attempt waits for its own probe');
    initiatorProbe(h, 3, at(A, 61_010));
    await next;
    const scheduled = scheduledEvents(h).at(-1);
    assert.equal(scheduled?.initiatorMapping, 'random');
    assert.ok(scheduled?.plan.includes('birthday'), `a random side gets the birthday strategy: ${scheduled?.plan.join(', ')}`);
  });

  test("the recipient side too: a cold attempt scheduled with the recipient's remembered eim is checked by its late probe", async () => {
    const h = await harness();
    const key = h.keys.get(BOB) as Buffer;
    await warmStandby(h); // teaches the broker B (eim)
    h.rendezvous.dropStandbys();
    /** A cold attempt from a host with no NAT at A (its own claim): only the recipient's mapping could be waited for. */
    const cold = async (id: number, port: number): Promise<{ initiator: FakeChannel; connecting: Promise<void> }> => {
      const initiator = new FakeChannel(h.clock, at(A, port), 10);
      const connecting = h.rendezvous.connect(initiator, connectRequest(id, 10, at(A, port)));
      await settle();
      const join = StunMessage.request(Method.Join);
      addAttemptId(join, new Uint8Array(16).fill(id));
      addXorAddress(join, AttrType.PrivateEndpoint, at('10.0.0.2', 50_100 + id));
      void h.rendezvous.join(new FakeChannel(h.clock, at(B, 50_100 + id), 10), decodeMessage(encodeMessage(join, { integritySha256Key: key })));
      await settle();
      await h.clock.advance(10); // both round-trip probes answered
      return { initiator, connecting };
    };
    const first = await cold(1, 40_000);
    await first.connecting;
    assert.equal(answerOf(first.initiator).cls, MessageClass.SuccessResponse, "scheduled at once with the recipient's remembered eim");
    // The recipient's probe comes late, from another port than its Join: its NAT is not eim.
    const probe = StunMessage.request(Method.MappingProbe);
    addAttemptId(probe, new Uint8Array(16).fill(1));
    addRole(probe, 'recipient');
    h.rendezvous.mappingProbe(new FakeChannel(h.clock, at(B, 62_000)), decodeMessage(encodeMessage(probe, { integritySha256Key: key })));
    const second = await cold(2, 40_010);
    assert.equal(second.initiator.answer, undefined, "disputed: the next attempt waits for the recipient's own probe");
    await h.clock.advance(MAPPING_WAIT_MS);
    await second.connecting;
    assert.equal(answerOf(second.initiator).cls, MessageClass.SuccessResponse);
  });

  test('a late probe from the same port confirms the record; one forged under another MAPPING-KEY changes nothing', async () => {
    const h = await harness();
    await firstAttempt(h);
    await warmStandby(h, BOB, 50_004);
    const request = connectRequest(2, 10);
    const mappingKey = randomBytes(32);
    request.add(AttrType.MappingKey, mappingKey);
    await h.rendezvous.connect(new FakeChannel(h.clock, at(A, 40_010), 10), request);
    // A neighbour behind A sends a probe for that attempt from another port, without its key.
    const forged = StunMessage.request(Method.MappingProbe);
    addAttemptId(forged, new Uint8Array(16).fill(2));
    addRole(forged, 'initiator');
    h.rendezvous.mappingProbe(new FakeChannel(h.clock, at(A, 61_000)), decodeMessage(encodeMessage(forged, { integritySha256Key: randomBytes(32) })));
    await warmStandby(h, BOB, 50_008);
    const next = new FakeChannel(h.clock, at(A, 40_020), 10);
    await h.rendezvous.connect(next, connectRequest(3, 10));
    assert.equal(answerOf(next).cls, MessageClass.SuccessResponse, 'still remembered: answered at once');
  });
});

describe('a warm attempt in the other family', () => {
  test('a Connect over IPv6 does not take an IPv4 standby: the ConnectionRequest goes out and the standby stays for IPv4', async () => {
    const h = await harness();
    await warmStandby(h);
    const initiator = new FakeChannel(h.clock, { family: 'IPv6', address: '2001:db8:1::10', port: 40_000 }, 10);
    void h.rendezvous.connect(initiator, connectRequest(7, 10));
    await settle();
    assert.equal(h.notified.length, 1, 'a ConnectionRequest, not the standby');
    assert.equal(h.notified[0]?.method, Method.ConnectionRequest);
    assert.equal(h.rendezvous.standbys, 1, 'the IPv4 standby is kept');
  });
});

describe('a standby whose holder moved; the CONNECT-RTT bound; the injected clock', () => {
  test('the registration moved to another address: its standby is dropped and the ConnectionRequest goes to the new one', async () => {
    const h = await harness();
    const old = await warmStandby(h);
    // A refresh under the same session from a new address (register.ts moves the registration).
    await h.registry.put({ uri: BOB, publicEndpoint: at('192.0.2.77', 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000 });
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    void h.rendezvous.connect(initiator, connectRequest(1, 10));
    await settle();
    assert.equal(old.sent.some((m) => m.method === Method.StandbyAttempt), false, 'nothing goes down the dead standby');
    assert.ok(old.ended, 'the dead standby is closed');
    assert.equal(h.rendezvous.standbys, 0);
    assert.equal(h.notified.length, 1, 'a ConnectionRequest instead');
    assert.deepEqual(h.notifiedTo[0], at('192.0.2.77', 3478));
  });

  test(`CONNECT-RTT is believed up to ${MAX_CONNECT_RTT_MS} ms, so a lie holds the recipient back half a second at most`, async () => {
    assert.equal(MAX_CONNECT_RTT_MS, 1_000);
    const h = await harness();
    await firstAttempt(h);
    const down = await warmStandby(h, BOB, 50_004);
    const liar = new FakeChannel(h.clock, at(A, 40_010), 10);
    await h.rendezvous.connect(liar, connectRequest(2, MAX_CONNECT_RTT_MS));
    assert.equal(liar.requested.length, 0, 'at the bound it is believed');
    const attempt = down.sent.find((m) => m.method === Method.StandbyAttempt) as StunMessage;
    assert.equal(getU32Attr(answerOf(liar), AttrType.StartDelay), 0);
    const recipientDelay = getU32Attr(attempt, AttrType.StartDelay) ?? Number.NaN;
    assert.ok(recipientDelay > 0 && recipientDelay <= MAX_CONNECT_RTT_MS / 2, `the recipient waits ${recipientDelay} ms`);

    await warmStandby(h, BOB, 50_008);
    const above = new FakeChannel(h.clock, at(A, 40_020), 10);
    const connecting = h.rendezvous.connect(above, connectRequest(3, MAX_CONNECT_RTT_MS + 1));
    await settle();
    assert.equal(above.requested[0]?.method, Method.Probe, 'one past the bound: the broker probes');
    await h.clock.advance(10);
    await connecting;
  });

  test("a dual-stack recipient's second family is current on the broker's clock, not the wall clock", async () => {
    const h = await harness();
    const v6 = { family: 'IPv6' as const, address: '2001:db8:2::20', port: 3478 };
    // Valid for an hour of the fake clock (NOW is in 1970: by the wall clock it lapsed long ago).
    await h.registry.put({ uri: BOB, publicEndpoint: at(B, 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000, secondFamily: { publicEndpoint: v6, privateEndpoints: [], expiresAt: NOW + 3_600_000 } });
    void h.rendezvous.connect(new FakeChannel(h.clock, { family: 'IPv6', address: '2001:db8:1::10', port: 40_000 }, 10), connectRequest(1, 10));
    await settle();
    assert.deepEqual(h.notifiedTo[0], v6, 'asked over IPv6, where the Connect came in');
  });
});

describe('a relayed attempt on a symmetric standby', () => {
  /**
   * A cold attempt for BOB from A:`port` (whose probe comes from A:`probePort`) run to its end:
   * the recipient joins from B, both round-trip probes answer, its mapping probe shows B random.
   */
  async function coldAttempt(h: Harness, id: number, port: number, probePort: number): Promise<FakeChannel> {
    const initiator = new FakeChannel(h.clock, at(A, port), 10);
    const connecting = h.rendezvous.connect(initiator, connectRequest(id, 10));
    await settle();
    assert.equal(h.notified.at(-1)?.method, Method.ConnectionRequest, 'the symmetric standby is not taken: a ConnectionRequest');
    const join = StunMessage.request(Method.Join);
    addAttemptId(join, new Uint8Array(16).fill(id));
    addXorAddress(join, AttrType.PrivateEndpoint, at('10.0.0.2', 50_100 + id));
    void h.rendezvous.join(new FakeChannel(h.clock, at(B, 50_100 + id), 10), decodeMessage(encodeMessage(join, { integritySha256Key: h.keys.get(BOB) as Buffer })));
    await settle();
    initiatorProbe(h, id, at(A, probePort));
    const probe = StunMessage.request(Method.MappingProbe);
    addAttemptId(probe, new Uint8Array(16).fill(id));
    addRole(probe, 'recipient');
    h.rendezvous.mappingProbe(new FakeChannel(h.clock, at(B, 52_100 + id)), decodeMessage(encodeMessage(probe, { integritySha256Key: h.keys.get(BOB) as Buffer })));
    await h.clock.advance(10); // both round-trip probes answered
    await connecting;
    return initiator;
  }

  test('two random NATs, the initiator\'s remembered: the relay at once, down the standby, without waiting for its probe', async () => {
    const h = await harness();
    const standbyChannel = await warmStandby(h, BOB, 50_000, 52_000); // B maps each flow to a new port
    // A new initiator address: its kind is not known, so the standby stays and the old path runs.
    const first = await coldAttempt(h, 1, 40_000, 61_000);
    assert.equal(getU32Attr(answerOf(first), AttrType.Strategy), StrategyCode.relay);
    assert.equal(h.rendezvous.standbys, 1, 'the standby was kept');
    // A is remembered as random now: random x random leaves only the relay.
    const next = new FakeChannel(h.clock, at(A, 40_010), 10);
    await h.rendezvous.connect(next, connectRequest(2, 10));
    const answer = answerOf(next);
    assert.equal(answer.cls, MessageClass.SuccessResponse, 'answered with no time passing: no probe waited for');
    assert.equal(getU32Attr(answer, AttrType.Strategy), StrategyCode.relay);
    assert.equal(h.notified.length, 1, 'no second ConnectionRequest');
    const down = standbyChannel.sent.find((m) => m.method === Method.StandbyAttempt);
    assert.ok(down !== undefined, 'the recipient is answered down its standby');
    assert.equal(getU32Attr(down, AttrType.Strategy), StrategyCode.relay);
    const scheduled = scheduledEvents(h).at(-1);
    assert.equal(scheduled?.warm, true);
    assert.equal(scheduled?.initiatorMapping, 'random');
    assert.equal(scheduled?.recipientMapping, 'random');
    assert.deepEqual(scheduled?.plan, ['relay']);
    assert.equal(h.rendezvous.standbys, 0, 'used: the recipient opens the next one');
  });

  test('a symmetric standby is not taken where another strategy could work: an eim initiator, or a recipient with a port mapping', async () => {
    const h = await harness();
    await firstAttempt(h); // A is eim: eim x random plans reversal and birthday before the relay
    await warmStandby(h, CAROL, 50_010, 52_010);
    const initiator = new FakeChannel(h.clock, at(A, 40_010), 10);
    void h.rendezvous.connect(initiator, connectRequest(2, 10, at('192.168.1.2', 40_000), CAROL));
    await settle();
    assert.equal(h.notified.at(-1)?.method, Method.ConnectionRequest);
    assert.equal(initiator.answer, undefined, 'the cold path: waiting for the Join');
    assert.equal(h.rendezvous.standbys, 1, "carol's standby stays");

    const m = await harness();
    await m.registry.put({ uri: BOB, publicEndpoint: at(B, 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000, mappedEndpoint: at(B, 8_000) });
    await warmStandby(m, BOB, 50_000, 52_000);
    await coldAttempt(m, 1, 40_000, 61_000); // A: random
    void m.rendezvous.connect(new FakeChannel(m.clock, at(A, 40_010), 10), connectRequest(2, 10));
    await settle();
    assert.equal(m.notified.length, 2, 'a port mapping may connect a random initiator: no relay at once');
  });

  test('a late probe from the exchange\'s own port disputes the remembered random: the next attempt takes the old path', async () => {
    const h = await harness();
    await warmStandby(h, BOB, 50_000, 52_000);
    await coldAttempt(h, 1, 40_000, 61_000);
    await h.rendezvous.connect(new FakeChannel(h.clock, at(A, 40_010), 10), connectRequest(2, 10));
    assert.equal(h.notified.length, 1, 'relayed at once');
    // Another host behind A, whose NAT kept the port: A is not uniformly random.
    initiatorProbe(h, 2, at(A, 40_010));
    await warmStandby(h, BOB, 50_004, 52_004);
    void h.rendezvous.connect(new FakeChannel(h.clock, at(A, 40_020), 10), connectRequest(3, 10));
    await settle();
    assert.equal(h.notified.length, 2, 'disputed: a ConnectionRequest, the standby is not taken');
    assert.equal(h.rendezvous.standbys, 1);
  });

  test('the memory tells the kind of any NAT it recorded (not only eim), until disputed or expired', () => {
    const memory = new MappingMemory(8, 1_000);
    memory.record('192.0.2.1', { kind: 'random' }, 0);
    memory.record('192.0.2.2', { kind: 'sequential', step: 1 }, 0);
    assert.deepEqual(memory.behaviour('192.0.2.1', 10), { kind: 'random' });
    assert.equal(memory.known('192.0.2.1', 10), undefined, 'no port to punch from is known ahead');
    assert.deepEqual(memory.behaviour('192.0.2.2', 10), { kind: 'sequential', step: 1 });
    assert.equal(memory.behaviour('192.0.2.1', 1_000), undefined, 'expired');
    memory.record('192.0.2.2', { kind: 'eim' }, 20);
    assert.equal(memory.behaviour('192.0.2.2', 30), undefined, 'disputed');
  });
});

