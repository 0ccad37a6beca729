/**
 * Two brokers (in this process, each with its own Redis connection, as two processes
 * would have) on one real redis-server on loopback, then on a real three-node Redis Cluster: the owner binding of plain names,
 * the sessions and the lookups are shared, so a request may land on either broker.
 * And a Redis that stops answering makes the broker answer 500, report it, and go on.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import type { Broker } from '../../src/broker/broker.js';
import { connectRedis, type RedisBackend } from '../../src/broker/registry/redis.js';
import type { NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { generateKeyPair, keyFingerprint } from '../../src/security/keys.js';
import { decodeMessage, verifyMessageIntegritySha256 } from '../../src/wire/codec.js';
import { MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import type { StunMessage } from '../../src/wire/message.js';
import { getErrorCode } from '../../src/wire/nattrav.js';
import { startBroker } from '../helpers/loopback.js';
import { RawPeer, refreshBytes } from '../helpers/raw-peer.js';
import { haveRedis, startRedis, startRedisCluster, type RedisServer } from '../helpers/redis-server.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** Short, so that an unanswered command fails well within the test's patience. */
const COMMAND_TIMEOUT_MS = 300;

async function sharedBroker(url: string, onError: (err: NattravError) => void = () => undefined): Promise<{ broker: Broker; port: number; backend: RedisBackend }> {
  const backend = await connectRedis({ url, commandTimeoutMs: COMMAND_TIMEOUT_MS, onError });
  closers.push(() => backend.close());
  const { broker } = await startBroker({ registry: backend.registry, sessions: backend.sessions });
  closers.push(() => broker.close());
  return { broker, port: broker.address().port, backend };
}

function errorOf(message: StunMessage): { code: number; reason: string } | undefined {
  return message.cls === MessageClass.ErrorResponse ? getErrorCode(message) : undefined;
}

const SHARED: ReadonlyArray<[string, () => Promise<RedisServer>, boolean]> = [
  ['one redis-server', () => startRedis(), false],
  ['a three-node Redis Cluster', () => startRedisCluster(3), true],
];

