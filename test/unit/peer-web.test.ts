/**
 * The peer's web transport (peer/web/): a recipient registers over a WebSocket
 * (ws and wss) and an initiator over another reaches it, the bytes intact (SHA-256)
 * both ways with a half-close; the fallback dialer tries TCP, then wss, then ws and
 * reports the step that worked; an HTTP CONNECT proxy carries the WebSocket, its
 * credentials masked in every message; bad URLs are named.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closedPort } from './stun-responders.js';
import { once } from 'node:events';
import { createServer as netServer, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { ErrorCode } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { maskUrl, proxyFor } from '../../src/peer/web/http-proxy.js';
import { probeWeb } from '../../src/peer/web/probe.js';
import { parseBrokerUrl, WebFallbackDialer, webSocketDialer, type WebFallbackEvent } from '../../src/peer/web/dialer.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { startWatchedBroker, startRecipient, until } from '../helpers/loopback.js';
import { connectProxy } from '../helpers/websocket.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Reads `socket` to its end, leaving it open for writing (for await would destroy it at the end). */
function readAll(socket: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

/** The recipient echoes everything after reading to the end (so the initiator's half-close must pass), then ends. */
function echoAfterEnd(socket: NattravSocket): void {
  socket.on('error', () => undefined);
  void readAll(socket).then((data) => socket.end(data));
}

/** The recipient echoes as bytes come (no half-close needed). */
function echoLive(socket: NattravSocket): void {
  socket.on('error', () => undefined);
  socket.pipe(socket);
}

/** 256 KiB through `connection` to a live echo, read back before any end; both hashes equal. */
async function echoTrip(connection: NattravSocket): Promise<void> {
  const payload = randomBytes(256 * 1024);
  const chunks: Buffer[] = [];
  let length = 0;
  const back = new Promise<void>((resolve, reject) => {
    connection.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= payload.length) resolve();
    });
    connection.once('error', reject);
    connection.once('close', () => reject(new Error(`closed after ${length} bytes`)));
  });
  connection.write(payload);
  await back;
  assert.equal(sha256(Buffer.concat(chunks)), sha256(payload));
}

/** 256 KiB through `connect`, back after the half-close; both hashes equal. */
async function roundTrip(connection: NattravSocket): Promise<void> {
  const payload = randomBytes(256 * 1024);
  const back = readAll(connection);
  connection.end(payload);
  assert.equal(sha256(await back), sha256(payload));
}

