/**
 * The rendezvous' decisions (schedule.ts, nat/plan.ts chooseStrategy) as pure
 * functions, and the rendezvous itself (rendezvous.ts) on a fake clock with fake
 * exchange channels: no sockets, and no test waits for a timer in real time.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { openSecret, recipientSealKey } from '../../src/security/attempt-secret.js';
import { MAPPING_WAIT_MS, Rendezvous, type ExchangeChannel, type RendezvousEvent } from '../../src/broker/rendezvous.js';
import { resolveLimits, type BrokerLimitsOptions, type LimitedReport } from '../../src/broker/limits.js';
import { ATTEMPT_HISTORY_MS, BIRTHDAY_CONE_LAG_MS, scheduleAttempt, type AttemptSide, type Failures } from '../../src/broker/schedule.js';
import { decodeMappingKind } from '../../src/nat/mapping.js';
import { chooseStrategy } from '../../src/nat/plan.js';
import { STRATEGY_NAMES, strategyMask, strategyName, type StrategyName } from '../../src/nat/strategy.js';
import { encodeMessage, decodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, RoleCode, StrategyCode, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import {
  addAttemptId,
  addRole,
  addU32,
  addUri,
  addXorAddress,
  getErrorCode,
  getRole,
  getU32Attr,
  getXorAddressAttr,
  getXorAddressAttrs,
  getXorMappedAddress,
  type RoleName,
} from '../../src/wire/nattrav.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';
import { FakeChannel } from '../helpers/fake-channel.js';

const at = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
const A = '203.0.113.10';
const B = '198.51.100.20';
const A2 = '203.0.113.11';
const NOW = 5_000_000;

/** A side behind a NAT of the given kind, as the broker sees it: exchange from port 40000, one probe. */
function nat(kind: 'eim' | 'sequential' | 'random' | 'none' | 'unknown', address: string, localAddress: string): AttemptSide {
  const exchange = kind === 'none' ? at(localAddress, 40_000) : at(address, 40_000);
  const probePort = { eim: 40_000, sequential: 40_001, random: 51_234, none: 40_000, unknown: 0 }[kind];
  return {
    publicEndpoint: exchange,
    privateEndpoints: [at(localAddress, 40_000)],
    probes: kind === 'unknown' ? [] : [{ ...exchange, port: probePort }],
  };
}
const fresh: Failures = { history: [], claimed: new Set(), budget: 100 };
const after = (...strategies: StrategyName[]): Failures => ({
  history: strategies.map((strategy) => ({ strategy, at: NOW - 1_000 })),
  claimed: new Set(strategies),
  budget: 100,
});

