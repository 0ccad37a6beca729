/**
 * The recipient's BIND at its SOCKS5 proxy (peer/socks5-bind.ts) against the tiny in-test
 * proxy (test/helpers/socks5-server.ts, RFC 1928 BIND on loopback): the bound address, the
 * connection handed to the attempt its first message (the Hello) names, with the Hello put back
 * unread and who connected (from the proxy's second reply); connections that send no Hello, or
 * name another attempt, never use up a claim; renewal after each use, a refused BIND (logged
 * once, retried late), a BIND the proxy drops (renewed after a backoff), the bound on
 * connections held, close; the strategy's claim checks the Hello's integrity; then end to end: a
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
import { socks5Bind } from '../../src/peer/strategies/socks5-bind.js';
import type { BoundClaim, StrategyContext } from '../../src/peer/strategies/types.js';
import type { ExchangeResult } from '../../src/peer/exchange.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId } from '../../src/wire/nattrav.js';
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

/** A new attempt: its ID and secret, as the broker gives both peers. */
function attempt(): { id: Buffer; secret: Buffer } {
  return { id: randomBytes(16), secret: randomBytes(32) };
}

/** The initiator's Hello for `of`, as helloAsInitiator sends it (integrity under the attempt secret). */
function helloBytes(of: { id: Buffer; secret: Buffer }): Buffer {
  const hello = StunMessage.request(Method.Hello);
  addAttemptId(hello, of.id);
  return Buffer.from(encodeMessage(hello, { integritySha256Key: of.secret, fingerprint: true }));
}

/** Dials `endpoint` and sends `first` (a Hello, or anything else) at once. */
async function dialSending(endpoint: TransportAddress, first: Buffer): Promise<Socket> {
  const socket = await dial(endpoint);
  socket.write(first);
  return socket;
}

/** One end of a TCP connection on loopback (both ends closed after the tests). */
async function connectedSocket(): Promise<Socket> {
  const server = netServer((peer) => closers.push(() => peer.destroy()));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return dial({ family: 'IPv4', address: '127.0.0.1', port: (server.address() as { port: number }).port });
}

/** Resolves once `socket` is closed (at once if it is already). */
async function closed(socket: Socket): Promise<void> {
  if (!socket.destroyed) await once(socket, 'close');
}

