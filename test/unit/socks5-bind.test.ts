/**
 * The recipient's BIND at its SOCKS5 proxy (peer/socks5-bind.ts) against the tiny in-test
 * proxy (test/helpers/socks5-server.ts, RFC 1928 BIND on loopback): the bound address, the
 * connection handed to the attempt that claims it (with who connected, from the proxy's second
 * reply), renewal after each use, a refused BIND (logged once, retried late), a BIND the proxy
 * drops (renewed after a backoff), the bound on connections held, close; then end to end: a
 * recipient behind the proxy reached over path socks5-bind (with TLS too), a server closed
 * while its first BIND is made, and today's paths when the proxy refuses.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, createServer as netServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ErrorCode, isNattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { createServer } from '../../src/peer/server.js';
import { newSelfCertifyingIdentity } from '../../src/security/identity.js';
import { MAX_HELD, Socks5BindAgent, type Socks5BindEvent, type Socks5BindOptions } from '../../src/peer/socks5-bind.js';
import type { HostPort } from '../../src/common/endpoint.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';
import { startTestSocks5, type TestSocks5, type TestSocks5Options } from '../helpers/socks5-server.js';

/** Fast retries for tests: 50 ms doubling to 200 ms, no jitter. */
const FAST: Omit<Socks5BindOptions, 'proxy'> = { backoff: { initialMs: 50, maxMs: 200, jitter: 0 }, refusedRetryMs: 300 };
const WAIT_MS = 5_000;

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

async function proxyWith(options: TestSocks5Options = {}, credentials?: { username: string; password: string }): Promise<TestSocks5> {
  const proxy = await startTestSocks5(credentials, options);
  closers.push(() => proxy.close());
  return proxy;
}

function agentFor(proxy: { port: number }, extra: Partial<Socks5BindOptions> = {}): { agent: Socks5BindAgent; events: Socks5BindEvent[]; changes: Array<TransportAddress | undefined> } {
  const agent = new Socks5BindAgent({ proxy: { host: '127.0.0.1', port: proxy.port }, ...FAST, ...extra });
  const events: Socks5BindEvent[] = [];
  const changes: Array<TransportAddress | undefined> = [];
  agent.on('event', (event: Socks5BindEvent) => events.push(event));
  agent.on('change', (endpoint: TransportAddress | undefined) => changes.push(endpoint));
  closers.push(() => agent.close());
  agent.start();
  return { agent, events, changes };
}

/** A plain TCP connect to `endpoint`, as an initiator makes it; resolves once connected. */
async function dial(endpoint: TransportAddress): Promise<Socket> {
  const socket = netConnect({ host: endpoint.address, port: endpoint.port });
  closers.push(() => socket.destroy());
  await once(socket, 'connect');
  return socket;
}

async function readAll(socket: Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  while (length < bytes) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    chunks.push(chunk);
    length += chunk.length;
  }
  return Buffer.concat(chunks);
}

