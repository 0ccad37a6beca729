/**
 * The pieces of cross-broker connection requests, without sockets: the bus messages in
 * bytes, the in-process bus, the routing's checks (a relayed request goes only to the
 * registered endpoint of a URI this broker holds, under its session; answers go back
 * only from there; the table of relayed requests is bounded), the broker options of a
 * cluster, and RedisBus on a real redis-server and a real Redis Cluster.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { createBroker } from '../../src/broker/broker.js';
import type { BrokerBus } from '../../src/broker/bus/bus.js';
import { decodeBusMessage, encodeBusMessage } from '../../src/broker/bus/bus-messages.js';
import { MemoryBusHub } from '../../src/broker/bus/memory-bus.js';
import { RedisBus } from '../../src/broker/bus/redis-bus.js';
import { ClusterRouting, MAX_RELAYED_REQUESTS, type ClusterContext } from '../../src/broker/cluster.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { RedisConnection } from '../../src/broker/registry/redis-connection.js';
import type { AnswerSource } from '../../src/broker/rendezvous.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri } from '../../src/wire/nattrav.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { haveRedis, startRedis, startRedisCluster } from '../helpers/redis-server.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const RECIPIENT: TransportAddress = { family: 'IPv4', address: '203.0.113.9', port: 40_000 };

describe('bus messages', () => {
  test('relay: kind 1, URI length (16 bits), URI, then the STUN bytes untouched', () => {
    const bytes = encodeBusMessage({ kind: 'relay', uri: 'nattrav://a', stun: hex('0003 0000 2112a442') });
    assert.deepEqual(bytes, Buffer.concat([hex('01 000b'), Buffer.from('nattrav://a'), hex('0003 0000 2112a442')]));
    assert.deepEqual(decodeBusMessage(bytes), { kind: 'relay', uri: 'nattrav://a', stun: hex('0003 0000 2112a442') });
  });

  test('answer: kind 2, transport, family, port, address text, then the STUN bytes', () => {
    const bytes = encodeBusMessage({ kind: 'answer', transport: 'tcp', from: RECIPIENT, stun: hex('0103') });
    assert.deepEqual(bytes, Buffer.concat([hex('02 02 04 9c40 0b'), Buffer.from('203.0.113.9'), hex('0103')]));
    assert.deepEqual(decodeBusMessage(bytes), { kind: 'answer', transport: 'tcp', from: RECIPIENT, stun: hex('0103') });
  });

  test('anything else decodes to undefined, never a throw', () => {
    const relay = encodeBusMessage({ kind: 'relay', uri: 'nattrav://a', stun: hex('00') });
    for (const [what, bytes] of [
      ['empty', Buffer.alloc(0)],
      ['unknown kind', Buffer.of(9, 0, 1, 0x61, 0)],
      ['URI cut short', relay.subarray(0, 8)],
      ['no STUN part', relay.subarray(0, relay.length - 1)],
      ['zero-length URI', hex('01 0000 00')],
      ['STUN part too large', Buffer.concat([hex('01 0001 61'), Buffer.alloc(5_000)])],
      ['bad transport', hex('02 07 04 0001 00 00')],
      ['bad family', hex('02 01 05 0001 00 00')],
      ['address cut short', hex('02 01 04 0001 09 3132')],
    ] as const) {
      assert.equal(decodeBusMessage(bytes), undefined, what);
    }
  });
});

describe('the in-process bus', () => {
  test('delivers later (never inside send), with the sender ID; drops for unknown or closed members', async () => {
    const hub = new MemoryBusHub();
    const a = hub.join('a');
    const b = hub.join('b');
    const got: Array<[string, string]> = [];
    b.onMessage((message, from) => got.push([Buffer.from(message).toString(), from]));
    const sent = Buffer.from('one');
    a.send('b', sent);
    sent.write('two'); // the receiver sees what was sent, not later changes
    a.send('nobody', Buffer.from('lost'));
    assert.deepEqual(got, [], 'not delivered inside send');
    await tick();
    assert.deepEqual(got, [['one', 'a']]);
    await b.close();
    a.send('b', Buffer.from('after close'));
    await tick();
    assert.equal(got.length, 1);
    assert.throws(() => hub.join('a'), /already taken/);
  });
});

/** A routing on a fake broker: records what it sends, what it drops and what it acknowledges. */
function routing(id = 'y', sessionKey?: Buffer): {
  router: ClusterRouting;
  registry: MemoryRegistry;
  deliver(message: Uint8Array, from: string): void;
  udp: Array<{ bytes: Buffer; to: TransportAddress }>;
  control: Array<{ uri: string; bytes: Buffer }>;
  dropped: string[];
  busSent: Array<{ to: string; message: Buffer }>;
  acknowledged: Array<{ response: StunMessage; source: AnswerSource }>;
} {
  let handler: ((message: Uint8Array, from: string) => void) | undefined;
  const busSent: Array<{ to: string; message: Buffer }> = [];
  const bus: BrokerBus = { id, send: (to, message) => busSent.push({ to, message: Buffer.from(message) }), onMessage: (h) => (handler = h), close: async () => undefined };
  const registry = new MemoryRegistry({ sweepIntervalMs: 0 });
  const udp: Array<{ bytes: Buffer; to: TransportAddress }> = [];
  const control: Array<{ uri: string; bytes: Buffer }> = [];
  const dropped: string[] = [];
  const acknowledged: Array<{ response: StunMessage; source: AnswerSource }> = [];
  const ctx: ClusterContext = {
    bus,
    registry,
    sessionKeyFor: async () => sessionKey,
    sendUdp: (bytes, to) => udp.push({ bytes: Buffer.from(bytes), to }),
    sendControl: (uri, bytes) => control.push({ uri, bytes: Buffer.from(bytes) }) > 0,
    acknowledge: (response, source) => acknowledged.push({ response, source }),
    now: Date.now,
    dropped: (reason) => dropped.push(reason),
  };
  const router = new ClusterRouting(ctx);
  return { router, registry, deliver: (message, from) => handler?.(message, from), udp, control, dropped, busSent, acknowledged };
}