describe('scheduleAttempt: every strategy, its answers and its delays', () => {
  const rtts = { initiatorMs: 10, recipientMs: 50 };

  test('direct: both cones get the other side, and both SYNs leave when the slower side hears the broker', () => {
    const s = scheduleAttempt({ initiator: nat('eim', A, '192.168.1.2'), recipient: nat('eim', B, '10.0.0.2') }, rtts, fresh, NOW);
    assert.equal(s.strategy, 'direct');
    assert.deepEqual(s.plan, ['direct', 'public', 'relay']);
    // One-way delays 5 and 25 ms: the initiator waits 20 ms, the recipient not at all.
    assert.deepEqual(s.delays, { initiatorMs: 20, recipientMs: 0 });
    assert.deepEqual(s.answers.initiator, {
      publicEndpoint: at(A, 40_000),
      peerPublicEndpoint: at(B, 40_000),
      peerPrivateEndpoints: [at('10.0.0.2', 40_000)],
      startDelayMs: 20,
      mapping: { kind: 'eim' },
      peerMapping: { kind: 'eim' },
    });
    assert.deepEqual(s.answers.recipient.peerPublicEndpoint, at(A, 40_000));
    assert.equal(s.answers.recipient.startDelayMs, 0);
    assert.equal(s.cost, 0);
  });

  test('lan, public and reversal', () => {
    assert.equal(scheduleAttempt({ initiator: nat('eim', A, '192.168.1.2'), recipient: nat('eim', A, '192.168.1.3') }, rtts, fresh, NOW).strategy, 'lan');
    const pub = scheduleAttempt({ initiator: nat('eim', A, '192.168.1.2'), recipient: nat('none', B, B) }, rtts, fresh, NOW);
    assert.equal(pub.strategy, 'public');
    assert.deepEqual(pub.answers.initiator.peerMapping, { kind: 'none' });
    assert.equal(scheduleAttempt({ initiator: nat('none', A, A), recipient: nat('eim', B, '10.0.0.2') }, rtts, fresh, NOW).strategy, 'reversal');
  });

  test('predicted: a sequential side is aimed at by the last port its NAT gave out', () => {
    const s = scheduleAttempt({ initiator: nat('sequential', A, '192.168.1.2'), recipient: nat('eim', B, '10.0.0.2') }, rtts, fresh, NOW);
    assert.equal(s.strategy, 'predicted');
    assert.equal(s.cost, 1);
    assert.deepEqual(s.answers.recipient.peerPublicEndpoint, at(A, 40_001), 'the recipient aims past 40001');
    assert.deepEqual(s.answers.recipient.peerMapping, { kind: 'sequential', step: 1 });
    assert.deepEqual(s.answers.initiator.peerPublicEndpoint, at(B, 40_000), 'the cone is aimed at as it is');
    assert.deepEqual(s.delays, { initiatorMs: 20, recipientMs: 0 });
  });

  test('birthday: first for a random initiator, after the brief listen for a random recipient; the cone side starts later', () => {
    const sides = { initiator: nat('random', A, '192.168.1.2'), recipient: nat('eim', B, '10.0.0.2') };
    const s = scheduleAttempt(sides, rtts, fresh, NOW);
    assert.equal(s.strategy, 'birthday');
    assert.equal(s.cost, 8);
    assert.deepEqual(s.failed, []);
    assert.deepEqual(s.delays, { initiatorMs: 20, recipientMs: BIRTHDAY_CONE_LAG_MS });
    // A full cone refused the spray: the recipient listens next.
    assert.equal(scheduleAttempt(sides, rtts, after('birthday'), NOW).strategy, 'public');
    assert.equal(s.answers.recipient.startDelayMs, BIRTHDAY_CONE_LAG_MS);
    // Random recipient, cone initiator: the initiator is the cone side.
    const swapped = scheduleAttempt({ initiator: nat('eim', A, '192.168.1.2'), recipient: nat('random', B, '10.0.0.2') }, rtts, after('reversal'), NOW);
    assert.equal(swapped.strategy, 'birthday');
    assert.deepEqual(swapped.delays, { initiatorMs: 20 + BIRTHDAY_CONE_LAG_MS, recipientMs: 0 });
  });

  test('relay: two hard NATs, and the last resort when everything failed', () => {
    assert.equal(scheduleAttempt({ initiator: nat('random', A, '192.168.1.2'), recipient: nat('random', B, '10.0.0.2') }, rtts, fresh, NOW).strategy, 'relay');
    assert.equal(scheduleAttempt({ initiator: nat('eim', A, '192.168.1.2'), recipient: nat('eim', B, '10.0.0.2') }, rtts, after('direct', 'public', 'relay'), NOW).strategy, 'relay');
  });

  test('a recipient that registered over a WebSocket (web-only): the relay at once, whatever both NATs are', () => {
    for (const kind of ['eim', 'none', 'unknown'] as const) {
      const schedule = scheduleAttempt({ initiator: nat(kind, A, '192.168.1.2'), recipient: { ...nat('eim', B, '10.0.0.2'), web: true } }, rtts, fresh, NOW);
      assert.equal(schedule.strategy, 'relay', kind);
      assert.deepEqual(schedule.plan, ['relay'], kind);
    }
    // Without the mark the same pair punches first.
    assert.equal(scheduleAttempt({ initiator: nat('eim', A, '192.168.1.2'), recipient: nat('eim', B, '10.0.0.2') }, rtts, fresh, NOW).strategy, 'direct');
  });

  test('unknown mappings (no probes) are planned as cones', () => {
    assert.equal(scheduleAttempt({ initiator: nat('unknown', A, '192.168.1.2'), recipient: nat('eim', B, '10.0.0.2') }, rtts, fresh, NOW).strategy, 'direct');
  });
});

describe('chooseStrategy: the broker plans from what it saw, not from what the initiator says', () => {
  const plan: StrategyName[] = ['public', 'birthday', 'relay'];

  test('a claimed failure the broker never scheduled can skip to the relay, never to birthday', () => {
    const choice = chooseStrategy(plan, { scheduled: new Set(), claimed: new Set(['public']), budget: 100 });
    assert.equal(choice.strategy, 'relay');
    assert.deepEqual(choice.skipped, [
      { strategy: 'public', reason: 'claimed' },
      { strategy: 'birthday', reason: 'claimed' },
    ]);
    assert.equal(chooseStrategy(['predicted', 'relay'], { scheduled: new Set(), claimed: new Set(['lan']), budget: 100 }).strategy, 'predicted', 'a claim about a strategy outside the plan changes nothing');
  });

  test('a strategy the broker scheduled counts as failed only when the initiator says so (parallel connects keep the best path)', () => {
    assert.equal(chooseStrategy(plan, { scheduled: new Set(['public']), claimed: new Set(), budget: 100 }).strategy, 'public');
    assert.equal(chooseStrategy(plan, { scheduled: new Set(['public']), claimed: new Set(['public']), budget: 100 }).strategy, 'birthday');
  });

  test('a claim may narrow past an expensive strategy the evidence reached', () => {
    const choice = chooseStrategy(plan, { scheduled: new Set(['public']), claimed: new Set(['public', 'birthday']), budget: 100 });
    assert.equal(choice.strategy, 'relay');
  });

  test('without budget an expensive strategy is passed over for the relay', () => {
    const choice = chooseStrategy(plan, { scheduled: new Set(['public']), claimed: new Set(['public']), budget: 7 });
    assert.equal(choice.strategy, 'relay');
    assert.deepEqual(choice.skipped[1], { strategy: 'birthday', reason: 'budget' });
    assert.equal(chooseStrategy(['predicted', 'relay'], { scheduled: new Set(), claimed: new Set(), budget: 1 }).strategy, 'predicted');
  });

  test('history older than ATTEMPT_HISTORY_MS is no evidence', () => {
    const sides = { initiator: nat('eim', A, '192.168.1.2'), recipient: nat('random', B, '10.0.0.2') };
    const old: Failures = { history: [{ strategy: 'reversal', at: NOW - ATTEMPT_HISTORY_MS - 1 }], claimed: new Set(['reversal']), budget: 100 };
    assert.equal(scheduleAttempt(sides, { initiatorMs: 0, recipientMs: 0 }, old, NOW).strategy, 'relay');
  });
});

