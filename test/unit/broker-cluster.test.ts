/**
 * Brokers sharing one registry (a cluster): a Connect at one broker reaches a recipient
 * registered through another (over UDP and over a TCP control connection), the recipient
 * joins only at brokers it was given, it moves to another broker when its own stops, and
 * a name stays with its key across brokers. Runs on three brokers in this process on a
 * memory registry and an in-process bus, on a real redis-server and on a real three-node
 * Redis Cluster (each broker with its own connection and RedisBus).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createServer as createNetServer, type Socket as NetSocket } from 'node:net';
import { after, describe, test, type TestContext } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import { ErrorCode, type NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import type { RegisteredEvent } from '../../src/peer/registration.js';
import { createServer, type AttemptRefusal } from '../../src/peer/server.js';
import { echoes, echoRecipient, memoryCluster, redisCluster, tempKeyDir, type ClusterFactory } from '../helpers/cluster.js';
import { until } from '../helpers/loopback.js';
import { createBroker, type Broker } from '../../src/broker/broker.js';
import { MemoryBusHub } from '../../src/broker/bus/memory-bus.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { SessionTable } from '../../src/broker/sessions.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { haveRedis, startRedis, startRedisCluster, type RedisServer } from '../helpers/redis-server.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** Keepalive of the failover tests, in ms: short, so a stopped broker is noticed fast. */
const KEEPALIVE_MS = 1_000;
/** One registration try's limit, in ms. */
const REGISTER_TIMEOUT_MS = 400;
/** Room for a busy machine (two cores, other tests) on top of the promised interval, in ms. */
const SLACK_MS = 1_500;

let redis: Promise<RedisServer> | undefined;
let redisNodes: Promise<RedisServer> | undefined;
let prefixes = 0;

/** The cluster factories: memory always; Redis when redis-server is there (skipped, or failed in CI, without it). */
const FACTORIES: ReadonlyArray<[string, (t: TestContext) => Promise<ClusterFactory | undefined>]> = [
  ['in-process bus, memory registry', async () => memoryCluster],
  [
    'RedisBus, redis-server',
    async (t) => {
      if (!(await haveRedis(t))) return undefined;
      redis ??= startRedis().then((server) => {
        closers.push(() => server.stop());
        return server;
      });
      return redisCluster((await redis).url, `cluster${prefixes++}:`);
    },
  ],
  [
    'RedisBus, three-node Redis Cluster',
    async (t) => {
      if (!(await haveRedis(t, true))) return undefined;
      redisNodes ??= startRedisCluster(3).then((server) => {
        closers.push(() => server.stop());
        return server;
      });
      return redisCluster((await redisNodes).url, `cluster${prefixes++}:`);
    },
  ],
];

