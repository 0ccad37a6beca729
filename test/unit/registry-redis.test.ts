/**
 * What only the Redis registry has: its byte layout, Redis's own TTLs, the URL it is
 * given, passwords, and a server that goes away and comes back. Real redis-servers on
 * loopback (registry-compliance.test.ts checks the behaviour it shares with memory).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { decodeRegistration, encodeRegistration, redisKey } from '../../src/broker/registry/redis-codec.js';
import { parseRedisUrl } from '../../src/broker/registry/redis-connection.js';
import { maskUrlPassword } from '../../src/common/url.js';
import { connectRedis } from '../../src/broker/registry/redis.js';
import type { Registration } from '../../src/broker/registry/registry.js';
import type { NattravError } from '../../src/errors.js';
import { haveRedis, startRedis } from '../helpers/redis-server.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

const SAMPLE: Registration = {
  uri: 'nattrav://x',
  publicEndpoint: { family: 'IPv4', address: '1.2.3.4', port: 0x1234 },
  privateEndpoints: [{ family: 'IPv6', address: '::1', port: 80 }],
  expiresAt: 0x0102030405,
  transport: 'tcp',
  keyFingerprint: 'ab',
};

function registrationUntil(expiresAt: number, uri = 'nattrav://ttl'): Registration {
  return { uri, publicEndpoint: { family: 'IPv4', address: '203.0.113.70', port: 40_000 }, privateEndpoints: [{ family: 'IPv4', address: '192.168.1.70', port: 40_000 }], expiresAt, keyFingerprint: 'x'.repeat(52) };
}

describe('the Redis registration layout', () => {
  test('bytes: version, transport, expiresAt (48 bits), fingerprint, endpoints as family/port/text', () => {
    const hex = encodeRegistration(SAMPLE).toString('hex');
    assert.equal(
      hex,
      '01' + '02' + '000102030405' + '02' + '6162' + '04123407' + Buffer.from('1.2.3.4').toString('hex') + '01' + '06005003' + Buffer.from('::1').toString('hex'),
    );
    assert.deepEqual(decodeRegistration('nattrav://x', Buffer.from(hex, 'hex')), SAMPLE);
  });

  test('bytes: the broker that took it (bus ID) follows the endpoints as length + ASCII, bounded', () => {
    const withBroker: Registration = { ...SAMPLE, broker: 'b-12' };
    const plain = encodeRegistration(SAMPLE).toString('hex');
    assert.equal(encodeRegistration(withBroker).toString('hex'), plain + '04' + Buffer.from('b-12').toString('hex'));
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration(withBroker)), withBroker);
    assert.equal(decodeRegistration('nattrav://x', encodeRegistration(SAMPLE)).broker, undefined, 'absent stays absent');
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration({ ...SAMPLE, broker: 'x'.repeat(64) })).broker, 'x'.repeat(64));
    for (const bad of ['', 'x'.repeat(65), 'has space', 'ünï']) {
      assert.throws(() => encodeRegistration({ ...SAMPLE, broker: bad }), (err: NattravError) => err.code === 'ERR_INVALID_ARGUMENT' && /broker/.test(err.message), JSON.stringify(bad));
    }
    const good = encodeRegistration(withBroker);
    for (const [what, bytes] of [
      ['broker ID cut short', good.subarray(0, good.length - 1)],
      ['length byte 0', Buffer.concat([encodeRegistration(SAMPLE), Buffer.of(0)])],
      ['bytes after the broker ID', Buffer.concat([good, Buffer.of(1)])],
    ] as const) {
      assert.throws(() => decodeRegistration('nattrav://x', bytes), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE', what);
    }
  });

  test('bytes: a mapped endpoint makes version 2, one endpoint after the private ones; version 1 values still read', () => {
    const mapped: Registration = { ...SAMPLE, broker: 'b-12', mappedEndpoint: { family: 'IPv4', address: '5.6.7.8', port: 40000 } };
    const v1 = encodeRegistration({ ...SAMPLE, broker: 'b-12' }).toString('hex');
    const mappedHex = '049c4007' + Buffer.from('5.6.7.8').toString('hex');
    const brokerHex = '04' + Buffer.from('b-12').toString('hex');
    assert.equal(v1.slice(0, 2), '01', 'no mapped endpoint: still version 1');
    assert.equal(encodeRegistration(mapped).toString('hex'), '02' + v1.slice(2, v1.length - brokerHex.length) + mappedHex + brokerHex);
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration(mapped)), mapped);
    assert.equal(decodeRegistration('nattrav://x', Buffer.from(v1, 'hex')).mappedEndpoint, undefined);
    const v2 = encodeRegistration({ ...SAMPLE, mappedEndpoint: mapped.mappedEndpoint });
    assert.throws(() => decodeRegistration('nattrav://x', v2.subarray(0, v2.length - 2)), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE', 'mapped endpoint cut short');
    assert.throws(() => decodeRegistration('nattrav://x', Buffer.concat([Buffer.of(5), v2.subarray(1)])), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE' && /version 5/.test(err.message));
  });

  test('bytes: a second address family makes version 4: version 3\'s flags with bit 4, then its expiry, endpoints and broker ID', () => {
    const v1 = encodeRegistration({ ...SAMPLE, broker: 'b-12' }).toString('hex');
    const brokerHex = '04' + Buffer.from('b-12').toString('hex');
    const body = v1.slice(2, v1.length - brokerHex.length);
    const secondFamily = { publicEndpoint: { family: 'IPv6', address: '2001:db8::9', port: 4660 }, privateEndpoints: [{ family: 'IPv6', address: 'fd00::9', port: 4660 }], expiresAt: 0x010203040506 } as const;
    const dual: Registration = { ...SAMPLE, broker: 'b-12', secondFamily };
    const endpoint = (address: string): string => '06' + '1234' + address.length.toString(16).padStart(2, '0') + Buffer.from(address).toString('hex');
    const secondHex = '010203040506' + endpoint('2001:db8::9') + '01' + endpoint('fd00::9') + '00';
    assert.equal(encodeRegistration(dual).toString('hex'), '04' + body + '04' + secondHex + brokerHex);
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration(dual)), dual);
    const withBrokers: Registration = { ...dual, secondFamily: { ...secondFamily, broker: 'b-7' } };
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration(withBrokers)), withBrokers);
    assert.equal(decodeRegistration('nattrav://x', Buffer.from(v1, 'hex')).secondFamily, undefined, 'version 1 still reads, without one');
    const v4 = encodeRegistration(dual);
    assert.throws(() => decodeRegistration('nattrav://x', v4.subarray(0, v4.length - brokerHex.length / 2 - 3)), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE', 'second family cut short');
    // Bit 4 is not a flag of version 3.
    const v3 = Buffer.from(v4);
    v3[0] = 3;
    assert.throws(() => decodeRegistration('nattrav://x', v3), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE' && /flags/.test(err.message));
    assert.throws(() => encodeRegistration({ ...dual, secondFamily: { ...secondFamily, expiresAt: -1 } }), (err: NattravError) => err.code === 'ERR_INVALID_ARGUMENT' && /secondFamily/.test(err.message));
  });

  test('bytes: a bound endpoint (SOCKS5 BIND) makes version 3: a flags byte, then the mapped and the bound endpoint there are', () => {
    const bound = { family: 'IPv4', address: '9.8.7.6', port: 41000 } as const;
    const mapped = { family: 'IPv4', address: '5.6.7.8', port: 40000 } as const;
    const v1 = encodeRegistration({ ...SAMPLE, broker: 'b-12' }).toString('hex');
    const brokerHex = '04' + Buffer.from('b-12').toString('hex');
    const body = v1.slice(2, v1.length - brokerHex.length);
    const boundHex = '04a02807' + Buffer.from('9.8.7.6').toString('hex');
    const mappedHex = '049c4007' + Buffer.from('5.6.7.8').toString('hex');
    const onlyBound: Registration = { ...SAMPLE, broker: 'b-12', boundEndpoint: bound };
    const both: Registration = { ...onlyBound, mappedEndpoint: mapped };
    assert.equal(encodeRegistration(onlyBound).toString('hex'), '03' + body + '02' + boundHex + brokerHex);
    assert.equal(encodeRegistration(both).toString('hex'), '03' + body + '03' + mappedHex + boundHex + brokerHex);
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration(onlyBound)), onlyBound);
    assert.deepEqual(decodeRegistration('nattrav://x', encodeRegistration(both)), both);
    const v3 = encodeRegistration({ ...SAMPLE, boundEndpoint: bound });
    assert.throws(() => decodeRegistration('nattrav://x', v3.subarray(0, v3.length - 2)), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE', 'bound endpoint cut short');
    const flagsAt = v3.length - boundHex.length / 2 - 1;
    const badFlags = Buffer.from(v3);
    badFlags[flagsAt] = 0x06;
    assert.throws(() => decodeRegistration('nattrav://x', badFlags), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE' && /flags 6/.test(err.message));
  });

  test('bytes: a registration over a WebSocket sets bit 0x80 of the transport byte, nothing else changes', () => {
    const plain = encodeRegistration(SAMPLE).toString('hex');
    const web = encodeRegistration({ ...SAMPLE, web: true }).toString('hex');
    assert.equal(web, plain.slice(0, 2) + '82' + plain.slice(4));
    assert.deepEqual(decodeRegistration('nattrav://x', Buffer.from(web, 'hex')), { ...SAMPLE, web: true });
    assert.equal(decodeRegistration('nattrav://x', Buffer.from(plain, 'hex')).web, undefined);
    assert.throws(() => decodeRegistration('nattrav://x', Buffer.from(plain.slice(0, 2) + '83' + plain.slice(4), 'hex')), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE' && /transport code 131/.test(err.message));
  });

  test('bytes that are not a registration are ERR_REGISTRY_UNAVAILABLE naming the URI, never a crash', () => {
    const good = encodeRegistration(SAMPLE);
    for (const [what, bytes] of [
      ['another version', Buffer.concat([Buffer.of(9), good.subarray(1)])],
      ['truncated', good.subarray(0, good.length - 2)],
      ['trailing bytes', Buffer.concat([good, Buffer.of(0)])],
      ['empty', Buffer.alloc(0)],
    ] as const) {
      assert.throws(() => decodeRegistration('nattrav://x', bytes), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE' && err.message.includes('nattrav://x'), what);
    }
  });

  test('what the layout cannot hold is refused when stored', () => {
    assert.throws(() => encodeRegistration({ ...SAMPLE, expiresAt: 1.5 }), /expiresAt/);
    assert.throws(() => encodeRegistration({ ...SAMPLE, keyFingerprint: '' }), /keyFingerprint/);
    assert.throws(() => encodeRegistration({ ...SAMPLE, privateEndpoints: Array.from({ length: 256 }, () => SAMPLE.publicEndpoint) }), /at most 255/);
  });

  test("keys: a URI's registration and session share its hash tag, whatever the URI holds", () => {
    assert.equal(redisKey('nattrav:', 'reg', 'nattrav://a'), 'nattrav:reg:{nattrav://a}');
    assert.equal(redisKey('nattrav:', 'sess', 'nattrav://a'), 'nattrav:sess:{nattrav://a}');
  });
});

describe('Redis URLs', () => {
  test('redis:// and rediss:// with user, password and database are understood', () => {
    const parsed = parseRedisUrl('rediss://broker:s%40cret@[::1]:6380/2');
    assert.deepEqual(parsed, { host: '::1', port: 6380, tls: true, username: 'broker', password: 's@cret', database: 2, display: 'rediss://broker:***@[::1]:6380/2' });
    assert.equal(parseRedisUrl('redis://localhost').port, 6379);
  });

  test('a password with an unencoded / or @ is never printed, parsed or not', () => {
    assert.equal(maskUrlPassword('redis://:Ab/cd+ef==@redis.internal:6379'), 'redis://:***@redis.internal:6379');
    assert.equal(maskUrlPassword('redis://u:p@ss@host'), 'redis://u:***@host');
    assert.equal(maskUrlPassword('redis://host:6379/0'), 'redis://host:6379/0');
    for (const url of ['redis://:Ab/cd+ef==@redis.internal:6379', 'redis://u:12/x9@host:6379', 'redis://u:p#w@host']) {
      assert.throws(() => parseRedisUrl(url), (err: Error) => {
        assert.doesNotMatch(err.message, /Ab\/cd|12\/x9|p#w/, err.message);
        assert.match(err.message, /\*\*\*/);
        return true;
      });
    }
  });

  test('a bad URL is ERR_INVALID_ARGUMENT saying what is wrong, with the password masked', () => {
    for (const [url, why] of [
      ['http://h:1', /scheme must be redis:\/\/ or rediss:\/\//],
      ['redis://:pw@', /not a URL|no host/],
      ['redis://h:1/x', /database number/],
      ['redis://h:1/0?tls=1', /no query/],
      ['localhost:6379', /scheme|not a URL/],
      ['redis://user:hunter2@h:99999', /not a URL/],
    ] as const) {
      assert.throws(() => parseRedisUrl(url), (err: NattravError) => {
        assert.equal(err.code, 'ERR_INVALID_ARGUMENT', url);
        assert.match(err.message, why, url);
        assert.ok(!err.message.includes('hunter2') && !err.message.includes(':pw@'), `the password is masked: ${err.message}`);
        return true;
      });
    }
  });
});

