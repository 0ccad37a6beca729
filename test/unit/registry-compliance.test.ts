/**
 * One list of tests for every Registry and SessionStore implementation: in memory, on a
 * real redis-server, and on a real three-node Redis Cluster. Each runs on a clock the test
 * moves by hand (the stores take `now`), so expiry is checked at the exact millisecond;
 * Redis's own TTLs are checked in registry-redis.test.ts. Each Redis test uses its own key
 * prefix on a server started for this file (no persistence, stopped by PID at the end).
 */
import assert from 'node:assert/strict';
import { after, describe, test, type TestContext } from 'node:test';
import { randomBytes } from 'node:crypto';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { connectRedis, type RedisBackend } from '../../src/broker/registry/redis.js';
import type { Registration, Registry } from '../../src/broker/registry/registry.js';
import { SessionTable, type SessionStore } from '../../src/broker/sessions.js';
import { SequenceCounter } from '../../src/broker/sequences.js';
import { NonceBook } from '../../src/security/proof.js';
import { AttemptHistory } from '../../src/broker/attempt-history.js';
import { IpcPort, unbatch } from '../../src/broker/workers/ipc.js';
import { IpcRegistry, IpcSessions, StoreClient, serveStoreCall } from '../../src/broker/workers/ipc-stores.js';
import { haveRedis, startRedis, startRedisCluster, type RedisServer } from '../helpers/redis-server.js';

/** What each test gets: the stores, on a clock it moves with `advance`. */
interface Subject {
  readonly registry: Registry;
  readonly sessions: SessionStore;
  advance(ms: number): void;
  now(): number;
}

/** Builds a fresh subject for one test, or undefined when the test was skipped. */
type Factory = (t: TestContext) => Promise<Subject | undefined>;

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

function clock(): { now: () => number; advance(ms: number): void } {
  let time = Date.now();
  return { now: () => time, advance: (ms) => (time += ms) };
}

const memory: Factory = async () => {
  const { now, advance } = clock();
  return { registry: new MemoryRegistry({ now, sweepIntervalMs: 0 }), sessions: new SessionTable(1000, now), advance, now };
};

/** A Redis factory: one server (or cluster) for the file, started by the first test that needs it. */
function redis(start: () => Promise<RedisServer>, cluster: boolean): Factory {
  let server: Promise<RedisServer> | undefined;
  let prefixes = 0;
  return async (t) => {
    if (!(await haveRedis(t, cluster))) return undefined;
    server ??= start().then((started) => {
      closers.push(() => started.stop());
      return started;
    });
    const { url } = await server;
    const { now, advance } = clock();
    const backend: RedisBackend = await connectRedis({ url, keyPrefix: `test${prefixes++}:`, now });
    closers.push(() => backend.close());
    assert.equal(backend.connection.cluster, cluster, 'the connection found the kind of server it runs on');
    return { registry: backend.registry, sessions: backend.sessions, advance, now };
  };
}

/**
 * The primary's memory stores reached over IPC, as `--workers` workers reach them
 * (workers/ipc-stores.ts): each message crosses a structured clone, as with cluster's
 * 'advanced' serialization, so bytes arrive as Uint8Arrays and must come back as Buffers.
 */
const overIpc: Factory = async () => {
  const { now, advance } = clock();
  const book = new NonceBook();
  const stores = {
    registry: new MemoryRegistry({ now, sweepIntervalMs: 0 }),
    sessions: new SessionTable(1000, now),
    sequences: new SequenceCounter(),
    nonces: { secret: () => new Uint8Array(32), use: book.use.bind(book) },
    history: new AttemptHistory(),
  };
  let client: StoreClient | undefined;
  const toWorker = new IpcPort({ send: (message) => (unbatch(structuredClone(message), undefined, (m) => client?.settle(m)), true) });
  const toPrimary = new IpcPort({
    send: (message) => {
      unbatch(structuredClone(message), undefined, (m) => void serveStoreCall(m, stores).then((answer) => toWorker.post(answer)));
      return true;
    },
  });
  client = new StoreClient(toPrimary);
  return { registry: new IpcRegistry(client), sessions: new IpcSessions(client), advance, now };
};