describe('the BIND agent against a test proxy', () => {
  test('bound: the proxy\'s address is the endpoint; a connection is handed to the claim with who connected, bytes both ways; a new BIND opens at once', async () => {
    const proxy = await proxyWith();
    const { agent, events, changes } = agentFor(proxy);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the first BIND');
    const first = agent.endpoint as TransportAddress;
    assert.deepEqual(first, { family: 'IPv4', address: '127.0.0.1', port: proxy.boundPorts[0] });
    assert.equal(agent.state, 'bound');
    assert.deepEqual(events[0], { type: 'bound', endpoint: first });
    const claimed: Array<{ socket: Socket; from: HostPort }> = [];
    const release = agent.claim((socket, from) => {
      claimed.push({ socket, from });
      return true;
    });
    const initiator = await dial(first);
    // The initiator speaks first: its bytes may arrive with the proxy's second reply.
    initiator.write('hello from the initiator');
    await until(() => claimed.length === 1, WAIT_MS, 'the claim');
    release();
    const { socket, from } = claimed[0] as { socket: Socket; from: HostPort };
    assert.deepEqual(from, { host: '127.0.0.1', port: initiator.localPort }, 'the second reply names the initiator');
    assert.equal((await readAll(socket, 24)).toString(), 'hello from the initiator');
    socket.write('and back');
    assert.equal((await readAll(initiator, 8)).toString(), 'and back');
    // Renewed right after the use: a new bound port, registered ('change').
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the renewed BIND');
    assert.notEqual(agent.endpoint?.port, first.port);
    assert.equal(proxy.bindRequests, 2);
    assert.deepEqual(changes, [first, undefined, agent.endpoint]);
    assert.ok(events.some((e) => e.type === 'accepted'));
  });

  test('a proxy that answers 0.0.0.0 ("my own address"): the endpoint is unspecified, for the broker to fill in', async () => {
    const proxy = await proxyWith({ boundAddress: '0.0.0.0' });
    const { agent } = agentFor(proxy);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the first BIND');
    assert.deepEqual(agent.endpoint, { family: 'IPv4', address: '0.0.0.0', port: proxy.boundPorts[0] });
  });

  test('a refused BIND (command not supported): no endpoint, one "refused" event however often it is asked again, retried late', async () => {
    const proxy = await proxyWith({ bind: 7 });
    const { agent, events } = agentFor(proxy);
    await until(() => events.length > 0, WAIT_MS, 'the refusal');
    const refused = events[0] as Extract<Socks5BindEvent, { type: 'refused' }>;
    assert.equal(refused.type, 'refused');
    assert.ok(isNattravError(refused.error, ErrorCode.Proxy));
    assert.match(refused.error.message, /SOCKS5 proxy 127\.0\.0\.1:\d+ refused BIND \(it answered CommandNotSupported\)/);
    assert.equal(refused.retryMs, 300);
    assert.equal(agent.endpoint, undefined);
    assert.equal(agent.state, 'waiting');
    await until(() => proxy.bindRequests >= 3, WAIT_MS, 'two more tries');
    // Bounded: one try per refusedRetryMs (300 ms), never a loop.
    const started = Date.now();
    const before = proxy.bindRequests;
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.ok(proxy.bindRequests - before <= Math.ceil((Date.now() - started) / 300) + 1, `${proxy.bindRequests - before} tries in ${Date.now() - started} ms`);
    assert.equal(events.filter((e) => e.type === 'refused').length, 1, 'logged once');
  });

  test('wrong credentials count as a refusal naming the user, never the password', async () => {
    const proxy = await proxyWith({}, { username: 'alice', password: 'hunter2' });
    const { events } = agentFor(proxy, { proxy: { host: '127.0.0.1', port: proxy.port, username: 'alice', password: 'not-hunter2' } });
    await until(() => events.length > 0, WAIT_MS, 'the refusal');
    const event = events[0] as Extract<Socks5BindEvent, { type: 'refused' }>;
    assert.equal(event.type, 'refused');
    assert.match(event.error.message, /alice@127\.0\.0\.1:\d+ refused our username\/password/);
    assert.doesNotMatch(event.error.message, /not-hunter2/);
  });

  test('the proxy drops the bound BIND: the endpoint is withdrawn, a "lost" event, a new BIND after the backoff', async () => {
    const proxy = await proxyWith();
    const { agent, events, changes } = agentFor(proxy);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the first BIND');
    const first = agent.endpoint;
    proxy.dropBinds();
    await until(() => events.some((e) => e.type === 'lost'), WAIT_MS, 'the loss');
    const lost = events.find((e) => e.type === 'lost') as Extract<Socks5BindEvent, { type: 'lost' }>;
    assert.equal(lost.retryMs, 50, 'the first retry after the initial backoff');
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the new BIND');
    assert.notEqual(agent.endpoint?.port, first?.port);
    assert.deepEqual(changes.slice(0, 2), [first, undefined]);
  });

  test('an unreachable proxy: "lost" with ERR_PROXY, retries spaced by a growing backoff', async () => {
    const closed = netServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const { events } = agentFor({ port });
    await until(() => events.length >= 3, WAIT_MS, 'three failures');
    const delays = events.map((e) => (e.type === 'lost' ? e.retryMs : -1));
    assert.deepEqual(delays.slice(0, 3), [50, 100, 200]);
    assert.ok(events.every((e) => e.type === 'lost' && isNattravError(e.error, ErrorCode.Proxy)));
  });

  test(`at most ${MAX_HELD} unclaimed connections wait: no BIND opens until one is claimed; held ones go to the next claim, the rest are closed after holdMs`, async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy, { holdMs: 60_000 });
    const initiators: Socket[] = [];
    for (let i = 0; i < MAX_HELD; i++) {
      await until(() => agent.endpoint !== undefined, WAIT_MS, `BIND ${i + 1}`);
      initiators.push(await dial(agent.endpoint as TransportAddress));
      await until(() => agent.held === i + 1, WAIT_MS, `connection ${i + 1} held`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(agent.endpoint, undefined, 'no BIND ahead while the connections held are at the bound');
    assert.equal(proxy.bindRequests, MAX_HELD);
    const taken: HostPort[] = [];
    const release = agent.claim((_socket, from) => {
      if (from.port !== initiators[0]?.localPort) return false;
      taken.push(from);
      return true;
    });
    release();
    assert.equal(taken.length, 1, 'the held connection from that initiator went to the claim');
    assert.equal(agent.held, MAX_HELD - 1);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'a BIND again');
    agent.close();
    agent.close();
    assert.equal(agent.state, 'closed');
    assert.equal(agent.held, 0);
    await Promise.all(initiators.slice(1).map((s) => (s.destroyed ? undefined : once(s, 'close'))));
    await until(() => proxy.boundPorts.length === 0, WAIT_MS, 'the proxy to see the BIND closed');
  });

  test('an unclaimed connection is closed after holdMs', async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy, { holdMs: 100 });
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the BIND');
    const initiator = await dial(agent.endpoint as TransportAddress);
    await once(initiator, 'close');
    assert.equal(agent.held, 0);
  });
});