function connectionRequest(uri: string, key?: Buffer): Buffer {
  const request = StunMessage.request(Method.ConnectionRequest);
  addUri(request, uri);
  return Buffer.from(encodeMessage(request, { fingerprint: true, ...(key === undefined ? {} : { integritySha256Key: key }) }));
}

const settle = (): Promise<unknown> => new Promise((resolve) => setTimeout(resolve, 5));

describe('cluster routing (cluster.ts)', () => {
  test('a relayed request goes, unchanged, to the registered endpoint only; its answer goes back to the asker from there only', async () => {
    const key = randomBytes(32);
    const r = routing('y', key);
    await r.registry.put({ uri: 'nattrav://held', publicEndpoint: RECIPIENT, privateEndpoints: [], expiresAt: Date.now() + 30_000, transport: 'udp', broker: 'y' });
    const stun = connectionRequest('nattrav://held', key);
    r.deliver(encodeBusMessage({ kind: 'relay', uri: 'nattrav://held', stun }), 'x');
    await settle();
    assert.deepEqual(r.udp, [{ bytes: stun, to: RECIPIENT }]);
    assert.equal(r.router.relayedRequests, 1);
    const answer = decodeMessage(encodeMessage(decodeMessage(stun).successResponse(), { integritySha256Key: key }));
    r.router.answered(answer, { transport: 'udp', from: { ...RECIPIENT, port: 40_001 } });
    const sent: Array<{ to: string; message: Buffer }> = r.busSent;
    assert.equal(sent.length, 0, 'an answer from elsewhere is not passed on');
    r.router.answered(answer, { transport: 'udp', from: RECIPIENT });
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.to, 'x');
    assert.deepEqual(decodeBusMessage(sent[0]?.message as Buffer), { kind: 'answer', transport: 'udp', from: RECIPIENT, stun: Buffer.from(answer.raw as Uint8Array) });
    r.router.answered(answer, { transport: 'udp', from: RECIPIENT });
    assert.equal(r.busSent.length, 1, 'passed on once');
  });

  test('a recipient on a control connection gets the bytes down it', async () => {
    const r = routing('y');
    await r.registry.put({ uri: 'nattrav://tcp', publicEndpoint: RECIPIENT, privateEndpoints: [], expiresAt: Date.now() + 30_000, transport: 'tcp', broker: 'y' });
    const stun = connectionRequest('nattrav://tcp');
    r.deliver(encodeBusMessage({ kind: 'relay', uri: 'nattrav://tcp', stun }), 'x');
    await settle();
    assert.deepEqual(r.control, [{ uri: 'nattrav://tcp', bytes: stun }]);
    assert.deepEqual(r.udp, []);
  });

  test('requests this broker must not send are dropped, each with its reason', async () => {
    const key = randomBytes(32);
    const r = routing('y', key);
    const live = { publicEndpoint: RECIPIENT, privateEndpoints: [], expiresAt: Date.now() + 30_000 };
    await r.registry.put({ uri: 'nattrav://elsewhere', ...live, broker: 'z' });
    await r.registry.put({ uri: 'nattrav://mine', ...live, broker: 'y' });
    const binding = Buffer.from(encodeMessage(StunMessage.request(Method.Binding)));
    for (const [uri, stun] of [
      ['nattrav://elsewhere', connectionRequest('nattrav://elsewhere', key)],
      ['nattrav://nobody', connectionRequest('nattrav://nobody', key)],
      ['nattrav://mine', connectionRequest('nattrav://mine', randomBytes(32))],
      ['nattrav://mine', connectionRequest('nattrav://other', key)],
      ['nattrav://mine', binding],
      ['nattrav://mine', hex('0003 0000')],
    ] as const) {
      r.deliver(encodeBusMessage({ kind: 'relay', uri, stun }), 'x');
    }
    r.deliver(hex('07'), 'x');
    await settle();
    assert.deepEqual(r.udp, []);
    // Each message is checked on its own (registry lookups interleave): compare as sets.
    assert.deepEqual([...r.dropped].sort(), [
      'nattrav://elsewhere is not registered through this broker',
      'nattrav://nobody is not registered through this broker',
      'not under the session of nattrav://mine',
      'its URI does not match the request',
      'not a ConnectionRequest',
      'its STUN part does not decode',
      'not a bus message',
    ].sort());
  });

  test('answers over the bus go to the rendezvous, which knows which attempts it runs', async () => {
    const r = routing('x');
    const response = StunMessage.request(Method.ConnectionRequest).successResponse();
    r.deliver(encodeBusMessage({ kind: 'answer', transport: 'udp', from: RECIPIENT, stun: encodeMessage(response) }), 'y');
    await settle();
    assert.equal(r.acknowledged.length, 1);
    assert.deepEqual(r.acknowledged[0]?.source, { transport: 'udp', from: RECIPIENT });
  });

  test('the relayed requests awaiting an answer are bounded', async () => {
    const r = routing('y');
    await r.registry.put({ uri: 'nattrav://many', publicEndpoint: RECIPIENT, privateEndpoints: [], expiresAt: Date.now() + 30_000, broker: 'y' });
    for (let i = 0; i < MAX_RELAYED_REQUESTS + 50; i++) r.deliver(encodeBusMessage({ kind: 'relay', uri: 'nattrav://many', stun: connectionRequest('nattrav://many') }), 'x');
    await settle();
    assert.equal(r.udp.length, MAX_RELAYED_REQUESTS + 50);
    assert.equal(r.router.relayedRequests, MAX_RELAYED_REQUESTS);
  });
});