const implementations: ReadonlyArray<[string, Factory]> = [
  ['memory', memory],
  ['memory in the primary, over IPC (--workers)', overIpc],
  ['Redis, single server', redis(() => startRedis(), false)],
  ['Redis Cluster, three masters', redis(() => startRedisCluster(3), true)],
];

const LIFETIME_MS = 30_000;

function registration(subject: Subject, uri: string, extra: Partial<Registration> = {}): Registration {
  return { uri, publicEndpoint: { family: 'IPv4', address: '203.0.113.7', port: 40_001 }, privateEndpoints: [], expiresAt: subject.now() + LIFETIME_MS, ...extra };
}

for (const [name, make] of implementations) {
  describe(`Registry compliance: ${name}`, () => {
    const run = (title: string, body: (s: Subject) => Promise<void>): void => {
      test(title, async (t) => {
        const subject = await make(t);
        if (subject !== undefined) await body(subject);
      });
    };

    run('what is put comes back exactly, every field', async (s) => {
      const full = registration(s, 'nattrav://full', {
        privateEndpoints: [
          { family: 'IPv4', address: '192.168.1.20', port: 5000 },
          { family: 'IPv6', address: 'fd00::1:2', port: 65_535 },
        ],
        transport: 'tcp',
        keyFingerprint: 'abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst',
        publicEndpoint: { family: 'IPv6', address: '2001:db8::7', port: 0 },
        broker: 'b-0123456789abcdef',
        mappedEndpoint: { family: 'IPv4', address: '203.0.113.40', port: 40_123 },
        boundEndpoint: { family: 'IPv4', address: '203.0.113.41', port: 40_124 },
      });
      const bare = registration(s, 'nattrav://bare ünïcode {braces}');
      // Registered over a WebSocket: a plain IPv4 one (the compact registry packs it) and the full one.
      const web = registration(s, 'nattrav://web', { transport: 'tcp', web: true, privateEndpoints: [{ family: 'IPv4', address: '10.1.2.3', port: 4000 }, { family: 'IPv4', address: '10.1.2.4', port: 4001 }] });
      const fullWeb = { ...full, uri: 'nattrav://full-web', web: true };
      await s.registry.put(full);
      await s.registry.put(bare);
      await s.registry.put(web);
      await s.registry.put(fullWeb);
      assert.deepEqual(await s.registry.get('nattrav://full'), full);
      assert.deepEqual(await s.registry.get(bare.uri), bare);
      assert.deepEqual(await s.registry.get(web.uri), web);
      assert.deepEqual(await s.registry.get(fullWeb.uri), fullWeb);
      assert.equal(await s.registry.get('nattrav://nobody'), undefined);
    });

    run('a dual-stack registration comes back with both families; deleteIf compares the second family too', async (s) => {
      const secondFamily = {
        publicEndpoint: { family: 'IPv6', address: '2001:db8:1::7', port: 40_002 },
        privateEndpoints: [{ family: 'IPv6', address: '2001:db8:1::7', port: 40_002 }],
        expiresAt: s.now() + LIFETIME_MS - 1,
      } as const;
      // A plain IPv4 registration packs in the compact registry; with a second family it is kept whole.
      const dual = registration(s, 'nattrav://dual', { keyFingerprint: 'abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst', privateEndpoints: [{ family: 'IPv4', address: '10.0.0.2', port: 4000 }], secondFamily });
      const withBroker = registration(s, 'nattrav://dual-broker', { broker: 'b-1', secondFamily: { ...secondFamily, privateEndpoints: [], broker: 'b-2' } });
      await s.registry.put(dual);
      await s.registry.put(withBroker);
      assert.deepEqual(await s.registry.get(dual.uri), dual);
      assert.deepEqual(await s.registry.get(withBroker.uri), withBroker);
      const moved = { ...dual, secondFamily: { ...secondFamily, publicEndpoint: { family: 'IPv6', address: '2001:db8:1::7', port: 40_003 } } } as const;
      assert.equal(await s.registry.deleteIf(moved), false, 'another second family is another registration');
      const { secondFamily: _dropped, ...single } = dual;
      await s.registry.put(single);
      assert.deepEqual(await s.registry.get(dual.uri), single, 'put without one drops it');
      assert.equal(await s.registry.deleteIf(single), true);
    });

    run('a registration is live until its expiresAt, gone at it', async (s) => {
      await s.registry.put(registration(s, 'nattrav://lapsing'));
      s.advance(LIFETIME_MS - 1);
      assert.ok(await s.registry.get('nattrav://lapsing'), 'live 1 ms before');
      assert.equal(await s.registry.size(), 1);
      s.advance(1);
      assert.equal(await s.registry.get('nattrav://lapsing'), undefined, 'gone at expiresAt');
      assert.equal(await s.registry.size(), 0);
    });

    run('put replaces, and a later expiresAt extends the registration', async (s) => {
      await s.registry.put(registration(s, 'nattrav://moving'));
      s.advance(LIFETIME_MS - 10);
      const moved = registration(s, 'nattrav://moving', { publicEndpoint: { family: 'IPv4', address: '198.51.100.9', port: 7 } });
      await s.registry.put(moved);
      s.advance(20);
      assert.deepEqual(await s.registry.get('nattrav://moving'), moved);
    });

    run('a registration put already expired is not there', async (s) => {
      await s.registry.put(registration(s, 'nattrav://stale', { expiresAt: s.now() }));
      assert.equal(await s.registry.get('nattrav://stale'), undefined);
      assert.equal(await s.registry.size(), 0);
    });

    run('delete says whether a live registration was removed', async (s) => {
      await s.registry.put(registration(s, 'nattrav://a'));
      await s.registry.put(registration(s, 'nattrav://b', { expiresAt: s.now() + 5 }));
      assert.equal(await s.registry.delete('nattrav://a'), true);
      assert.equal(await s.registry.get('nattrav://a'), undefined);
      assert.equal(await s.registry.delete('nattrav://a'), false, 'twice');
      s.advance(5);
      assert.equal(await s.registry.delete('nattrav://b'), false, 'expired');
      assert.equal(await s.registry.delete('nattrav://never'), false);
    });

    run('deleteIf removes only the registration it was given: one put in between stays', async (s) => {
      const first = registration(s, 'nattrav://a', { keyFingerprint: 'f1', transport: 'tcp' });
      await s.registry.put(first);
      const read = await s.registry.get('nattrav://a');
      assert.ok(read !== undefined);
      // The peer registered again (another endpoint, a later expiry) before the clean-up ran.
      const again = registration(s, 'nattrav://a', { keyFingerprint: 'f1', transport: 'tcp', publicEndpoint: { family: 'IPv4', address: '203.0.113.8', port: 40_002 } });
      await s.registry.put(again);
      assert.equal(await s.registry.deleteIf(read), false, 'the stale view removes nothing');
      assert.deepEqual(await s.registry.get('nattrav://a'), again);
      for (const changed of [{ expiresAt: again.expiresAt + 1 }, { keyFingerprint: 'f2' }, { transport: 'udp' as const }, { broker: '198.51.100.9:3478' }, { mappedEndpoint: { family: 'IPv4' as const, address: '203.0.113.8', port: 40_003 } }, { web: true }, { boundEndpoint: { family: 'IPv4' as const, address: '203.0.113.8', port: 40_004 } }, { privateEndpoints: [{ family: 'IPv4' as const, address: '10.0.0.2', port: 1 }] }]) {
        assert.equal(await s.registry.deleteIf({ ...again, ...changed }), false, `differs in ${Object.keys(changed).join()}`);
      }
      const current = await s.registry.get('nattrav://a');
      assert.ok(current !== undefined);
      assert.equal(await s.registry.deleteIf(current), true);
      assert.equal(await s.registry.get('nattrav://a'), undefined);
      assert.equal(await s.registry.deleteIf(current), false, 'twice');
      await s.registry.put(registration(s, 'nattrav://b', { expiresAt: s.now() + 5 }));
      const expiring = await s.registry.get('nattrav://b');
      s.advance(5);
      assert.equal(await s.registry.deleteIf(expiring as Registration), false, 'expired');
    });

    run('size counts live registrations only', async (s) => {
      for (let i = 0; i < 5; i++) await s.registry.put(registration(s, `nattrav://n${i}`, { expiresAt: s.now() + (i + 1) * 1000 }));
      assert.equal(await s.registry.size(), 5);
      s.advance(2000);
      assert.equal(await s.registry.size(), 3);
    });

    run('claim: the first key holds a name while registered, then it is free', async (s) => {
      const uri = 'nattrav://claimed';
      assert.equal(await s.registry.claim({ ...registration(s, uri), keyFingerprint: 'key-one' }), undefined);
      assert.equal(await s.registry.claim({ ...registration(s, uri), keyFingerprint: 'key-one' }), undefined, 'its holder refreshes');
      const other = { ...registration(s, uri, { publicEndpoint: { family: 'IPv4', address: '198.51.100.66', port: 1 } }), keyFingerprint: 'key-two' } as const;
      assert.equal(await s.registry.claim(other), 'key-one', 'another key is told who holds it');
      assert.equal((await s.registry.get(uri))?.publicEndpoint.address, '203.0.113.7', 'and changed nothing');
      s.advance(LIFETIME_MS);
      assert.equal(await s.registry.claim({ ...other, expiresAt: s.now() + LIFETIME_MS }), undefined, 'free once lapsed');
      assert.equal((await s.registry.get(uri))?.keyFingerprint, 'key-two');
    });

    run('claim takes a name from a registration without a key (open mode)', async (s) => {
      await s.registry.put(registration(s, 'nattrav://open'));
      assert.equal(await s.registry.claim({ ...registration(s, 'nattrav://open'), keyFingerprint: 'keyed' }), undefined);
      assert.equal((await s.registry.get('nattrav://open'))?.keyFingerprint, 'keyed');
    });

    run('claims racing for one name: exactly one key gets it', async (s) => {
      const uri = 'nattrav://contested';
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => s.registry.claim({ ...registration(s, uri), keyFingerprint: `key-${i}` })));
      const winners = results.flatMap((holder, i) => (holder === undefined ? [`key-${i}`] : []));
      assert.equal(winners.length, 1, `one winner, got ${winners.join(', ')}`);
      assert.equal((await s.registry.get(uri))?.keyFingerprint, winners[0]);
      assert.ok(results.every((holder) => holder === undefined || holder === winners[0]), 'the losers are told the winner');
    });

    run('sessions: opened, found by URI and ID only, replaced by the next one', async (s) => {
      const key = Buffer.concat([Buffer.alloc(3), randomBytes(29)]);
      const endpoint = { address: '203.0.113.7', port: 40_001 };
      const first = await s.sessions.open('nattrav://s', key, 'fp', s.now() + LIFETIME_MS, endpoint);
      assert.ok(first);
      assert.match(first.id, /^[0-9a-f]{32}$/);
      const found = await s.sessions.find('nattrav://s', first.id);
      assert.deepEqual(found, { id: first.id, uri: 'nattrav://s', key, keyFingerprint: 'fp', lastSequence: 0, expiresAt: s.now() + LIFETIME_MS, endpoint });
      assert.deepEqual(await s.sessions.byUri('nattrav://s'), found);
      assert.equal(await s.sessions.find('nattrav://other', first.id), undefined, 'another URI');
      assert.equal(await s.sessions.find('nattrav://s', '0'.repeat(32)), undefined, 'another ID');
      const second = await s.sessions.open('nattrav://s', randomBytes(32), 'fp', s.now() + LIFETIME_MS, endpoint);
      assert.ok(second);
      assert.notEqual(second.id, first.id);
      assert.equal(await s.sessions.find('nattrav://s', first.id), undefined, 'the old session is gone');
      assert.equal(await s.sessions.advance(first, 1), 'unknown');
      assert.equal(await s.sessions.end(first), false, 'ending the old one does not end the new one');
      assert.equal((await s.sessions.byUri('nattrav://s'))?.id, second.id);
    });

    run('sessions: SEQUENCE rises, replays and older numbers are refused', async (s) => {
      const session = await s.sessions.open('nattrav://seq', randomBytes(32), 'fp', s.now() + LIFETIME_MS, { address: '::1', port: 1 });
      assert.ok(session);
      assert.equal(await s.sessions.advance(session, 5), 'accepted');
      assert.equal(await s.sessions.advance(session, 5), 'replayed');
      assert.equal(await s.sessions.advance(session, 4), 'replayed');
      assert.equal(await s.sessions.advance(session, 6), 'accepted');
      assert.equal((await s.sessions.find('nattrav://seq', session.id))?.lastSequence, 6);
    });

    run('sessions: ConnectionRequest SEQUENCE is one counter for every caller, per session', async (s) => {
      const session = await s.sessions.open('nattrav://req', randomBytes(32), 'fp', s.now() + LIFETIME_MS, { address: '::1', port: 1 });
      assert.ok(session);
      // Twenty brokers drawing at once get twenty different numbers, 1 to 20.
      const drawn = await Promise.all(Array.from({ length: 20 }, () => s.sessions.nextRequestSequence(session)));
      assert.deepEqual([...drawn].sort((a, b) => (a ?? 0) - (b ?? 0)), Array.from({ length: 20 }, (_, i) => i + 1));
      // Refreshes (advance) are numbered apart: they do not move the request counter.
      assert.equal(await s.sessions.advance(session, 100), 'accepted');
      assert.equal(await s.sessions.nextRequestSequence(session), 21);
      // A new session (a new recipient book) starts again at 1; the old one draws nothing.
      const next = await s.sessions.open('nattrav://req', randomBytes(32), 'fp', s.now() + LIFETIME_MS, { address: '::1', port: 1 });
      assert.ok(next);
      assert.equal(await s.sessions.nextRequestSequence(session), undefined);
      assert.equal(await s.sessions.nextRequestSequence(next), 1);
      s.advance(LIFETIME_MS);
      assert.equal(await s.sessions.nextRequestSequence(next), undefined, 'an expired session draws nothing');
    });

    run('sessions: one SEQUENCE handed to many at once is accepted once', async (s) => {
      const session = await s.sessions.open('nattrav://race', randomBytes(32), 'fp', s.now() + LIFETIME_MS, { address: '::1', port: 1 });
      assert.ok(session);
      const verdicts = await Promise.all(Array.from({ length: 20 }, () => s.sessions.advance(session, 7)));
      assert.equal(verdicts.filter((v) => v === 'accepted').length, 1, verdicts.join(' '));
      assert.equal(verdicts.filter((v) => v === 'replayed').length, 19);
    });

    run('sessions: renew moves and extends; expiry and end close them', async (s) => {
      const session = await s.sessions.open('nattrav://renew', randomBytes(32), 'fp', s.now() + 1000, { address: '203.0.113.7', port: 1 });
      assert.ok(session);
      s.advance(999);
      assert.equal(await s.sessions.renew(session, { address: '198.51.100.1', port: 2 }, s.now() + 1000), true);
      s.advance(999);
      const renewed = await s.sessions.byUri('nattrav://renew');
      assert.deepEqual(renewed?.endpoint, { address: '198.51.100.1', port: 2 });
      s.advance(1);
      assert.equal(await s.sessions.find('nattrav://renew', session.id), undefined, 'gone at expiresAt');
      assert.equal(await s.sessions.byUri('nattrav://renew'), undefined);
      assert.equal(await s.sessions.advance(session, 1), 'unknown');
      assert.equal(await s.sessions.renew(session, { address: '198.51.100.1', port: 2 }, s.now() + 1000), false, 'an expired session is not renewed');

      const ended = await s.sessions.open('nattrav://end', randomBytes(32), 'fp', s.now() + 1000, { address: '203.0.113.7', port: 1 });
      assert.ok(ended);
      assert.equal(await s.sessions.end(ended), true);
      assert.equal(await s.sessions.find('nattrav://end', ended.id), undefined);
      assert.equal(await s.sessions.end(ended), false, 'twice');
      const dropped = await s.sessions.open('nattrav://drop', randomBytes(32), 'fp', s.now() + 1000, { address: '203.0.113.7', port: 1 });
      assert.ok(dropped);
      await s.sessions.drop('nattrav://drop');
      assert.equal(await s.sessions.byUri('nattrav://drop'), undefined);
    });
  });
}