describe('path socks5-bind on loopback', () => {
  test('a recipient behind the proxy is reached through its BIND (path socks5-bind); data intact both ways; the BIND is renewed and registered again', async () => {
    const proxy = await proxyWith();
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const socks5 = `127.0.0.1:${proxy.port}`;
    const { server, accepted } = await startRecipient(address, 'nattrav://bound', { socks5, tls: false });
    closers.push(() => server.close());
    assert.equal(proxy.bindRequests, 1, 'the BIND was open before the first registration');
    for (let round = 0; round < 2; round++) {
      const socket = await connect({ broker: address, uri: 'nattrav://bound', tls: false });
      closers.push(() => socket.destroy());
      assert.equal(socket.nattrav.path, 'socks5-bind', `round ${round}: trace ${JSON.stringify(socket.nattrav.trace)}`);
      await until(() => accepted.length === round + 1, WAIT_MS, 'the recipient to accept');
      const inbound = accepted[round]!;
      assert.equal(inbound.nattrav.path, 'socks5-bind');
      const payload = randomBytes(128 * 1024);
      const received: Buffer[] = [];
      inbound.on('data', (chunk: Buffer) => received.push(chunk));
      socket.end(payload);
      await once(inbound, 'end');
      assert.equal(createHash('sha256').update(Buffer.concat(received)).digest('hex'), createHash('sha256').update(payload).digest('hex'));
      const back = randomBytes(64 * 1024);
      const echoed: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => echoed.push(chunk));
      inbound.end(back);
      await once(socket, 'end');
      assert.equal(createHash('sha256').update(Buffer.concat(echoed)).digest('hex'), createHash('sha256').update(back).digest('hex'));
      // The next round needs the renewed BIND registered.
      await until(() => proxy.boundPorts.length === 1, WAIT_MS, 'the renewed BIND');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(proxy.bindRequests, 3);
  });

  test('with TLS (the default): the connection through the BIND is authenticated like any other', async () => {
    const proxy = await proxyWith();
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const keyDir = await mkdtemp(join(tmpdir(), 'nattrav-bind-keys-'));
    closers.push(() => rm(keyDir, { recursive: true, force: true }));
    const identity = await newSelfCertifyingIdentity({ dir: keyDir });
    const { server, accepted } = await startRecipient(address, identity.uri, { identity, socks5: `127.0.0.1:${proxy.port}` });
    closers.push(() => server.close());
    const socket = await connect({ broker: address, uri: identity.uri });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.path, 'socks5-bind');
    assert.equal(socket.nattrav.tls, true);
    await until(() => accepted.length === 1, WAIT_MS, 'the recipient to accept');
    socket.write('secret');
    assert.equal((await readAll(accepted[0]!, 6)).toString(), 'secret');
  });

  test('a server closed while its first BIND is being made leaves no BIND open at the proxy; close() after listening closes it too', async () => {
    // The proxy answers BIND only after a while, so close() comes while the server waits for it.
    const proxy = await proxyWith({ bindDelayMs: 300 });
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const early = createServer({ broker: address, uri: 'nattrav://early', socks5: `127.0.0.1:${proxy.port}`, tls: false });
    early.listen();
    await until(() => proxy.bindRequests === 1, WAIT_MS, 'the BIND request');
    await new Promise<void>((resolve) => early.close(() => resolve()));
    // The proxy's answer comes after close(): then the BIND must be closed at once.
    await new Promise((resolve) => setTimeout(resolve, 600));
    await until(() => proxy.boundPorts.length === 0, WAIT_MS, 'the BIND to be closed');
    const { server } = await startRecipient(address, 'nattrav://late', { socks5: `127.0.0.1:${proxy.port}`, tls: false });
    assert.equal(proxy.boundPorts.length, 1);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await until(() => proxy.boundPorts.length === 0, WAIT_MS, 'the BIND to be closed on close');
  });

  test('a proxy that refuses BIND: the recipient is still reached over today\'s paths, and says so once', async () => {
    const proxy = await proxyWith({ bind: 2 });
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const bindEvents: Socks5BindEvent[] = [];
    const accepted: Socket[] = [];
    const server = createServer({ broker: address, uri: 'nattrav://refused', socks5: `127.0.0.1:${proxy.port}`, tls: false }, (socket) => accepted.push(socket));
    server.on('socks5Bind', (event: Socks5BindEvent) => bindEvents.push(event));
    closers.push(() => server.close());
    server.listen();
    await once(server, 'listening');
    const socket = await connect({ broker: address, uri: 'nattrav://refused', tls: false });
    closers.push(() => socket.destroy());
    assert.notEqual(socket.nattrav.path, 'socks5-bind');
    await until(() => accepted.length === 1, WAIT_MS, 'the recipient to accept');
    assert.deepEqual(bindEvents.map((e) => e.type), ['refused'], 'the refusal, once');
    assert.equal(proxy.bindRequests, 1);
  });
});