for (const [what, startShared, cluster] of SHARED) describe(`two brokers sharing ${what}`, () => {
  let server: RedisServer | undefined;
  let one: Awaited<ReturnType<typeof sharedBroker>>;
  let two: Awaited<ReturnType<typeof sharedBroker>>;
  /** False (the test skipped, or failed in CI) without redis-server. */
  const ready = async (t: { skip(reason: string): void }): Promise<boolean> => server !== undefined || (await haveRedis(t, cluster) && false);
  before(async () => {
    if (!(await haveRedis({ skip: () => undefined }, cluster))) return;
    server = await startShared();
    closers.push(() => server?.stop());
    one = await sharedBroker(server.url);
    two = await sharedBroker(server.url);
  });

  test('a name held through broker 1 cannot be taken through broker 2; its holder keeps it', async (t) => {
    if (!(await ready(t))) return;
    const alice = generateKeyPair();
    const mallory = generateKeyPair();
    const holder = await RawPeer.open(one.port, closers);
    await holder.register('nattrav://held', alice);
    const thief = await RawPeer.open(two.port, closers);
    await assert.rejects(thief.register('nattrav://held', mallory), /"code":403/);
    assert.equal((await two.broker.registry.get('nattrav://held'))?.keyFingerprint, keyFingerprint(alice.spki));
    await holder.register('nattrav://held', alice, 60_000, two.port); // the holder may come back through either
  });

  test('brokers racing for one name: exactly one key gets it, every round', async (t) => {
    if (!(await ready(t))) return;
    for (let round = 0; round < 5; round++) {
      const uri = `nattrav://race-${round}`;
      const [a, b] = [generateKeyPair(), generateKeyPair()];
      const [peerA, peerB] = [await RawPeer.open(one.port, closers), await RawPeer.open(two.port, closers)];
      const outcomes = await Promise.allSettled([peerA.register(uri, a), peerB.register(uri, b)]);
      const won = outcomes.filter((o) => o.status === 'fulfilled').length;
      assert.equal(won, 1, `round ${round}: ${outcomes.map((o) => (o.status === 'fulfilled' ? 'registered' : String(o.reason))).join(' / ')}`);
      const loser = outcomes.find((o) => o.status === 'rejected');
      assert.match(String(loser?.reason), /"code":403.*registered by another key/);
      const winnerKey = outcomes[0]?.status === 'fulfilled' ? a : b;
      assert.equal((await one.broker.registry.get(uri))?.keyFingerprint, keyFingerprint(winnerKey.spki));
    }
  });

  test('a refresh under a session opened on broker 1 is accepted by broker 2, and not again by broker 1', async (t) => {
    if (!(await ready(t))) return;
    const peer = await RawPeer.open(one.port, closers);
    const session = await peer.register('nattrav://roaming', generateKeyPair(), 5_000);
    const before = (await one.broker.registry.get('nattrav://roaming'))?.expiresAt ?? 0;
    const refresh = refreshBytes('nattrav://roaming', 60_000, session, 1);
    const answer = await peer.sendBytes(refresh, two.port);
    assert.equal(errorOf(answer), undefined, JSON.stringify(errorOf(answer)));
    assert.ok(verifyMessageIntegritySha256(answer, session.key), 'broker 2 answers under the session key it read from Redis');
    assert.ok(((await one.broker.registry.get('nattrav://roaming'))?.expiresAt ?? 0) > before + 50_000, 'broker 1 sees the longer lifetime');
    assert.equal(errorOf(await peer.sendBytes(refresh, one.port))?.code, StunErrorCode.Forbidden, 'the same refresh replayed to broker 1');
  });

  test('one refresh handed to both brokers at once is accepted by exactly one', async (t) => {
    if (!(await ready(t))) return;
    const peer = await RawPeer.open(one.port, closers);
    const session = await peer.register('nattrav://replayed', generateKeyPair());
    for (let sequence = 1; sequence <= 10; sequence++) {
      const bytes = refreshBytes('nattrav://replayed', 60_000, session, sequence);
      const answers: StunMessage[] = [];
      const both = new Promise<void>((resolve) => {
        const onMessage = (data: Buffer): void => {
          answers.push(decodeMessage(data));
          if (answers.length === 2) {
            peer.socket.off('message', onMessage);
            resolve();
          }
        };
        peer.socket.on('message', onMessage);
      });
      peer.socket.send(bytes, one.port, '127.0.0.1');
      peer.socket.send(bytes, two.port, '127.0.0.1');
      await both;
      const codes = answers.map((a) => errorOf(a)?.code ?? 'ok').sort();
      assert.deepEqual(codes, [StunErrorCode.Forbidden, 'ok'], `sequence ${sequence}`);
    }
  });

  test('a lookup on broker 2 finds a registration made through broker 1: its recipient is asked, under the session key', async (t) => {
    if (!(await ready(t))) return;
    const recipient = await RawPeer.open(one.port, closers);
    const session = await recipient.register('nattrav://looked-up', generateKeyPair());
    const asked = once(recipient.socket, 'message') as Promise<[Buffer, { port: number }]>;
    const attempt = connect({ broker: `127.0.0.1:${two.port}`, uri: 'nattrav://looked-up', timeoutMs: 10_000 });
    const [data, from] = await asked;
    const request = decodeMessage(data);
    assert.equal(request.method, Method.ConnectionRequest);
    assert.equal(from.port, two.port, 'from broker 2');
    assert.ok(verifyMessageIntegritySha256(request, session.key));
    await assert.rejects(attempt, (err: NattravError) => err.code === 'ERR_RECIPIENT_UNREACHABLE', 'a recipient that never joins; but not an unknown URI');
  });

});

describe('a broker whose Redis stops answering', () => {
  test('Redis stops answering: the broker answers 500 "registry unavailable", reports it, and serves again when Redis is back', async (t) => {
    if (!(await haveRedis(t))) return;
    const reports: NattravError[] = [];
    const own = await startRedis();
    closers.push(() => own.stop());
    const { port } = await sharedBroker(own.url, (err) => reports.push(err));
    const peer = await RawPeer.open(port, closers);
    own.pause();
    try {
      await assert.rejects(peer.register('nattrav://outage', generateKeyPair()), /"code":500.*registry unavailable/);
    } finally {
      own.resume();
    }
    assert.ok(reports.length >= 1, 'reported');
    assert.equal(reports[0]?.code, 'ERR_REGISTRY_UNAVAILABLE');
    assert.match(reports[0]?.message ?? '', new RegExp(`Redis redis://127.0.0.1:${own.port}`));
    await peer.register('nattrav://outage', generateKeyPair());
  });
});