for (const [name, factory] of FACTORIES) {
  describe(`broker cluster: ${name}`, () => {
    const run = (title: string, body: (make: ClusterFactory) => Promise<void>): void => {
      test(title, async (t) => {
        const make = await factory(t);
        if (make !== undefined) await body(make);
      });
    };

    for (const transport of ['udp', 'tcp'] as const) {
      run(`a Connect at broker 2 reaches a recipient registered through broker 1 over ${transport.toUpperCase()}`, async (make) => {
        const cluster = await make(3, closers);
        const [one, two] = cluster.brokers;
        assert.ok(one && two);
        const events: BrokerEvent[] = [];
        two.on('event', (e: BrokerEvent) => events.push(e));
        const keyDir = await tempKeyDir(closers);
        const uri = `nattrav://far-${transport}`;
        const server = await echoRecipient({ broker: cluster.addresses, uri, keyDir, registerTransport: transport }, closers);
        assert.equal(server.address()?.broker.port, one.address().port, 'registered with the first broker listed');
        assert.equal(server.address()?.transport, transport);
        assert.equal((await one.registry.get(uri))?.broker, one.busId, 'the registration names the broker that took it');

        const info = await echoes({ broker: cluster.addresses[1] as string, uri });
        assert.notEqual(info.path, 'relay', 'a direct path (on loopback: public), not the relay');
        const scheduled = events.find((e) => e.type === 'scheduled');
        assert.ok(scheduled, 'broker 2 ran the attempt (the recipient joined there)');
      });
    }

    run('a recipient joins only at a broker it was given: a request relayed from another is refused', async (make) => {
      const cluster = await make(3, closers);
      const stranger = await cluster.add(); // same registry and bus, but not in the recipient's list
      const keyDir = await tempKeyDir(closers);
      const uri = 'nattrav://picky';
      const refusals: AttemptRefusal[] = [];
      const server = await echoRecipient({ broker: cluster.addresses, uri, keyDir }, closers);
      server.on('attemptRefused', (refusal: AttemptRefusal) => refusals.push(refusal));
      await assert.rejects(connect({ broker: stranger.address, uri, knownKeysFile: false, timeoutMs: 10_000 }), (err: NattravError) => {
        assert.equal(err.code, ErrorCode.RecipientUnreachable);
        assert.match(err.message, new RegExp(`JOIN-AT 127\\.0\\.0\\.1:${stranger.broker.address().port} is not one of our brokers`));
        return true;
      });
      assert.equal(refusals.length, 1);
      assert.equal(server.attemptsInProgress, 0, 'nothing was joined');
      // Through a broker it was given, the same recipient is reachable.
      await echoes({ broker: cluster.addresses[2] as string, uri });
    });

    run('SEQUENCE is shared: requests of two brokers to one recipient are all acted on', async (make) => {
      const cluster = await make(3, closers);
      const keyDir = await tempKeyDir(closers);
      const uri = 'nattrav://busy';
      const server = await echoRecipient({ broker: cluster.addresses, uri, keyDir }, closers);
      const refused: AttemptRefusal[] = [];
      server.on('attemptRefused', (r: AttemptRefusal) => refused.push(r));
      // Alternating brokers: with per-broker counters the second broker's numbers 1, 2, ... would be replays.
      for (let i = 0; i < 4; i++) await echoes({ broker: cluster.addresses[i % 2 === 0 ? 1 : 2] as string, uri });
      await Promise.all([0, 1, 2].map((i) => echoes({ broker: cluster.addresses[i] as string, uri })));
      assert.deepEqual(refused, []);
    });

    for (const transport of ['udp', 'tcp'] as const) run(`failover over ${transport.toUpperCase()}: a broker that closes loses none of its recipients; they re-register with the next within one keepalive interval`, async (make) => {
      const cluster = await make(3, closers);
      const [one, two, three] = cluster.brokers;
      assert.ok(one && two && three);
      const uris = ['nattrav://stay-a', 'nattrav://stay-b', 'nattrav://stay-c'];
      const moved = new Map<string, RegisteredEvent & { at: number }>();
      for (const uri of uris) {
        const server = await echoRecipient({ broker: cluster.addresses, uri, keyDir: await tempKeyDir(closers), keepaliveMs: KEEPALIVE_MS, registerTimeoutMs: REGISTER_TIMEOUT_MS, registerTransport: transport }, closers);
        assert.equal(server.address()?.broker.port, one.address().port);
        server.on('registered', (event: RegisteredEvent) => {
          if (event.kind === 'again' && !moved.has(uri)) moved.set(uri, { ...event, at: performance.now() });
        });
      }
      const stopped = performance.now();
      await one.close();
      await until(() => moved.size === uris.length, KEEPALIVE_MS + REGISTER_TIMEOUT_MS + SLACK_MS + 2_000, 'every recipient registered again');
      for (const [uri, event] of moved) {
        assert.equal(event.broker.port, two.address().port, `${uri} moved to the next broker of its list`);
        // With several brokers a refresh comes early and is bounded (registration.ts FAILOVER_SHARE): moved within one keepalive.
        assert.ok(event.at - stopped <= KEEPALIVE_MS + SLACK_MS, `${uri} moved after ${Math.round(event.at - stopped)} ms`);
        assert.equal((await two.registry.get(uri))?.broker, two.busId);
      }
      // Reachable through either remaining broker, whichever the initiator asks.
      for (const uri of uris) {
        await echoes({ broker: cluster.addresses[2] as string, uri });
        await echoes({ broker: [cluster.addresses[0] as string, cluster.addresses[1] as string], uri });
      }
    });

    run('a name held by one key through broker 1 cannot be taken by another key through broker 2', async (make) => {
      const cluster = await make(3, closers);
      const uri = 'nattrav://taken';
      const holder = await echoRecipient({ broker: cluster.addresses, uri, keyDir: await tempKeyDir(closers) }, closers);
      assert.equal(holder.address()?.broker.port, cluster.brokers[0]?.address().port);
      const thief = createServer({ broker: cluster.addresses[1] as string, uri, keyDir: await tempKeyDir(closers), once: true });
      closers.push(() => new Promise<void>((resolve) => thief.close(() => resolve())));
      thief.listen();
      const [err] = (await once(thief, 'error')) as [NattravError];
      assert.match(err.message, /registered by another key/);
      await echoes({ broker: cluster.addresses[1] as string, uri });
    });
  });
}

test('initiators try the brokers in order: a dead first broker costs one refused connection', async () => {
  const cluster = await memoryCluster(2, closers);
  const keyDir = await tempKeyDir(closers);
  const uri = 'nattrav://order';
  await echoRecipient({ broker: cluster.addresses[1] as string, uri, keyDir }, closers);
  const dead = cluster.addresses[0] as string;
  await cluster.brokers[0]?.close();
  const failed: string[] = [];
  const socket = await connect({ broker: [dead, cluster.addresses[1] as string], uri, knownKeysFile: false, timeoutMs: 15_000, onBrokerFailed: ({ broker }) => failed.push(broker) });
  socket.destroy();
  assert.deepEqual(failed, [dead]);
  await assert.rejects(connect({ broker: [dead, dead.replace(/:\d+$/, ':1')], uri, knownKeysFile: false, timeoutMs: 15_000 }), (err: NattravError) => {
    assert.equal(err.code, ErrorCode.BrokerUnreachable);
    assert.match(err.message, /all 2 brokers tried/);
    return true;
  });
});

