/**
 * The broker's side of a warm recipient on a fake clock with fake channels (rendezvous.ts,
 * broker/standby.ts): a Rendezvous with two session-holding recipients (bob, carol) and one
 * on a control connection, and the steps of a warm attempt. Shared by the standby tests.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { Rendezvous, type RendezvousEvent } from '../../src/broker/rendezvous.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addRole, addU32, addUri, addXorAddress, getAttemptId } from '../../src/wire/nattrav.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { FakeChannel } from './fake-channel.js';
import { FakeClock, settle } from './fake-clock.js';

/** An IPv4 transport address. */
export const at = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
/** The initiator's NAT (lab public addresses). */
export const A = '203.0.113.10';
/** The recipients' NAT. */
export const B = '198.51.100.20';
/** The fake clock's start. */
export const NOW = 5_000_000;
/** Registered recipients, each with a session key in `Harness.keys`. */
export const BOB = 'nattrav://bob';
export const CAROL = 'nattrav://carol';

/** A Rendezvous on a fake clock and what it sent and emitted. */
export interface Harness {
  clock: FakeClock;
  rendezvous: Rendezvous;
  registry: MemoryRegistry;
  notified: StunMessage[];
  /** Where each ConnectionRequest went (the registration, in the Connect's family). */
  notifiedTo: TransportAddress[];
  events: RendezvousEvent[];
  keys: Map<string, Buffer>;
}

/** A Rendezvous granting up to `maxStandby` standbys, with bob, carol and a control-connection recipient registered. */
export async function harness(maxStandby = 10): Promise<Harness> {
  const clock = new FakeClock(NOW);
  const registry = new MemoryRegistry({ now: () => NOW, sweepIntervalMs: 0 });
  await registry.put({ uri: BOB, publicEndpoint: at(B, 3478), privateEndpoints: [], expiresAt: NOW + 3_600_000 });
  await registry.put({ uri: CAROL, publicEndpoint: at(B, 3479), privateEndpoints: [], expiresAt: NOW + 3_600_000 });
  await registry.put({ uri: 'nattrav://control', publicEndpoint: at(B, 3480), privateEndpoints: [], expiresAt: NOW + 3_600_000, transport: 'tcp' });
  const keys = new Map([BOB, CAROL, 'nattrav://control'].map((uri) => [uri, randomBytes(32)]));
  const h: Harness = { clock, registry, notified: [], notifiedTo: [], events: [], keys, rendezvous: undefined as unknown as Rendezvous };
  h.rendezvous = new Rendezvous({
    registry,
    notify: (registration, message) => {
      h.notified.push(message);
      h.notifiedTo.push(registration.publicEndpoint);
    },
    reply: (channel, message) => channel.send(message),
    recipientTimeoutMs: 5_000,
    probeTimeoutMs: 3_000,
    maxPendingAttempts: 64,
    emit: (event) => h.events.push(event),
    authorizeRelay: () => true,
    sessionKeyFor: async (uri) => keys.get(uri),
    alternatePort: () => 3479,
    maxStandby,
    clock,
  });
  return h;
}

/** A Standby for `uri` from B:`port` (a cone: the standby keeps its port), under `key`. */
export async function standby(h: Harness, uri: string, key: Buffer | undefined, port = 50_000, rttMs = 50): Promise<FakeChannel> {
  const request = StunMessage.request(Method.Standby);
  addUri(request, uri);
  addXorAddress(request, AttrType.PrivateEndpoint, at('10.0.0.2', port));
  const channel = new FakeChannel(h.clock, at(B, port), rttMs);
  await h.rendezvous.standby(channel, decodeMessage(encodeMessage(request, key === undefined ? {} : { integritySha256Key: key })));
  return channel;
}

/**
 * Serves the standby's request on `channel` and sends its mapping probe from the same address
 * and `probePort` (@default `port`: a cone; another port: a symmetric NAT); resolves once its mapping is known.
 */
export async function warmStandby(h: Harness, uri = BOB, port = 50_000, probePort = port): Promise<FakeChannel> {
  const key = h.keys.get(uri) as Buffer;
  const request = StunMessage.request(Method.Standby);
  addUri(request, uri);
  addXorAddress(request, AttrType.PrivateEndpoint, at('10.0.0.2', port));
  const channel = new FakeChannel(h.clock, at(B, port), 50);
  await h.rendezvous.standby(channel, decodeMessage(encodeMessage(request, { integritySha256Key: key })));
  const probeId = getAttemptId(answerOf(channel)) as Uint8Array;
  const probe = StunMessage.request(Method.MappingProbe);
  addAttemptId(probe, probeId);
  addRole(probe, 'recipient');
  h.rendezvous.mappingProbe(new FakeChannel(h.clock, at(B, probePort)), decodeMessage(encodeMessage(probe, { integritySha256Key: key })));
  await settle();
  await h.clock.advance(50); // the first refresh's answer: the round trip
  return channel;
}

export function answerOf(channel: FakeChannel): StunMessage {
  const answer = channel.answer;
  assert.ok(answer !== undefined, 'an answer was sent');
  return answer;
}

export function connectRequest(id: number, rttMs?: number, privateEndpoint: TransportAddress = at('192.168.1.2', 40_000), uri = BOB): StunMessage {
  const request = StunMessage.request(Method.Connect);
  addUri(request, uri);
  addAttemptId(request, new Uint8Array(16).fill(id));
  addXorAddress(request, AttrType.PrivateEndpoint, privateEndpoint);
  if (rttMs !== undefined) addU32(request, AttrType.ConnectRtt, rttMs);
  return request;
}

/** A mapping probe of the initiator of attempt `id` from `from`. */
export function initiatorProbe(h: Harness, id: number, from: TransportAddress): void {
  const probe = StunMessage.request(Method.MappingProbe);
  addAttemptId(probe, new Uint8Array(16).fill(id));
  addRole(probe, 'initiator');
  h.rendezvous.mappingProbe(new FakeChannel(h.clock, from), probe);
}

/** A first warm attempt from A:40000, whose mapping probe teaches the broker A's NAT (eim). */
export async function firstAttempt(h: Harness): Promise<FakeChannel> {
  await warmStandby(h);
  const initiator = new FakeChannel(h.clock, at(A, 40_000), 10);
  const connecting = h.rendezvous.connect(initiator, connectRequest(1, 10));
  await settle();
  assert.equal(initiator.answer, undefined, "waiting for the initiator's probe");
  initiatorProbe(h, 1, at(A, 40_000));
  await connecting;
  return initiator;
}

/** The 'scheduled' events so far. */
export const scheduledEvents = (h: Harness): Array<Extract<RendezvousEvent, { type: 'scheduled' }>> =>
  h.events.filter((e): e is Extract<RendezvousEvent, { type: 'scheduled' }> => e.type === 'scheduled');