describe('wire: ROLE and STRATEGY codes are named once', () => {
  test('ROLE encodes as a u32 and rejects unknown codes', () => {
    const msg = addRole(StunMessage.request(Method.MappingProbe), 'recipient');
    assert.deepEqual(Buffer.from(encodeMessage(msg).subarray(20, 28)).toString('hex'), '4e09000400000001');
    assert.equal(getRole(decodeMessage(encodeMessage(msg))), 'recipient');
    assert.equal(RoleCode.initiator, 0);
    const bad = StunMessage.request(Method.MappingProbe);
    addU32(bad, AttrType.Role, 2);
    assert.throws(() => getRole(bad), /ROLE 2 is not a known role/);
  });
  test('strategy codes and their FAILED-STRATEGIES bits', () => {
    assert.deepEqual(Object.values(StrategyCode), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const [name, code] of Object.entries(StrategyCode)) assert.equal(strategyName(code), name);
    assert.equal(strategyMask(['lan', 'relay']), 0b1000_0010);
    assert.equal(strategyMask(['portmap', 'relay']), 0b1_1000_0000);
    assert.equal(strategyMask(['socks5-bind']), 0b10_0000_0000);
  });
});

// ---------------------------------------------------------------------------
// The rendezvous on a fake clock.

interface Harness {
  clock: FakeClock;
  rendezvous: Rendezvous;
  notified: StunMessage[];
  events: RendezvousEvent[];
  limited: LimitedReport[];
  registry: MemoryRegistry;
}

const RECIPIENT_TIMEOUT_MS = 5_000;