describe('broker options of a cluster', () => {
  const bus = new MemoryBusHub().join('b');
  test('a bus on a wildcard host needs joinAddress; joinAddress must be IP:PORT', () => {
    assert.throws(() => createBroker({ bus }), /joinAddress \(ip:port\) is needed with a bus when host is the wildcard "0.0.0.0"/);
    for (const bad of ['broker.example:3478', '198.51.100.7', '198.51.100.7:70000', 3478]) {
      assert.throws(() => createBroker({ bus, joinAddress: bad as string }), /joinAddress must be an IP address and port/, String(bad));
    }
    assert.throws(() => createBroker({ bus: { id: 'x' } as unknown as BrokerBus }), /broker option bus must be a BrokerBus/);
    assert.doesNotThrow(() => createBroker({ bus, joinAddress: '[2001:db8::7]:3478' }));
    assert.doesNotThrow(() => createBroker({ bus, host: '127.0.0.1' }));
  });
});

for (const [what, start, cluster] of [
  ['one redis-server', () => startRedis(), false],
  ['a three-node Redis Cluster', () => startRedisCluster(3), true],
] as const) {
  test(`RedisBus on ${what}: messages reach the broker they name, with the sender's ID`, async (t) => {
    if (!(await haveRedis(t, cluster))) return;
    const server = await start();
    closers.push(() => server.stop());
    const connections = await Promise.all([0, 1].map(() => RedisConnection.connect({ url: server.url })));
    for (const connection of connections) closers.push(() => connection.close());
    const [x, y] = await Promise.all(connections.map((connection, i) => RedisBus.open(connection, { id: `node-${i}`, keyPrefix: 'bus-test:' })));
    assert.ok(x && y);
    const got: Array<[string, string]> = [];
    y.onMessage((message, from) => got.push([Buffer.from(message).toString('hex'), from]));
    x.send('node-1', hex('00ff01'));
    x.send('nobody', hex('02'));
    const deadline = Date.now() + 5_000;
    while (got.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(got, [['00ff01', 'node-0']]);
    await y.close();
    await y.close(); // idempotent
    x.send('node-1', hex('03'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(got.length, 1, 'a closed bus receives nothing');
    await x.close();
    await assert.rejects(RedisBus.open(connections[0] as RedisConnection, { id: 'has space' }), /bus ID must be 1 to 64 printable ASCII/);
  });
}