describe('peer over WebSocket', () => {
  test('ws: a recipient registers over a WebSocket, an initiator over another connects; bytes intact both ways', async () => {
    const { broker, address } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const url = `ws://127.0.0.1:${broker.webSocketEndpoints()[0]?.port}/nattrav`;
    const { server } = await startRecipient(address, 'nattrav://web-ws', { dialer: webSocketDialer(url), tls: false });
    closers.push(() => server.close());
    server.on('connection', echoAfterEnd);
    assert.equal(server.address()?.transport, 'tcp', 'registered over the control connection');
    const connection = await connect({ broker: address, uri: 'nattrav://web-ws', dialer: webSocketDialer(url), tls: false, timeoutMs: 25_000 });
    closers.push(() => connection.destroy());
    await roundTrip(connection);
  });

  test('wss with a broker CA, end-to-end TLS on top, live echo; a broker certificate from another CA is refused (ERR_BROKER_AUTH)', async () => {
    const ca = await createCa({ name: 'broker CA' });
    const issued = await issueCertificate({ ca, uri: 'nattrav-broker://web' });
    const { broker, address } = await startWatchedBroker(closers, { cert: issued.certPem, key: issued.keyPem, webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const url = `wss://127.0.0.1:${broker.webSocketEndpoints()[0]?.port}/`;
    const { server } = await startRecipient(address, 'nattrav://web-wss', { dialer: webSocketDialer(url, { brokerCa: ca.certPem }), brokerCa: ca.certPem });
    closers.push(() => server.close());
    server.on('connection', echoLive);
    const connection = await connect({ broker: address, uri: 'nattrav://web-wss', dialer: webSocketDialer(url, { brokerCa: ca.certPem }), knownKeysFile: false, timeoutMs: 25_000 });
    closers.push(() => connection.destroy());
    await echoTrip(connection);
    const other = await createCa({ name: 'other CA' });
    await assert.rejects(
      connect({ broker: address, uri: 'nattrav://web-wss', dialer: webSocketDialer(url, { brokerCa: other.certPem }), knownKeysFile: false, maxAttempts: 1, timeoutMs: 10_000 }),
      (err: Error & { code?: string }) => err.code === ErrorCode.BrokerAuth,
    );
  });

  test('fallback: TCP refused, wss port closed, ws answers; the event lists each failed step in order', async () => {
    const { broker } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const wsPort = broker.webSocketEndpoints()[0]?.port as number;
    // A port nothing listens on (UDP and TCP).
    const port = await closedPort();
    const events: WebFallbackEvent[] = [];
    const dialer = new WebFallbackDialer({ fallbackPorts: { wss: port, ws: wsPort }, httpProxy: false }, (e) => events.push(e));
    assert.equal(dialer.kind, 'direct');
    const socket = await dialer.dial({ host: '127.0.0.1', port }, AbortSignal.timeout(20_000));
    closers.push(() => socket.destroy());
    assert.equal(dialer.kind, 'ws');
    assert.equal(events.length, 1);
    assert.equal(events[0]?.via, `ws://127.0.0.1:${wsPort}/`);
    assert.deepEqual(events[0]?.reasons.map((r) => r.split(':')[0]), ['tcp', 'wss']);
    // The way that worked is kept: the next dial goes straight there, no new event.
    const again = await dialer.dial({ host: '127.0.0.1', port }, AbortSignal.timeout(10_000));
    closers.push(() => again.destroy());
    assert.equal(events.length, 1);
    // Nothing anywhere: one error naming every step.
    const nowhere = new WebFallbackDialer({ fallbackPorts: { wss: port, ws: port }, httpProxy: false });
    await assert.rejects(nowhere.dial({ host: '127.0.0.1', port }, AbortSignal.timeout(20_000)), (err: Error & { code?: string }) =>
      err.code === ErrorCode.BrokerUnreachable && /over TCP and over the web: tcp: .*; wss:\/\/127\.0\.0\.1:\d+\/: .*; ws:\/\/127\.0\.0\.1:\d+\/: /.test(err.message));
  });

  test('an HTTP CONNECT proxy carries the WebSocket; wrong credentials are named, the password never shown', async () => {
    const { broker, address, events } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const wsPort = broker.webSocketEndpoints()[0]?.port as number;
    const proxy = await connectProxy(closers, 'alice:s3cret');
    const url = `ws://127.0.0.1:${wsPort}/`;
    const { server } = await startRecipient(address, 'nattrav://web-proxy', { dialer: webSocketDialer(url, { httpProxy: proxy.url('alice:s3cret') }), tls: false });
    closers.push(() => server.close());
    server.on('connection', echoAfterEnd);
    assert.ok(proxy.asked.includes(`CONNECT 127.0.0.1:${wsPort} HTTP/1.1`), JSON.stringify(proxy.asked));
    await until(() => events.some((e) => e.type === 'registered'), 5_000, 'the registration');
    const wrong = webSocketDialer(url, { httpProxy: proxy.url('alice:wrong-pass') });
    await assert.rejects(wrong.dial({ host: '127.0.0.1', port: wsPort }, AbortSignal.timeout(10_000)), (err: Error) => {
      assert.match(err.message, /HTTP proxy http:\/\/alice:\*\*\*@127\.0\.0\.1:\d+: CONNECT 127\.0\.0\.1:\d+: 407.*\(wrong credentials\)/);
      assert.ok(!err.message.includes('wrong-pass'), err.message);
      return true;
    });
  });

  test('proxy from the environment like curl: HTTPS_PROXY for wss, HTTP_PROXY for ws, NO_PROXY exempts; credentials masked', () => {
    const env = { HTTPS_PROXY: 'http://u:pw@proxy.example:3128', HTTP_PROXY: 'http://plain.example:8080', NO_PROXY: 'internal.example,.corp' };
    assert.equal(proxyFor('broker.example', true, undefined, env)?.display, 'http://u:***@proxy.example:3128');
    assert.equal(proxyFor('broker.example', false, undefined, env)?.host, 'plain.example');
    assert.equal(proxyFor('a.internal.example', true, undefined, env), undefined);
    assert.equal(proxyFor('x.corp', false, undefined, env), undefined);
    assert.equal(proxyFor('broker.example', true, false, env), undefined);
    assert.equal(proxyFor('broker.example', true, undefined, { https_proxy: '', HTTPS_PROXY: 'http://p:1' })?.port, 1);
    assert.throws(() => proxyFor('b', true, 'socks5://u:pw@h:1', {}), (err: Error) => /--http-proxy: only http:\/\/ proxies .* got socks5:\/\/u:\*\*\*@h:1/.test(err.message) && !err.message.includes('pw'));
    assert.throws(() => proxyFor('b', true, undefined, { HTTPS_PROXY: 'http://u:pw@h:1/path' }), /HTTPS_PROXY: pass http:\/\/\[USER:PASSWORD@\]HOST:PORT with no path, got http:\/\/u:\*\*\*@h:1\/path/);
    assert.equal(maskUrl('http://user@h:1'), 'http://user@h:1');
  });

  test('bad broker URLs are named', () => {
    assert.deepEqual(parseBrokerUrl('wss://broker.example/nattrav').broker, { host: 'broker.example', port: 443 });
    assert.deepEqual(parseBrokerUrl('ws://[2001:db8::1]:8080').broker, { host: '2001:db8::1', port: 8080 });
    assert.throws(() => parseBrokerUrl('wss://'), /broker URL wss:\/\/: not a URL/);
    assert.throws(() => parseBrokerUrl('https://broker.example/'), /the scheme must be wss:\/\/ or ws:\/\/, got https:/);
    assert.throws(() => parseBrokerUrl('wss://u:pw@broker.example/'), (err: Error) => /no user, password/.test(err.message) && !err.message.includes('pw@'));
  });
});

describe('relay first for peers on the web', () => {
  /** The strategies the broker scheduled, from its events. */
  const scheduled = (events: Array<{ type: string }>): Array<{ strategy: string; plan: string[] }> =>
    events.filter((e) => e.type === 'scheduled') as unknown as Array<{ strategy: string; plan: string[] }>;

  test('a recipient registered over a WebSocket: the broker records it and plans the relay at once, no punch', async () => {
    const { broker, address, events } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const url = `ws://127.0.0.1:${broker.webSocketEndpoints()[0]?.port}/`;
    const { server } = await startRecipient(address, 'nattrav://web-relay-first', { dialer: webSocketDialer(url), tls: false });
    closers.push(() => server.close());
    server.on('connection', echoLive);
    assert.equal((await broker.registry.get('nattrav://web-relay-first'))?.web, true, 'the registration says it came over the web');
    // The initiator is an ordinary peer (direct TCP): only the recipient's mark can send it to the relay.
    const connection = await connect({ broker: address, uri: 'nattrav://web-relay-first', tls: false, timeoutMs: 25_000 });
    closers.push(() => connection.destroy());
    assert.equal(connection.nattrav.path, 'relay');
    assert.deepEqual(connection.nattrav.trace.map((t) => `${t.strategy} ${t.outcome}`), ['relay succeeded'], 'no punch was tried');
    assert.deepEqual(scheduled(events).map((e) => [e.strategy, e.plan]), [['relay', ['relay']]]);
    await echoTrip(connection);
  });

  test('an initiator that fell back to the web says so in its Connect: relay at once, no punch', async () => {
    const { broker, address, events } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const wsPort = broker.webSocketEndpoints()[0]?.port as number;
    // The recipient is an ordinary peer (UDP registration, direct TCP).
    const { server } = await startRecipient(address, 'nattrav://web-initiator', { tls: false });
    closers.push(() => server.close());
    server.on('connection', echoLive);
    // TCP to the broker's "usual" port is refused (nothing listens there), so the initiator's dialer moves to ws.
    const port = await closedPort();
    const fallbacks: WebFallbackEvent[] = [];
    const dialer = new WebFallbackDialer({ fallbackPorts: { wss: port, ws: wsPort }, httpProxy: false }, (e) => fallbacks.push(e));
    const connection = await connect({ broker: `127.0.0.1:${port}`, uri: 'nattrav://web-initiator', dialer, tls: false, timeoutMs: 25_000 });
    closers.push(() => connection.destroy());
    assert.equal(fallbacks.length, 1, 'the initiator reached the broker over ws');
    assert.equal(connection.nattrav.path, 'relay');
    assert.deepEqual(connection.nattrav.trace.map((t) => `${t.strategy} ${t.outcome}`), ['relay succeeded'], 'no punch was tried');
    assert.deepEqual(scheduled(events).map((e) => e.strategy), ['relay']);
    await echoTrip(connection);
  });
});

describe('a broker never reached', () => {
  test('the time runs out during a web step: ERR_BROKER_UNREACHABLE naming each step (refused, cut off, not tried), not ERR_TIMEOUT', async () => {
    // wss: a port that accepts TCP and then says nothing, so the TLS handshake is still waiting when the time runs out.
    const held = new Set<Socket>();
    const silent = netServer((socket) => {
      held.add(socket);
      socket.on('error', () => undefined);
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    closers.push(() => {
      for (const socket of held) socket.destroy();
      return new Promise((resolve) => silent.close(resolve));
    });
    const silentPort = (silent.address() as { port: number }).port;
    const port = await closedPort();
    const dialer = new WebFallbackDialer({ fallbackPorts: { wss: silentPort, ws: port }, httpProxy: false });
    await assert.rejects(connect({ broker: `127.0.0.1:${port}`, uri: 'nattrav://nobody', dialer, tls: false, timeoutMs: 1_000 }), (err: Error & { code?: string }) => {
      assert.equal(err.code, ErrorCode.BrokerUnreachable, err.message);
      assert.match(err.message, /^broker unreachable: not reached within 1000 ms; tried: tcp: broker unreachable: .*ECONNREFUSED.*; wss:\/\/127\.0\.0\.1:\d+\/: cut off after \d+ ms \(timed out after 1000 ms while connecting to nattrav:\/\/nobody\); ws:\/\/127\.0\.0\.1:\d+\/: not tried$/);
      return true;
    });
    // The caller's own abort stays an abort.
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    await assert.rejects(connect({ broker: `127.0.0.1:${port}`, uri: 'nattrav://nobody', dialer: new WebFallbackDialer({ fallbackPorts: { wss: silentPort, ws: port }, httpProxy: false }), tls: false, signal: controller.signal }), (err: Error & { code?: string }) => err.code === ErrorCode.Aborted);
  });
});

describe('probeWeb (netcheck)', () => {
  test('wss closed, ws answers: reachable over ws with the address the broker saw; nothing open: each step named', async () => {
    const { broker } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const wsPort = broker.webSocketEndpoints()[0]?.port as number;
    const port = await closedPort();
    const found = await probeWeb({ host: '127.0.0.1', port }, { fallbackPorts: { wss: port, ws: wsPort }, httpProxy: false }, AbortSignal.timeout(15_000));
    assert.equal(found.reachable, true);
    assert.ok(found.reachable && found.via === `ws://127.0.0.1:${wsPort}/` && /^127\.0\.0\.1:\d+$/.test(found.publicEndpoint), JSON.stringify(found));
    const none = await probeWeb({ host: '127.0.0.1', port }, { fallbackPorts: { wss: port, ws: port }, httpProxy: false }, AbortSignal.timeout(15_000));
    assert.equal(none.reachable, false);
    assert.deepEqual(!none.reachable && none.reasons.map((r) => r.split(':')[0]), ['wss', 'ws']);
  });
});