async function harness(uris: string[] = ['nattrav://bob'], limits: BrokerLimitsOptions = {}, sessionKey?: Buffer): Promise<Harness> {
  const clock = new FakeClock(NOW);
  const registry = new MemoryRegistry({ now: () => NOW, sweepIntervalMs: 0 });
  for (const uri of uris) await registry.put({ uri, publicEndpoint: at(B, 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000 });
  const h: Harness = { clock, registry, notified: [], events: [], limited: [], rendezvous: undefined as unknown as Rendezvous };
  h.rendezvous = new Rendezvous({
    registry,
    notify: (_registration, message) => h.notified.push(message),
    reply: (channel, message) => channel.send(message),
    recipientTimeoutMs: RECIPIENT_TIMEOUT_MS,
    probeTimeoutMs: 3_000,
    maxPendingAttempts: 4096,
    emit: (event) => h.events.push(event),
    authorizeRelay: () => true,
    sessionKeyFor: async () => sessionKey,
    limits: resolveLimits(limits),
    limited: (report) => h.limited.push(report),
    clock,
  });
  return h;
}

function connectRequest(uri: string, id: number, failed: StrategyName[] = []): StunMessage {
  const request = StunMessage.request(Method.Connect);
  addUri(request, uri);
  addAttemptId(request, new Uint8Array(16).fill(id));
  addXorAddress(request, AttrType.PrivateEndpoint, at('192.168.1.2', 40_000));
  if (failed.length > 0) addU32(request, AttrType.FailedStrategies, strategyMask(failed));
  return request;
}

function joinRequest(id: number): StunMessage {
  const request = StunMessage.request(Method.Join);
  addAttemptId(request, new Uint8Array(16).fill(id));
  addXorAddress(request, AttrType.PrivateEndpoint, at('10.0.0.2', 50_000));
  return request;
}

/** A Join whose PRIVATE-ENDPOINT is truncated: it fails to parse after its valid ATTEMPT-ID. */
function badJoin(id: number): StunMessage {
  const request = StunMessage.request(Method.Join);
  addAttemptId(request, new Uint8Array(16).fill(id));
  request.add(AttrType.PrivateEndpoint, new Uint8Array([0, 1, 2]));
  return request;
}

function probe(h: Harness, id: number, role: RoleName, from: TransportAddress): FakeChannel {
  const request = StunMessage.request(Method.MappingProbe);
  addAttemptId(request, new Uint8Array(16).fill(id));
  addRole(request, role);
  const channel = new FakeChannel(h.clock, from);
  h.rendezvous.mappingProbe(channel, request);
  return channel;
}

/** The answer sent on `channel` (it must have one). */
function answered(channel: FakeChannel): StunMessage {
  const answer = channel.answer;
  assert.ok(answer !== undefined, 'an answer was sent');
  return answer;
}

/** Which of the rendezvous' answers is which. */
interface Run {
  initiator: FakeChannel;
  recipient: FakeChannel;
}

/**
 * One whole attempt: Connect from `initiatorAt`, Join from B:50000, each side's mapping
 * probe (the initiator's from `initiatorProbe`, the recipient's keeping its port: a cone).
 */
async function attempt(h: Harness, id: number, o: { uri?: string; failed?: StrategyName[]; initiatorAt?: TransportAddress; initiatorProbe?: TransportAddress } = {}): Promise<Run> {
  const from = o.initiatorAt ?? at(A, 40_000);
  const initiator = new FakeChannel(h.clock, from, 10);
  const recipient = new FakeChannel(h.clock, at(B, 50_000), 50);
  await h.rendezvous.connect(initiator, connectRequest(o.uri ?? 'nattrav://bob', id, o.failed));
  probe(h, id, 'initiator', o.initiatorProbe ?? from);
  probe(h, id, 'recipient', at(B, 50_000));
  const joined = h.rendezvous.join(recipient, joinRequest(id));
  await h.clock.advance(50);
  await joined;
  return { initiator, recipient };
}

/** The strategy the initiator was told. */
function strategyOf(run: Pick<Run, 'initiator'>): StrategyName | undefined {
  const answer = run.initiator.answer;
  return answer === undefined ? undefined : strategyName(getU32Attr(answer, AttrType.Strategy) ?? 0);
}

describe('rendezvous on a fake clock', () => {
  test('ConnectionRequest retransmits at 250, 500, 1000 ms...; the deadline answers 480 and stops them', async () => {
    const h = await harness();
    const initiator = new FakeChannel(h.clock, at(A, 40_000));
    await h.rendezvous.connect(initiator, connectRequest('nattrav://bob', 1));
    assert.equal(h.notified.length, 1);
    const copies: number[] = [];
    for (const t of [249, 1, 499, 1, 999, 1]) {
      await h.clock.advance(t);
      copies.push(h.notified.length);
    }
    assert.deepEqual(copies, [1, 2, 2, 3, 3, 4]);
    await h.clock.advance(RECIPIENT_TIMEOUT_MS - 1_750 - 1);
    assert.equal(initiator.answer, undefined, 'no answer before the deadline');
    await h.clock.advance(1);
    assert.equal(getErrorCode(answered(initiator))?.code, StunErrorCode.RecipientUnreachable);
    assert.match(getErrorCode(answered(initiator))?.reason ?? '', /did not join within 5000 ms/);
    assert.equal(h.rendezvous.pending, 0);
    assert.equal(h.clock.pending, 0, 'no timer left behind');
  });

  test('an acknowledged request is not retransmitted', async () => {
    const h = await harness();
    await h.rendezvous.connect(new FakeChannel(h.clock, at(A, 40_000)), connectRequest('nattrav://bob', 1));
    h.rendezvous.acknowledge((h.notified[0] as StunMessage).successResponse());
    await h.clock.advance(2_000);
    assert.equal(h.notified.length, 1);
  });

  test('a whole attempt: both answered at once with delays from the measured round trips', async () => {
    const h = await harness();
    const run = await attempt(h, 1);
    const i = run.initiator.answer as StunMessage;
    const r = run.recipient.answer as StunMessage;
    assert.equal(i.cls, MessageClass.SuccessResponse);
    assert.equal(strategyOf(run), 'direct');
    // RTTs 10 and 50 ms of fake time: the initiator waits (50 - 10) / 2.
    assert.equal(getU32Attr(i, AttrType.StartDelay), 20);
    assert.equal(getU32Attr(r, AttrType.StartDelay), 0);
    assert.deepEqual(getXorAddressAttr(i, AttrType.PeerPublicEndpoint), at(B, 50_000));
    assert.deepEqual(getXorAddressAttrs(i, AttrType.PeerPrivateEndpoint), [at('10.0.0.2', 50_000)]);
    assert.deepEqual(getXorMappedAddress(r), at(B, 50_000));
    assert.deepEqual(decodeMappingKind(getU32Attr(r, AttrType.PeerMapping) ?? 0), { kind: 'eim' });
    assert.ok(run.initiator.ended && run.recipient.ended, 'the broker closes first');
    const scheduled = h.events.find((e) => e.type === 'scheduled');
    assert.ok(scheduled?.type === 'scheduled');
    assert.equal(scheduled.rttInitiatorMs, 10);
    assert.equal(scheduled.setupMs, 50);
    assert.equal(h.rendezvous.pending, 0);
    assert.equal(h.rendezvous.probeRecords, 0);
  });

  test('CONNECT-RTT in the Connect and the Join (each side\'s TCP handshake): no Probe in the attempt, delays from those round trips', async () => {
    const h = await harness();
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    const recipient = new FakeChannel(h.clock, at(B, 50_000), 50);
    const connect = connectRequest('nattrav://bob', 1);
    addU32(connect, AttrType.ConnectRtt, 10);
    await h.rendezvous.connect(initiator, connect);
    probe(h, 1, 'initiator', at(A, 40_000));
    probe(h, 1, 'recipient', at(B, 50_000));
    const join = joinRequest(1);
    addU32(join, AttrType.ConnectRtt, 50);
    await h.rendezvous.join(recipient, join);
    assert.equal(initiator.requested.length + recipient.requested.length, 0, 'no Probe of either side');
    assert.equal(getU32Attr(answered(initiator), AttrType.StartDelay), 20);
    assert.equal(getU32Attr(answered(recipient), AttrType.StartDelay), 0);
    const scheduled = h.events.find((e) => e.type === 'scheduled');
    assert.ok(scheduled?.type === 'scheduled');
    assert.equal(scheduled.rttInitiatorMs, 10);
    assert.equal(scheduled.rttRecipientMs, 50);
    // A Join's CONNECT-RTT past the bound is not believed: that side is probed.
    const other = await harness();
    const i2 = new FakeChannel(other.clock, at(A, 40_000), 10);
    const r2 = new FakeChannel(other.clock, at(B, 50_000), 50);
    await other.rendezvous.connect(i2, connectRequest('nattrav://bob', 2));
    probe(other, 2, 'initiator', at(A, 40_000));
    probe(other, 2, 'recipient', at(B, 50_000));
    const liar = joinRequest(2);
    addU32(liar, AttrType.ConnectRtt, 999_999);
    const joined = other.rendezvous.join(r2, liar);
    await settle();
    assert.equal(r2.requested[0]?.method, Method.Probe);
    assert.equal(i2.requested[0]?.method, Method.Probe, 'and the initiator, whose Connect gave none');
    await other.clock.advance(50);
    await joined;
    assert.equal(answered(i2).cls, MessageClass.SuccessResponse);
  });

  test('a malformed Join changes nothing: the attempt keeps its deadline, and a good Join still works', async () => {
    const h = await harness();
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    await h.rendezvous.connect(initiator, connectRequest('nattrav://bob', 1));
    await assert.rejects(h.rendezvous.join(new FakeChannel(h.clock, at(B, 50_000)), badJoin(1)), /PRIVATE-ENDPOINT/);
    await h.clock.advance(RECIPIENT_TIMEOUT_MS);
    assert.equal(getErrorCode(answered(initiator))?.code, StunErrorCode.RecipientUnreachable, 'the deadline still fired');

    const again = await harness();
    const first = new FakeChannel(again.clock, at(A, 40_000), 10);
    await again.rendezvous.connect(first, connectRequest('nattrav://bob', 2));
    await assert.rejects(again.rendezvous.join(new FakeChannel(again.clock, at(B, 50_000)), badJoin(2)));
    const joined = again.rendezvous.join(new FakeChannel(again.clock, at(B, 50_000), 10), joinRequest(2));
    await again.clock.advance(MAPPING_WAIT_MS + 100);
    await joined;
    assert.equal(answered(first).cls, MessageClass.SuccessResponse);
  });

  test('an attempt abandoned while waiting for mapping probes leaves no probe record or timer behind', async () => {
    const h = await harness();
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    await h.rendezvous.connect(initiator, connectRequest('nattrav://bob', 1));
    const joined = h.rendezvous.join(new FakeChannel(h.clock, at(B, 50_000), 10), joinRequest(1));
    await h.clock.advance(200); // RTTs measured; now waiting for probes that never come
    assert.equal(h.rendezvous.probeRecords, 2);
    initiator.hangUp();
    await settle();
    await h.clock.advance(MAPPING_WAIT_MS + 100);
    await joined;
    assert.equal(h.rendezvous.pending, 0);
    assert.equal(h.rendezvous.probeRecords, 0);
    assert.equal(h.clock.pending, 0);
    assert.match(getErrorCode(answered(initiator))?.reason ?? '', /initiator closed/);
  });

  test('a mapping probe from another address than the exchange is ignored', async () => {
    const h = await harness();
    // Before the exchange is known: a foreign probe claiming to be the initiator, with a port that would look random.
    probe(h, 1, 'initiator', at('192.0.2.66', 61_000));
    const run = await attempt(h, 1);
    assert.equal(strategyOf(run), 'direct', 'classified from its own probe only');
    const scheduled = h.events.find((e) => e.type === 'scheduled');
    assert.ok(scheduled?.type === 'scheduled' && scheduled.initiatorMapping === 'eim');

    // After the exchange is known, while the broker waits: a foreign probe does not end the wait or count.
    // (From another NAT than the first attempt's: A's mapping is remembered now, mapping-memory.ts.)
    const initiator = new FakeChannel(h.clock, at(A2, 41_000), 10);
    await h.rendezvous.connect(initiator, connectRequest('nattrav://bob', 2));
    const joined = h.rendezvous.join(new FakeChannel(h.clock, at(B, 50_000), 10), joinRequest(2));
    probe(h, 2, 'recipient', at(B, 50_000));
    await h.clock.advance(10);
    const foreign = probe(h, 2, 'initiator', at('192.0.2.66', 41_005));
    assert.equal(answered(foreign).cls, MessageClass.SuccessResponse, 'still answered, like a Binding');
    await h.clock.advance(100);
    assert.equal(initiator.answer, undefined, 'still waiting for the initiator\'s own probe');
    probe(h, 2, 'initiator', at(A2, 41_001)); // its own address, the next port: sequential
    await joined;
    assert.equal(strategyOf({ initiator }), 'predicted');
  });

  test('the forced-birthday attack: 40 Connects claiming failures get the default budget of birthdays (4), then the relay', async () => {
    const h = await harness();
    // The attacker's NAT looks random (its probe's port jumps); the recipient is a cone. Birthday
    // is the plan's first strategy for that pair, so claims change nothing: the budget bounds it.
    const runs: Run[] = [];
    for (let i = 0; i < 40; i++) {
      runs.push(await attempt(h, 10 + i, { failed: ['lan', 'public', 'reversal', 'direct', 'predicted'], initiatorProbe: at(A, 60_000 + i * 97) }));
    }
    assert.equal(runs.filter((r) => strategyOf(r) === 'birthday').length, 4);
    assert.equal(runs.filter((r) => strategyOf(r) === 'relay').length, 36);
    // The recipient's budget refills (0.5 tokens/s, 8 per birthday): another initiator behind a
    // random NAT gets birthday at once, as its first strategy.
    await h.clock.advance(16_000);
    const first = await attempt(h, 100, { initiatorAt: at('203.0.113.77', 40_000), initiatorProbe: at('203.0.113.77', 52_000) });
    assert.equal(strategyOf(first), 'birthday');
  });

  test('an attacker that claims the birthday failed gets the listen next, never more birthdays than the budget', async () => {
    const h = await harness();
    const evil = at('192.0.2.50', 40_000);
    assert.equal(strategyOf(await attempt(h, 1, { initiatorAt: evil, initiatorProbe: at(evil.address, 55_555) })), 'birthday');
    const got: Array<StrategyName | undefined> = [];
    for (let i = 0; i < 40; i++) got.push(strategyOf(await attempt(h, 10 + i, { failed: ['birthday'], initiatorAt: evil, initiatorProbe: at(evil.address, 20_000 + i * 333) })));
    // Defaults: 32 tokens per recipient and per initiator, 8 per birthday; the run takes ~2 s of fake time.
    // A claimed (and scheduled) birthday failure moves on to the cheap listen, which the claims then skip too.
    assert.equal(got[0], 'public');
    assert.equal(got.filter((s) => s === 'birthday').length, 0);
  });

  test('with the default limits an initiator behind a random NAT reaches three cone recipients in a row by birthday', async () => {
    const uris = ['nattrav://restricted', 'nattrav://port-restricted', 'nattrav://udp-blocked'];
    const h = await harness(uris);
    const got: Array<StrategyName | undefined> = [];
    for (const [i, uri] of uris.entries()) {
      got.push(strategyOf(await attempt(h, 1 + i * 2, { uri, initiatorProbe: at(A, 50_000 + i * 7) })));
      await h.clock.advance(5_000); // each lab cell takes a few seconds
    }
    assert.deepEqual(got, ['birthday', 'birthday', 'birthday']);
  });

  test('expensive strategies are rate-limited per recipient URI on the fake clock, and the limit is reported', async () => {
    const h = await harness(['nattrav://bob'], { expensivePerUri: { perSecond: 0.5, burst: 16 }, expensivePerSource: { perSecond: 1_000, burst: 1_000 } });
    const run = (i: number, failed: StrategyName[] = ['public']): Promise<Run> =>
      attempt(h, i, { failed, initiatorAt: at(`203.0.113.${i}`, 40_000), initiatorProbe: at(`203.0.113.${i}`, 50_000 + i * 131) });
    // Birthday is each random initiator's first strategy toward a cone.
    const got: Array<StrategyName | undefined> = [];
    for (let i = 1; i <= 4; i++) got.push(strategyOf(await run(i, [])));
    // 16 tokens, 8 per birthday: two birthdays, then the plan's next strategy (the cone listening).
    assert.deepEqual(got, ['birthday', 'birthday', 'public', 'public']);
    assert.ok(h.limited.some((l) => l.kind === 'expensive-per-uri' && l.uri === 'nattrav://bob'));
    const skipped = h.events.filter((e) => e.type === 'scheduled').at(-1);
    assert.ok(skipped?.type === 'scheduled');
    assert.deepEqual(skipped.skipped.at(-1), { strategy: 'birthday', reason: 'budget' });
    // 16 s of fake time refill 8 tokens: one more birthday.
    await h.clock.advance(16_000);
    assert.equal(strategyOf(await run(3)), 'birthday');
    assert.equal(strategyOf(await run(4)), 'relay');
  });

  test('expensive strategies are rate-limited per initiator address across recipients', async () => {
    const uris = ['nattrav://r1', 'nattrav://r2', 'nattrav://r3'];
    const h = await harness(uris, { expensivePerUri: { perSecond: 1_000, burst: 1_000 }, expensivePerSource: { perSecond: 0.25, burst: 16 } });
    const got: Array<StrategyName | undefined> = [];
    for (const [i, uri] of uris.entries()) got.push(strategyOf(await attempt(h, 1 + i * 2, { uri, initiatorProbe: at(A, 50_000 + i) })));
    assert.deepEqual(got, ['birthday', 'birthday', 'public']);
    assert.ok(h.limited.some((l) => l.kind === 'expensive-per-source' && l.source === A));
    await h.clock.advance(32_000);
    assert.equal(strategyOf(await attempt(h, 20, { uri: 'nattrav://r3', failed: ['public'], initiatorProbe: at(A, 20_000) })), 'birthday');
  });

  test('relay only (a recipient registered over a WebSocket, or every other strategy claimed failed): no wait for mapping probes', async () => {
    const h = await harness(['nattrav://bob']);
    await h.registry.put({ uri: 'nattrav://web', publicEndpoint: at(B, 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000, transport: 'tcp', web: true });
    const everyButRelay: StrategyName[] = STRATEGY_NAMES.filter((name) => name !== 'relay');
    for (const [id, o] of [[1, { uri: 'nattrav://web' }], [2, { failed: everyButRelay }]] as const) {
      const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
      const recipient = new FakeChannel(h.clock, at(B, 50_000), 50);
      // Neither side sends a mapping probe (a peer on the web cannot).
      await h.rendezvous.connect(initiator, connectRequest(o.uri ?? 'nattrav://bob', id, 'failed' in o ? [...o.failed] : []));
      const joined = h.rendezvous.join(recipient, joinRequest(id));
      await h.clock.advance(50);
      await joined;
      assert.equal(strategyName(getU32Attr(answered(initiator), AttrType.Strategy) ?? 0), 'relay');
      const scheduled = h.events.find((e) => e.type === 'scheduled' && e.attemptId === Buffer.alloc(16, id).toString('hex'));
      assert.ok(scheduled?.type === 'scheduled' && scheduled.setupMs < MAPPING_WAIT_MS, `attempt ${id}: answered without waiting ${MAPPING_WAIT_MS} ms for probes`);
    }
    // An ordinary attempt whose probes do not come still waits for them.
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    await h.rendezvous.connect(initiator, connectRequest('nattrav://bob', 3));
    const joined = h.rendezvous.join(new FakeChannel(h.clock, at(B, 50_000), 50), joinRequest(3));
    await h.clock.advance(50);
    assert.equal(initiator.answer, undefined, 'waiting for mapping probes');
    await h.clock.advance(MAPPING_WAIT_MS);
    await joined;
    assert.ok(initiator.answer !== undefined);
  });

  test('FAILED-STRATEGIES still skips to the relay (the cheap, safe fallback)', async () => {
    const h = await harness();
    const run = await attempt(h, 1, { failed: ['lan', 'public', 'direct'] });
    assert.equal(strategyOf(run), 'relay');
  });
  test('a session that ends after the Connect does not open the attempt: Join still needs its integrity, the secret stays sealed under it', async () => {
    const clock = new FakeClock(NOW);
    const registry = new MemoryRegistry({ now: () => NOW, sweepIntervalMs: 0 });
    await registry.put({ uri: 'nattrav://bob', publicEndpoint: at(B, 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000 });
    const sessionKey = randomBytes(32);
    let current: Buffer | undefined = sessionKey;
    const rendezvous = new Rendezvous({
      registry,
      notify: () => undefined,
      reply: (channel, message) => channel.send(message),
      recipientTimeoutMs: RECIPIENT_TIMEOUT_MS,
      probeTimeoutMs: 3_000,
      maxPendingAttempts: 10,
      emit: () => undefined,
      authorizeRelay: () => true,
      sessionKeyFor: async () => current,
      limits: resolveLimits({}),
      clock,
    });
    await rendezvous.connect(new FakeChannel(clock, at(A, 40_000), 10), connectRequest('nattrav://bob', 7));
    // The recipient withdraws (its session ends) while the attempt waits for its Join.
    current = undefined;
    const bystander = new FakeChannel(clock, at('192.0.2.66', 50_000), 50);
    await rendezvous.join(bystander, joinRequest(7));
    assert.equal(getErrorCode(answered(bystander))?.code, StunErrorCode.Forbidden);
    // The real recipient, with integrity under the session it had, still joins; its secret is sealed under that session.
    const recipient = new FakeChannel(clock, at(B, 50_001), 10);
    const joined = rendezvous.join(recipient, decodeMessage(encodeMessage(joinRequest(7), { integritySha256Key: sessionKey })));
    await clock.advance(2_000);
    await joined;
    const answer = answered(recipient);
    assert.equal(answer.cls, MessageClass.SuccessResponse);
    const id = new Uint8Array(16).fill(7);
    const sealed = answer.get(AttrType.AttemptSecret) as Uint8Array;
    assert.equal(openSecret(recipientSealKey(undefined, id), sealed, id), undefined, 'not sealed under the open-mode key');
    assert.ok(openSecret(recipientSealKey(sessionKey, id), sealed, id) !== undefined);
  });
});

describe('mapping probes carry integrity (a neighbour behind the same NAT cannot tell the broker a mapping)', () => {
  const mappingKey = randomBytes(32);
  const sessionKey = randomBytes(32);
  /** A MappingProbe as it arrives off the wire, with integrity under `key` (none: undefined). */
  const signedProbe = (h: Harness, id: number, role: RoleName, from: TransportAddress, key: Uint8Array | undefined): FakeChannel => {
    const request = addRole(addAttemptId(StunMessage.request(Method.MappingProbe), new Uint8Array(16).fill(id)), role);
    const channel = new FakeChannel(h.clock, from);
    h.rendezvous.mappingProbe(channel, decodeMessage(encodeMessage(request, key === undefined ? {} : { integritySha256Key: key })));
    return channel;
  };
  const connectWithKey = (id: number): StunMessage => decodeMessage(encodeMessage(connectRequest('nattrav://bob', id).add(AttrType.MappingKey, mappingKey)));
  const codeOf = (channel: FakeChannel): number | undefined => getErrorCode(answered(channel))?.code;

  /** Runs attempt `id` with the genuine probes (the initiator's from A:40000, like its exchange: no port change) after `before`. */
  async function run(h: Harness, id: number, before: () => void): Promise<Extract<RendezvousEvent, { type: 'scheduled' }>> {
    const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
    before();
    await h.rendezvous.connect(initiator, connectWithKey(id));
    const forgedAfter = signedProbe(h, id, 'initiator', at(A, 61_000), undefined);
    assert.equal(codeOf(forgedAfter), StunErrorCode.Forbidden, 'a probe without integrity after the Connect is refused');
    const wrongKey = signedProbe(h, id, 'initiator', at(A, 61_001), randomBytes(32));
    assert.equal(codeOf(wrongKey), StunErrorCode.Forbidden, 'a probe under another key is refused');
    assert.equal(answered(signedProbe(h, id, 'initiator', at(A, 40_000), mappingKey)).cls, MessageClass.SuccessResponse);
    const unsignedRecipient = signedProbe(h, id, 'recipient', at(B, 62_000), undefined);
    assert.equal(codeOf(unsignedRecipient), StunErrorCode.Forbidden, "the recipient's probes need its session key");
    assert.equal(answered(signedProbe(h, id, 'recipient', at(B, 50_000), sessionKey)).cls, MessageClass.SuccessResponse);
    const recipient = new FakeChannel(h.clock, at(B, 50_000), 10);
    const joined = h.rendezvous.join(recipient, decodeMessage(encodeMessage(joinRequest(id), { integritySha256Key: sessionKey })));
    await h.clock.advance(50);
    await joined;
    const scheduled = h.events.find((e): e is Extract<RendezvousEvent, { type: 'scheduled' }> => e.type === 'scheduled' && e.attemptId === Buffer.alloc(16, id).toString('hex'));
    assert.ok(scheduled, 'scheduled');
    return scheduled;
  }

  test('forged probes are refused after the Connect, dropped when they came before it, and never take the genuine probe\'s place', async () => {
    const h = await harness(['nattrav://bob'], {}, sessionKey);
    const clean = await run(h, 1, () => undefined);
    // The neighbour is faster than the peer: its forged probes (other ports: "a random NAT") arrive before the Connect.
    const raced = await run(h, 2, () => {
      for (let i = 0; i < 3; i++) signedProbe(h, 2, 'initiator', at(A, 63_000 + i * 977), undefined);
      signedProbe(h, 2, 'recipient', at(B, 64_000), undefined);
    });
    assert.notEqual(clean.initiatorMapping, 'unknown');
    assert.equal(raced.initiatorMapping, clean.initiatorMapping, 'the mapping the broker saw is the genuine one');
    assert.equal(raced.recipientMapping, clean.recipientMapping);
    assert.ok(raced.setupMs < MAPPING_WAIT_MS, 'the broker did not wait for probes the forgeries kept out');
  });
});