test('a first broker that accepts connections but never answers times the exchange out, and the next broker gets the attempt', async () => {
  const cluster = await memoryCluster(1, closers);
  const keyDir = await tempKeyDir(closers);
  const uri = 'nattrav://past-a-hung-broker';
  await echoRecipient({ broker: cluster.addresses[0] as string, uri, keyDir }, closers);
  // Accepts TCP and reads, answers nothing: a hung broker.
  const held = new Set<NetSocket>();
  const hung = createNetServer((socket) => {
    held.add(socket);
    socket.on('error', () => undefined);
    socket.resume();
  });
  await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
  closers.push(() => {
    for (const socket of held) socket.destroy();
    return new Promise<void>((resolve) => hung.close(() => resolve()));
  });
  const silent = `127.0.0.1:${(hung.address() as { port: number }).port}`;
  const failed: Array<{ broker: string; code: string }> = [];
  const socket = await connect({
    broker: [silent, cluster.addresses[0] as string],
    uri,
    knownKeysFile: false,
    exchangeTimeoutMs: 1_500,
    timeoutMs: 20_000,
    onBrokerFailed: ({ broker, error }) => failed.push({ broker, code: error.code }),
  });
  socket.destroy();
  assert.deepEqual(failed, [{ broker: silent, code: ErrorCode.Timeout }]);
});

test('with a broker CA, a recipient joins at any broker the CA vouches for, and at no other', async () => {
  const brokerCa = await createCa({ name: 'cluster CA' });
  const impostorCa = await createCa({ name: 'impostor CA' });
  const issued = await issueCertificate({ ca: brokerCa, uri: 'nattrav-broker://cluster' });
  const cluster = await memoryCluster(2, closers, { cert: issued.certPem, key: issued.keyPem, recipientTimeoutMs: 2_000 });
  const forged = await issueCertificate({ ca: impostorCa, uri: 'nattrav-broker://cluster' });
  const impostor = await cluster.add({ cert: forged.certPem, key: forged.keyPem, recipientTimeoutMs: 2_000 });
  const uri = 'nattrav://vouched';
  // Given broker 1 only: broker 2 is not in its list, but the CA vouches for it.
  const server = await echoRecipient({ broker: cluster.addresses[0] as string, uri, keyDir: await tempKeyDir(closers), brokerCa: brokerCa.certPem }, closers);
  await echoes({ broker: cluster.addresses[1] as string, uri, brokerCa: brokerCa.certPem });
  const failures: NattravError[] = [];
  server.on('attemptFailed', (err: NattravError) => failures.push(err));
  await assert.rejects(connect({ broker: impostor.address, uri, knownKeysFile: false, timeoutMs: 10_000 }), (err: NattravError) => err.code === ErrorCode.RecipientUnreachable);
  await until(() => failures.length > 0, 5_000, 'the recipient to give up the join');
  assert.equal(failures[0]?.code, ErrorCode.BrokerAuth, failures[0]?.message);
});

test('a broker restarted on its address under the same bus ID serves its recipients at once, before their next refresh', async () => {
  const registry = new MemoryRegistry();
  const sessions = new SessionTable(100);
  const hub = new MemoryBusHub();
  closers.push(() => registry.close());
  /** A broker and its bus; closing it closes both (the bus is the caller's to close). */
  const start = async (id: string, port = 0): Promise<{ broker: Broker; stop(): Promise<void> }> => {
    const bus = hub.join(id);
    const broker = createBroker({ host: '127.0.0.1', port, registry, sessions, bus });
    await broker.listen();
    const stop = async (): Promise<void> => {
      await broker.close();
      await bus.close();
    };
    closers.push(stop);
    return { broker, stop };
  };
  const other = await start('other');
  const first = await start('pending');
  const port = first.broker.address().port;
  await first.stop();
  const one = await start(`127.0.0.1:${port}`, port);
  const addresses = [`127.0.0.1:${port}`, `127.0.0.1:${other.broker.address().port}`];
  const uri = 'nattrav://restarted';
  // A long keepalive: no refresh comes between the restart and the connect.
  await echoRecipient({ broker: addresses, uri, keyDir: await tempKeyDir(closers), keepaliveMs: 60_000 }, closers);
  assert.equal((await registry.get(uri))?.broker, `127.0.0.1:${port}`);
  await one.stop();
  await start(`127.0.0.1:${port}`, port);
  await echoes({ broker: addresses[1] as string, uri });
});

test('the broker option: a list must hold at least one valid address', async () => {
  await assert.rejects(connect({ broker: [], uri: 'nattrav://x' }), /broker: expected at least one broker address/);
  await assert.rejects(connect({ broker: ['127.0.0.1:1', 'host:99999'], uri: 'nattrav://x' }), /broker\[1\]/);
  assert.throws(() => createServer({ broker: [], uri: 'nattrav://x' }), /broker: expected at least one broker address/);
});
