import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as netServer } from 'node:net';
import { after, describe, test } from 'node:test';
import { ErrorCode, isNattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { bypassesProxy, parseSocks5Proxy, socks5Dialer, socks5FromEnvironment } from '../../src/peer/socks5.js';
import { maskUrlPassword } from '../../src/common/url.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';
import { startTestSocks5 } from '../helpers/socks5-server.js';

describe('SOCKS5 proxy addresses', () => {
  test('parses HOST:PORT, USER:PASS@HOST:PORT and socks5:// / socks5h:// URLs', () => {
    assert.deepEqual(parseSocks5Proxy('proxy.example:1080', '--socks5'), { host: 'proxy.example', port: 1080, remoteDns: false });
    assert.deepEqual(parseSocks5Proxy('alice:s3:cr@t@10.0.0.1:1080', '--socks5'), { host: '10.0.0.1', port: 1080, username: 'alice', password: 's3:cr@t', remoteDns: false });
    assert.deepEqual(parseSocks5Proxy('socks5h://bob:p%40ss@[::1]:9050/', 'ALL_PROXY'), { host: '::1', port: 9050, username: 'bob', password: 'p@ss', remoteDns: true });
  });

  test('bad input names what was wrong and never shows the password', () => {
    const cases: Array<[string, RegExp]> = [
      ['proxy.example', /--socks5: no HOST:PORT/],
      ['proxy.example:0', /--socks5: no HOST:PORT \(port 1-65535\)/],
      ['http://proxy:8080', /unsupported scheme http:\/\//],
      ['alice@proxy:1080', /credentials must be USER:PASS/],
      ['alice:hunter2@proxy', /no HOST:PORT \(port 1-65535\) in "alice:\*\*\*@proxy"/],
    ];
    for (const [text, expected] of cases) {
      assert.throws(() => parseSocks5Proxy(text, '--socks5'), (err: unknown) => {
        assert.ok(isNattravError(err, ErrorCode.InvalidArgument));
        assert.match(err.message, expected);
        assert.doesNotMatch(err.message, /hunter2/);
        return true;
      });
    }
  });

  test('maskUrlPassword masks USER:PASS@ with and without a scheme', () => {
    assert.equal(maskUrlPassword('alice:hunter2@proxy:1080'), 'alice:***@proxy:1080');
    assert.equal(maskUrlPassword('socks5://alice:hunter2@proxy:1080'), 'socks5://alice:***@proxy:1080');
    assert.equal(maskUrlPassword('proxy:1080'), 'proxy:1080');
  });

  test('the environment: SOCKS_PROXY before ALL_PROXY, only socks5 schemes, NO_PROXY kept', () => {
    assert.equal(socks5FromEnvironment({}), undefined);
    assert.equal(socks5FromEnvironment({ ALL_PROXY: 'http://web-proxy:3128' }), undefined, 'an HTTP proxy is not ours');
    assert.equal(socks5FromEnvironment({ ALL_PROXY: 'proxy:1080' }), undefined, 'ALL_PROXY needs a scheme to be SOCKS');
    assert.deepEqual(socks5FromEnvironment({ all_proxy: 'socks5h://p:1080', NO_PROXY: 'localhost, .internal' }), { host: 'p', port: 1080, remoteDns: true, noProxy: ['localhost', ' .internal'] });
    assert.equal(socks5FromEnvironment({ SOCKS_PROXY: 's:1', ALL_PROXY: 'socks5://a:2' })?.host, 's');
    assert.throws(() => socks5FromEnvironment({ ALL_PROXY: 'socks5://nope' }), /ALL_PROXY: no HOST:PORT/);
  });

  test('NO_PROXY: names, domain suffixes, *', () => {
    assert.ok(bypassesProxy('broker.internal', ['.internal']));
    assert.ok(bypassesProxy('a.b.internal', ['internal']));
    assert.ok(!bypassesProxy('notinternal', ['.internal']));
    assert.ok(bypassesProxy('10.0.0.1', ['10.0.0.1']));
    assert.ok(bypassesProxy('anything', ['*']));
    assert.ok(!bypassesProxy('broker', []));
  });
});

describe('the SOCKS5 dialer on loopback', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('a recipient and an initiator both behind the proxy: registered over TCP, connected (the initiator CONNECTs to the recipient\'s BIND), data intact', async () => {
    const proxy = await startTestSocks5({ username: 'alice', password: 'hunter2' });
    closers.push(() => proxy.close());
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const socks5 = `alice:hunter2@127.0.0.1:${proxy.port}`;
    const { server, accepted } = await startRecipient(address, 'nattrav://proxied', { socks5, tls: false });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: 'nattrav://proxied', socks5, tls: false });
    closers.push(() => socket.destroy());
    await until(() => accepted.length === 1, 5000, 'the recipient to accept');
    assert.ok(proxy.targets.every((t) => t === address || t.startsWith('127.0.0.1:')), 'everything went through the proxy');
    assert.ok(proxy.targets.filter((t) => t === address).length >= 3, `control connection and both exchanges went through the proxy: ${proxy.targets.join(', ')}`);
    assert.equal(socket.nattrav.path, 'socks5-bind', `trace ${JSON.stringify(socket.nattrav.trace)}`);
    const payload = randomBytes(256 * 1024);
    const received: Buffer[] = [];
    accepted[0]!.on('data', (chunk: Buffer) => received.push(chunk));
    socket.end(payload);
    await once(accepted[0]!, 'end');
    assert.equal(createHash('sha256').update(Buffer.concat(received)).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  });

  test('wrong credentials: ERR_PROXY naming the proxy and user, never the password', async () => {
    const proxy = await startTestSocks5({ username: 'alice', password: 'hunter2' });
    closers.push(() => proxy.close());
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    await assert.rejects(connect({ broker: address, uri: 'nattrav://x', socks5: `alice:wrong-secret@127.0.0.1:${proxy.port}`, tls: false }), (err: unknown) => {
      assert.ok(isNattravError(err, ErrorCode.Proxy), String(err));
      assert.match(err.message, new RegExp(`SOCKS5 proxy alice@127\\.0\\.0\\.1:${proxy.port} refused our username/password`));
      assert.doesNotMatch(err.message, /wrong-secret/);
      return true;
    });
    await assert.rejects(connect({ broker: address, uri: 'nattrav://x', socks5: `127.0.0.1:${proxy.port}`, tls: false }), /accepts none of the methods we offer \(no authentication \(it wants a username and password/);
  });

  test('an unreachable proxy: ERR_PROXY; a target the proxy cannot reach: ERR_BROKER_UNREACHABLE', async () => {
    const closed = netServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const dialer = socks5Dialer({ host: '127.0.0.1', port });
    await assert.rejects(dialer.dial({ host: '127.0.0.1', port: 1 }, new AbortController().signal), (err: unknown) => isNattravError(err, ErrorCode.Proxy) && /SOCKS5 proxy unreachable: 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/.test(err.message));
    const proxy = await startTestSocks5();
    closers.push(() => proxy.close());
    await assert.rejects(socks5Dialer({ host: '127.0.0.1', port: proxy.port }).dial({ host: '127.0.0.1', port }, new AbortController().signal), (err: unknown) => isNattravError(err, ErrorCode.BrokerUnreachable) && /the proxy answered ConnectionRefused/.test(err.message));
  });

  test('bytes the target sends at once are kept for whoever reads the socket later ("readable" or "data")', async () => {
    const proxy = await startTestSocks5();
    closers.push(() => proxy.close());
    const target = netServer((socket) => socket.end('first-bytes'));
    target.listen(0, '127.0.0.1');
    await once(target, 'listening');
    closers.push(() => new Promise<void>((resolve) => target.close(() => resolve())));
    const port = (target.address() as { port: number }).port;
    const dialer = socks5Dialer({ host: '127.0.0.1', port: proxy.port });
    for (const how of ['data', 'readable'] as const) {
      const socket = await dialer.dial({ host: '127.0.0.1', port }, new AbortController().signal);
      closers.push(() => socket.destroy());
      // Nobody reads for a while: the bytes (and the FIN) arrive meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 100));
      const chunks: Buffer[] = [];
      if (how === 'data') socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      else socket.on('readable', () => {
        let chunk: Buffer | null;
        while ((chunk = socket.read() as Buffer | null) !== null) chunks.push(chunk);
      });
      await once(socket, 'end');
      assert.equal(Buffer.concat(chunks).toString(), 'first-bytes', `read with '${how}'`);
    }
  });

  test('registerTransport udp with a proxy is refused; socks5 with dialer is refused', async () => {
    const { createServer } = await import('../../src/peer/server.js');
    assert.throws(() => createServer({ broker: '127.0.0.1:1', uri: 'nattrav://x', socks5: '127.0.0.1:1080', registerTransport: 'udp' }), /registerTransport 'udp' cannot work through socks5/);
    await assert.rejects(connect({ broker: '127.0.0.1:1', uri: 'nattrav://x', socks5: '127.0.0.1:1080', dialer: socks5Dialer({ host: '127.0.0.1', port: 1080 }) }), /socks5 and dialer: give one of them/);
  });
});