describe('RedisRegistry on a real redis-server', () => {
  test('registrations and sessions expire by Redis TTL, with their registration lapse', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis();
    closers.push(() => server.stop());
    const backend = await connectRedis({ url: server.url });
    closers.push(() => backend.close());
    const lifetimeMs = 1_500;
    const expiresAt = Date.now() + lifetimeMs;
    await backend.registry.put(registrationUntil(expiresAt));
    await backend.sessions.open('nattrav://ttl', randomBytes(32), 'fp', expiresAt, { address: '203.0.113.70', port: 1 });
    const key = redisKey('nattrav:', 'reg', 'nattrav://ttl');
    const session = redisKey('nattrav:', 'sess', 'nattrav://ttl');
    for (const which of [key, session]) {
      const ttl = Number(await backend.connection.command(which, ['PTTL', which]));
      assert.ok(ttl > 0 && ttl <= lifetimeMs, `PTTL of ${which}: ${ttl}`);
    }
    const size = Number(await backend.connection.command(key, ['STRLEN', key]));
    assert.ok(size < 120, `a registration with a 52-character fingerprint and two endpoints takes ${size} bytes`);
    // Redis drops expired keys when they are touched (EXISTS touches them), so this is its TTL, not a sweep.
    // The TTL counts from when Redis got the command: a little after expiresAt on a busy machine.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now()) + 300));
    assert.equal(Number(await backend.connection.command(key, ['EXISTS', key, session])), 0, 'Redis dropped both keys');
  });

  test('a password: the right one connects, a wrong one is ERR_REGISTRY_UNAVAILABLE that does not repeat it', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis(['--requirepass', 'right-secret']);
    closers.push(() => server.stop());
    const backend = await connectRedis({ url: `redis://:right-secret@127.0.0.1:${server.port}` });
    closers.push(() => backend.close());
    assert.equal(await backend.registry.size(), 0);
    await assert.rejects(connectRedis({ url: `redis://:wrong-secret@127.0.0.1:${server.port}`, connectTimeoutMs: 2_000 }), (err: NattravError) => {
      assert.equal(err.code, 'ERR_REGISTRY_UNAVAILABLE');
      assert.match(err.message, new RegExp(`redis://:\\*\\*\\*@127.0.0.1:${server.port}`));
      assert.ok(!err.message.includes('wrong-secret'), err.message);
      return true;
    });
  });

  test('nothing listening: ERR_REGISTRY_UNAVAILABLE naming the server, at once', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis();
    const port = server.port;
    await server.stop();
    const started = Date.now();
    await assert.rejects(connectRedis({ url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 2_000 }), (err: NattravError) => {
      assert.equal(err.code, 'ERR_REGISTRY_UNAVAILABLE');
      assert.match(err.message, new RegExp(`Redis redis://127.0.0.1:${port} is unreachable`));
      return true;
    });
    assert.ok(Date.now() - started < 2_000, 'a refused connection is not retried at start');
  });

  test('a server that accepts and never answers: connecting ends at its deadline, or at once on abort', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis();
    closers.push(() => server.stop());
    server.pause();
    try {
      await assert.rejects(connectRedis({ url: server.url, connectTimeoutMs: 500 }), (err: NattravError) => {
        assert.equal(err.code, 'ERR_REGISTRY_UNAVAILABLE');
        assert.match(err.message, /is unreachable: no answer within 500 ms/);
        return true;
      });
      const controller = new AbortController();
      const reason = new Error('stopped by the test');
      setTimeout(() => controller.abort(reason), 100);
      const started = Date.now();
      await assert.rejects(connectRedis({ url: server.url, connectTimeoutMs: 20_000, signal: controller.signal }), (err: unknown) => err === reason);
      assert.ok(Date.now() - started < 5_000, 'the abort ended it, not the deadline');
    } finally {
      server.resume();
    }
  });

  test('the server goes away: commands fail at once and it is reported; it comes back: the connection too', async (t) => {
    if (!(await haveRedis(t))) return;
    const first = await startRedis();
    closers.push(() => first.stop());
    const reports: NattravError[] = [];
    const backend = await connectRedis({ url: first.url, commandTimeoutMs: 1_000, onError: (err) => reports.push(err) });
    closers.push(() => backend.close());
    await backend.registry.put(registrationUntil(Date.now() + 60_000, 'nattrav://before'));
    await first.stop();
    await assert.rejects(backend.registry.get('nattrav://before'), (err: NattravError) => err.code === 'ERR_REGISTRY_UNAVAILABLE');
    assert.ok(reports.length >= 1 && reports.every((r) => r.code === 'ERR_REGISTRY_UNAVAILABLE'), 'reported');
    const second = await startRedis(['--port', String(first.port)]);
    closers.push(() => second.stop());
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        assert.equal(await backend.registry.get('nattrav://before'), undefined, 'a new, empty server');
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  });
});