/** Reads `bytes` bytes from `socket` (every chunk, also several in one tick). */
async function readAll(socket: Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      if (length < bytes) return;
      socket.off('data', onData).off('error', reject);
      socket.pause();
      resolve();
    };
    socket.on('data', onData).once('error', reject);
  });
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
    const claimed: Array<{ socket: Socket; from: HostPort; hello: StunMessage }> = [];
    const ours = attempt();
    const release = agent.claim(ours.id, (socket, from, hello) => {
      claimed.push({ socket, from, hello });
      return true;
    });
    const hello = helloBytes(ours);
    // The initiator speaks first: its Hello and what follows may arrive with the proxy's second reply.
    const initiator = await dialSending(first, Buffer.concat([hello, Buffer.from('hello from the initiator')]));
    await until(() => claimed.length === 1, WAIT_MS, 'the claim');
    release();
    const { socket, from } = claimed[0] as { socket: Socket; from: HostPort; hello: StunMessage };
    assert.deepEqual(from, { host: '127.0.0.1', port: initiator.localPort }, 'the second reply names the initiator');
    assert.deepEqual(Buffer.from(claimed[0]?.hello.raw ?? []), hello, 'the Hello read');
    assert.deepEqual(await readAll(socket, hello.length + 24), Buffer.concat([hello, Buffer.from('hello from the initiator')]), 'the Hello put back unread, then the bytes after it');
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

  test('two attempts from one address (CGNAT, or an attacker listing our address): each connection goes to the attempt its Hello names, not to the older claim', async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy);
    const older = attempt();
    const younger = attempt();
    const taken: Array<{ by: string; hello: StunMessage }> = [];
    const releases = [older, younger].map((a, i) => agent.claim(a.id, (_socket, _from, hello) => taken.push({ by: i === 0 ? 'older' : 'younger', hello }) > 0));
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the first BIND');
    await dialSending(agent.endpoint as TransportAddress, helloBytes(younger));
    await until(() => taken.length === 1, WAIT_MS, 'the younger claim');
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the renewed BIND');
    await dialSending(agent.endpoint as TransportAddress, helloBytes(older));
    await until(() => taken.length === 2, WAIT_MS, 'the older claim');
    assert.deepEqual(taken.map((t) => t.by), ['younger', 'older']);
    for (const release of releases) release();
  });

  test('a connection that sends no Hello (other bytes at once, or nothing within helloWaitMs) is closed without reaching a claim; the BIND is renewed meanwhile', async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy, { helloWaitMs: 300 });
    const ours = attempt();
    const offered: Socket[] = [];
    agent.claim(ours.id, (socket) => offered.push(socket) > 0);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the first BIND');
    const garbage = await dialSending(agent.endpoint as TransportAddress, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await closed(garbage);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the BIND renewed');
    const silentAt = Date.now();
    const used = agent.endpoint as TransportAddress;
    const silent = await dial(used);
    await until(() => agent.held === 1, WAIT_MS, 'the silent connection');
    // Renewed at once, while the silent one still waits for its Hello.
    await until(() => agent.endpoint !== undefined && agent.endpoint.port !== used.port, WAIT_MS, 'the BIND renewed again');
    assert.equal(agent.held, 1);
    await closed(silent);
    assert.ok(Date.now() - silentAt >= 250, 'closed after helloWaitMs, not at once');
    assert.equal(agent.held, 0);
    assert.equal(offered.length, 0, 'the claim never saw either');
    // The claim is still there for its own initiator.
    await dialSending(agent.endpoint as TransportAddress, helloBytes(ours));
    await until(() => offered.length === 1, WAIT_MS, 'the real initiator');
  });

  test('a connection its attempt refuses is closed, and the claim stays for the next one', async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy);
    const ours = attempt();
    let calls = 0;
    agent.claim(ours.id, () => ++calls > 1);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the first BIND');
    const refused = await dialSending(agent.endpoint as TransportAddress, helloBytes(ours));
    await closed(refused);
    assert.equal(calls, 1);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the renewed BIND');
    const taken = await dialSending(agent.endpoint as TransportAddress, helloBytes(ours));
    await until(() => calls === 2, WAIT_MS, 'the second connection');
    assert.equal(taken.destroyed, false);
  });

  test(`at most ${MAX_HELD} connections wait for their attempt; one more closes the oldest and the BIND is renewed all along; a held one goes to the claim that comes later`, async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy, { holdMs: 60_000 });
    const attempts = Array.from({ length: MAX_HELD + 1 }, () => attempt());
    const initiators: Socket[] = [];
    for (const [i, a] of attempts.entries()) {
      await until(() => agent.endpoint !== undefined, WAIT_MS, `BIND ${i + 1}`);
      initiators.push(await dialSending(agent.endpoint as TransportAddress, helloBytes(a)));
      await until(() => proxy.bindRequests === i + 2, WAIT_MS, `BIND ${i + 2} asked for`);
    }
    await closed(initiators[0] as Socket);
    await until(() => agent.held === MAX_HELD, WAIT_MS, `${MAX_HELD} held`);
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'a BIND ahead although the bound is reached');
    const taken: Socket[] = [];
    const release = agent.claim(attempts[2]?.id as Buffer, (socket) => taken.push(socket) > 0);
    release();
    assert.equal(taken.length, 1, 'the held connection of that attempt went to its claim');
    assert.equal(agent.held, MAX_HELD - 1);
    agent.close();
    agent.close();
    assert.equal(agent.state, 'closed');
    assert.equal(agent.held, 0);
    await Promise.all(initiators.filter((_, i) => i !== 2).map(closed));
    await until(() => proxy.boundPorts.length === 0, WAIT_MS, 'the proxy to see the BIND closed');
  });

  test('a Hello naming no attempt waiting is closed after holdMs', async () => {
    const proxy = await proxyWith();
    const { agent } = agentFor(proxy, { holdMs: 100 });
    await until(() => agent.endpoint !== undefined, WAIT_MS, 'the BIND');
    const initiator = await dialSending(agent.endpoint as TransportAddress, helloBytes(attempt()));
    await closed(initiator);
    assert.equal(agent.held, 0);
  });
});

describe('the socks5-bind strategy of the recipient', () => {
  test('its claim takes only a Hello that proves the attempt secret; the Hello check then runs on the socket', async () => {
    const ours = attempt();
    let claim: BoundClaim | undefined;
    let claimedId: Uint8Array | undefined;
    const verified: Socket[] = [];
    const controller = new AbortController();
    const ctx: StrategyContext = {
      role: 'recipient',
      exchange: { attemptId: ours.id, attemptSecret: ours.secret } as unknown as ExchangeResult,
      broker: { host: '127.0.0.1', port: 1 },
      signal: controller.signal,
      boundInbound: {
        claim: (id, c) => {
          claimedId = id;
          claim = c;
          return () => undefined;
        },
      },
      verify: async (socket) => {
        verified.push(socket);
      },
    };
    const result = socks5Bind(ctx);
    assert.deepEqual(Buffer.from(claimedId ?? []), ours.id, 'claimed by its attempt ID');
    const forged = await connectedSocket();
    const real = await connectedSocket();
    const forgedHello = decodeMessage(helloBytes({ id: ours.id, secret: randomBytes(32) }));
    const from = { host: '127.0.0.1', port: 1 };
    assert.equal(claim?.(forged, from, forgedHello), false, 'the right attempt ID without the secret');
    const realHello = decodeMessage(helloBytes(ours));
    assert.equal(claim?.(real, from, realHello), true);
    assert.equal(await result, real);
    assert.deepEqual(verified, [real]);
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
