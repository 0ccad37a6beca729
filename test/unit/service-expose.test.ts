/**
 * expose() and forward() on loopback: a local service reached through its URI by
 * several clients at once, half-close in both orders, a refused service's reason at
 * the forwarder and a reset client, resets passed through both ways, connection
 * limits (in all, per peer, idle, waiting refusals), close() and bad options. Every connection is TLS with self-certifying
 * identities (the default), except where a test says otherwise.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, describe, test } from 'node:test';
import { isNattravError } from '../../src/errors.js';
import { Exposer, expose, type ExposeOptions } from '../../src/service/expose.js';
import type { ServiceClosed, ServiceEvent } from '../../src/service/events.js';
import { Forwarder, forward, type ForwardOptions } from '../../src/service/forward.js';
import { connect } from '../../src/peer/connect.js';
import { readPreamble } from '../../src/service/preamble.js';
import { startWatchedBroker, until } from '../helpers/loopback.js';

const keyDir = mkdtempSync(join(tmpdir(), 'nattrav-expose-'));
const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const SELF_CERTIFYING = /^nattrav:\/\/k-[a-z2-7]{52}$/;

/** What a client saw: the bytes, whether a FIN came, and the error if the connection failed. */
interface ClientOutcome {
  readonly data: Buffer;
  readonly ended: boolean;
  readonly error?: NodeJS.ErrnoException;
}

/** Connects to the forwarder; `outcome` settles when the client's socket closes. */
function client(port: number): { socket: Socket; outcome: Promise<ClientOutcome> } {
  const socket = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
  const chunks: Buffer[] = [];
  let ended = false;
  let error: NodeJS.ErrnoException | undefined;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('end', () => (ended = true));
  socket.on('error', (err: NodeJS.ErrnoException) => (error = err));
  const outcome = new Promise<ClientOutcome>((resolve) => socket.once('close', () => resolve({ data: Buffer.concat(chunks), ended, ...(error === undefined ? {} : { error }) })));
  return { socket, outcome };
}

describe('expose and forward on loopback', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(keyDir, { recursive: true, force: true });
  });

  /** A TCP service on loopback running `handler` for each connection. */
  async function service(handler: (socket: Socket) => void): Promise<{ server: Server; port: number }> {
    const sockets = new Set<Socket>();
    const server = createTcpServer({ allowHalfOpen: true }, (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      handler(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    // A service that never ends its connections must not keep the test process alive.
    closers.push(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    });
    return { server, port: (server.address() as { port: number }).port };
  }

  /** A broker, an exposer of `port`, a forwarder to it on a free port, and the events of both. */
  async function chain(port: number, exposeOptions: Partial<ExposeOptions> = {}, forwardOptions: Partial<ForwardOptions> = {}) {
    const broker = await startWatchedBroker(closers);
    const exposer = await expose({ broker: broker.address, target: String(port), keyDir, ...exposeOptions });
    closers.push(() => exposer.close());
    const exposed: ServiceEvent[] = [];
    exposer.on('event', (e: ServiceEvent) => exposed.push(e));
    const forwarder = await forward({ broker: broker.address, uri: exposer.uri as string, listen: '127.0.0.1:0', knownKeysFile: false, ...forwardOptions });
    closers.push(() => forwarder.close());
    const forwarded: ServiceEvent[] = [];
    forwarder.on('event', (e: ServiceEvent) => forwarded.push(e));
    return { broker, exposer, exposed, forwarder, forwarded, port: (forwarder.address() as { port: number }).port };
  }

  /** The `closed` event of connection `id`, once it came. */
  async function closedOf(events: ServiceEvent[], id: number, what: string): Promise<ServiceClosed> {
    await until(() => events.some((e) => e.type === 'closed' && e.id === id), 15_000, `${what} #${id} closed`);
    return events.find((e) => e.type === 'closed' && e.id === id) as ServiceClosed;
  }

  test('eight clients at once, 256 KiB each way: every byte arrives, each connection logged with its counts', async () => {
    const echo = await service((socket) => socket.pipe(socket));
    const { exposer, exposed, forwarded, port } = await chain(echo.port);
    assert.match(exposer.uri as string, SELF_CERTIFYING);
    const size = 256 * 1024;
    const payloads = Array.from({ length: 8 }, () => randomBytes(size));
    const outcomes = await Promise.all(
      payloads.map((payload) => {
        const c = client(port);
        c.socket.end(payload);
        return c.outcome;
      }),
    );
    outcomes.forEach((outcome, i) => {
      assert.equal(outcome.error, undefined);
      assert.equal(outcome.ended, true);
      assert.equal(sha(outcome.data), sha(payloads[i] as Buffer), `client ${i} got its bytes back`);
    });
    for (let id = 1; id <= 8; id++) {
      for (const [events, what] of [[forwarded, 'forwarder'], [exposed, 'exposer']] as const) {
        const closed = await closedOf(events, id, what);
        assert.equal(closed.reason, 'closed', `${what} #${id}: ${closed.message ?? ''}`);
        assert.equal(closed.bytesIn, size);
        assert.equal(closed.bytesOut, size);
        assert.equal(typeof closed.durationMs, 'number');
      }
    }
    // Both ends were authenticated: the forwarder reached the URI's key, the exposer saw a self-certifying client.
    const connected = forwarded.filter((e) => e.type === 'connected');
    assert.equal(connected.length, 8);
    for (const e of connected) assert.equal(e.peer, exposer.uri);
    for (const e of exposed.filter((e) => e.type === 'accepted')) assert.match(e.from, SELF_CERTIFYING);
  });

  test('half-close, client first: the service sees the FIN and still answers after it', async () => {
    const counting = await service((socket) => {
      let received = 0;
      socket.on('data', (chunk: Buffer) => (received += chunk.length));
      socket.on('end', () => socket.end(`got ${received} bytes after your FIN`));
    });
    const { port } = await chain(counting.port);
    const c = client(port);
    c.socket.end('0123456789');
    const outcome = await c.outcome;
    assert.equal(outcome.data.toString(), 'got 10 bytes after your FIN');
    assert.equal(outcome.ended, true);
  });

  test('half-close, service first: its banner and FIN arrive, and the client\'s bytes still reach it afterwards', async () => {
    let late: (data: string) => void = () => undefined;
    const lateData = new Promise<string>((resolve) => (late = resolve));
    const banner = await service((socket) => {
      socket.end('HELLO banner first\n');
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.on('end', () => late(text));
    });
    const { port, exposed } = await chain(banner.port);
    const c = client(port);
    await new Promise<void>((resolve) => c.socket.once('end', () => resolve()));
    c.socket.end('written after the service ended');
    const outcome = await c.outcome;
    assert.equal(outcome.data.toString(), 'HELLO banner first\n');
    assert.equal(await lateData, 'written after the service ended');
    const closed = await closedOf(exposed, 1, 'exposer');
    assert.equal(closed.reason, 'closed');
    assert.deepEqual([closed.bytesIn, closed.bytesOut], [31, 19]);
  });

  test('a refused service: the forwarder logs the reason, the client is reset, the exposer logs where', async () => {
    const gone = await service(() => undefined);
    await new Promise((resolve) => gone.server.close(resolve));
    const { port, exposed, forwarded } = await chain(gone.port);
    const c = client(port);
    c.socket.write('GET / HTTP/1.0\r\n\r\n');
    const outcome = await c.outcome;
    assert.equal(outcome.error?.code, 'ECONNRESET');
    assert.equal(outcome.data.length, 0);
    const atForwarder = await closedOf(forwarded, 1, 'forwarder');
    assert.equal(atForwarder.reason, 'refused');
    assert.match(String(atForwarder.message), /the exposer did not carry the connection: the exposed service refused the connection \(ECONNREFUSED\)/);
    const atExposer = await closedOf(exposed, 1, 'exposer');
    assert.equal(atExposer.reason, 'refused');
    assert.match(String(atExposer.message), new RegExp(`the service at 127\\.0\\.0\\.1:${gone.port} refused the connection`));
  });

  test('a reset passes through both ways', async () => {
    const resetting = await service((socket) => socket.once('data', (chunk: Buffer) => (chunk.toString() === 'reset please' ? socket.resetAndDestroy() : undefined)));
    const { port, exposed, forwarded } = await chain(resetting.port);
    // The service resets: the client is reset too.
    const first = client(port);
    first.socket.write('reset please');
    assert.equal((await first.outcome).error?.code, 'ECONNRESET');
    const serviceSide = await closedOf(exposed, 1, 'exposer');
    assert.deepEqual([serviceSide.reason, serviceSide.side], ['reset', 'local']);
    const clientSide = await closedOf(forwarded, 1, 'forwarder');
    assert.deepEqual([clientSide.reason, clientSide.side], ['reset', 'peer']);
    // The client resets: the service's connection is reset too.
    let serviceError: (code: string | undefined) => void = () => undefined;
    const serviceSaw = new Promise<string | undefined>((resolve) => (serviceError = resolve));
    resetting.server.removeAllListeners('connection');
    resetting.server.on('connection', (socket: Socket) => {
      socket.on('error', (err: NodeJS.ErrnoException) => serviceError(err.code));
      socket.on('end', () => serviceError('end'));
    });
    const second = client(port);
    second.socket.write('hello');
    await until(() => forwarded.some((e) => e.type === 'connected' && e.id === 2), 15_000, 'the second client connected');
    await new Promise((resolve) => setTimeout(resolve, 100));
    second.socket.resetAndDestroy();
    assert.equal(await serviceSaw, 'ECONNRESET');
    const atForwarder = await closedOf(forwarded, 2, 'forwarder');
    assert.deepEqual([atForwarder.reason, atForwarder.side], ['reset', 'local']);
    const atExposer = await closedOf(exposed, 2, 'exposer');
    assert.deepEqual([atExposer.reason, atExposer.side], ['reset', 'peer']);
  });

  test('limits: the exposer answers "busy" beyond maxConnections, the forwarder resets beyond its own', async () => {
    const holding = await service(() => undefined);
    const tight = await chain(holding.port, { maxConnections: 1 });
    const held = client(tight.port);
    held.socket.write('x');
    await until(() => tight.forwarded.some((e) => e.type === 'connected'), 15_000, 'the first client connected');
    const refused = client(tight.port);
    assert.equal((await refused.outcome).error?.code, 'ECONNRESET');
    const busy = await closedOf(tight.forwarded, 2, 'forwarder');
    assert.equal(busy.reason, 'busy');
    assert.match(String(busy.message), /the exposer is busy: 1 connections open, its limit \(maxConnections\)/);
    held.socket.destroy();

    const local = await chain(holding.port, {}, { maxConnections: 1 });
    const first = client(local.port);
    first.socket.write('x');
    await until(() => local.forwarded.some((e) => e.type === 'connected'), 15_000, 'the first client connected');
    const second = client(local.port);
    assert.equal((await second.outcome).error?.code, 'ECONNRESET');
    const closed = await closedOf(local.forwarded, 2, 'forwarder');
    assert.deepEqual([closed.reason, closed.side], ['busy', 'local']);
    first.socket.destroy();
  });

  test('one peer gets at most maxConnectionsPerPeer connections: its next is "busy", another peer still gets in', async () => {
    const holding = await service(() => undefined);
    const first = await chain(holding.port, { maxConnections: 4, maxConnectionsPerPeer: 1 });
    const held = client(first.port);
    held.socket.write('x');
    await until(() => first.forwarded.some((e) => e.type === 'connected'), 15_000, 'the first client connected');
    const refused = client(first.port);
    assert.equal((await refused.outcome).error?.code, 'ECONNRESET');
    const busy = await closedOf(first.forwarded, 2, 'forwarder');
    assert.equal(busy.reason, 'busy');
    assert.match(String(busy.message), /the exposer is busy: 1 connections of nattrav:\/\/k-\S+ open, its limit per peer \(maxConnectionsPerPeer\)/);
    // A second forwarder has its own (throwaway) identity: a peer of its own, with room left.
    const other = await forward({ broker: first.broker.address, uri: first.exposer.uri as string, listen: '127.0.0.1:0', knownKeysFile: false });
    closers.push(() => other.close());
    const otherEvents: ServiceEvent[] = [];
    other.on('event', (e: ServiceEvent) => otherEvents.push(e));
    const admitted = client((other.address() as { port: number }).port);
    admitted.socket.write('y');
    await until(() => otherEvents.some((e) => e.type === 'connected'), 15_000, 'the other peer connected');
    assert.equal(first.exposer.connections, 2);
    held.socket.destroy();
    admitted.socket.destroy();
  });

  test('idleTimeoutMs: a connection that carries bytes stays, a quiet one is reset on both sides and logged as idle', async () => {
    const echo = await service((socket) => socket.pipe(socket));
    const { exposed, forwarded, port } = await chain(echo.port, { idleTimeoutMs: 400 });
    const c = client(port);
    // A byte every 100 ms for 1.2 s (three idle timeouts): nothing cuts a connection in use.
    for (let i = 0; i < 12; i++) {
      c.socket.write('.');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(exposed.some((e) => e.type === 'closed'), false, 'no connection closed while bytes went through');
    const outcome = await c.outcome;
    assert.equal(outcome.error?.code, 'ECONNRESET', 'the client learns of the cut by a reset, not an end of data');
    assert.equal(outcome.data.toString(), '.'.repeat(12));
    const atExposer = await closedOf(exposed, 1, 'exposer');
    assert.equal(atExposer.reason, 'idle');
    assert.match(String(atExposer.message), /no byte went either way for 400 ms \(the idle timeout\)/);
    assert.equal((await closedOf(forwarded, 1, 'forwarder')).reason, 'reset');
  });

  test('busy answers are bounded: beyond maxConnections waiting refusals a peer is reset at once, and close() does not wait for a refused peer', async () => {
    const holding = await service(() => undefined);
    const { exposer, exposed, broker, forwarded, port } = await chain(holding.port, { maxConnections: 1 });
    const held = client(port);
    held.socket.write('x');
    await until(() => forwarded.some((e) => e.type === 'connected'), 15_000, 'the first client connected');
    // Raw peer connections that never close: the first gets its busy frame and lingers, the second is reset without one.
    const raw = async () => {
      const peer = await connect({ broker: broker.address, uri: exposer.uri as string, knownKeysFile: false });
      peer.on('error', () => undefined);
      closers.push(() => peer.destroy());
      return peer;
    };
    const lingering = await raw();
    assert.equal((await readPreamble(lingering, { timeoutMs: 10_000 })).status, 'busy');
    // Reset at once: during the TLS handshake's last step, or before any frame.
    await assert.rejects(raw().then((flooded) => readPreamble(flooded, { timeoutMs: 10_000 })));
    assert.equal(exposer.connections, 1);
    const closing = performance.now();
    await exposer.close();
    assert.ok(performance.now() - closing < 4_000, 'close() did not wait out the 5 s linger of the refused peer');
    assert.equal(exposed.filter((e) => e.type === 'closed' && e.reason === 'busy').length, 2);
    held.socket.destroy();
  });

  test('close() ends open connections with a FIN, logs them as stopped, and withdraws the URI', async () => {
    let arrived = 0;
    const holding = await service((socket) => socket.on('data', (chunk: Buffer) => (arrived += chunk.length)));
    const { exposer, exposed, port, broker } = await chain(holding.port);
    const c = client(port);
    c.socket.write('x');
    // The byte reached the service: the connection is spliced, not still being set up.
    await until(() => arrived === 1, 15_000, 'the client\'s byte at the service');
    assert.equal(exposer.connections, 1);
    await exposer.close();
    const closed = exposed.find((e): e is ServiceClosed => e.type === 'closed');
    assert.equal(closed?.reason, 'stopped');
    c.socket.end();
    const outcome = await c.outcome;
    assert.equal(outcome.ended, true);
    assert.equal(outcome.error, undefined);
    await until(() => broker.events.some((e) => e.type === 'withdrawn' && e.uri === exposer.uri), 5_000, 'the withdrawal');
  });

  test('plain TCP on both sides (tls: false) carries bytes; a TLS forwarder (the default) to a plain exposer fails with the reason', async () => {
    const echo = await service((socket) => socket.pipe(socket));
    const plain = await chain(echo.port, { tls: false }, { tls: false });
    const c = client(plain.port);
    c.socket.end('plain bytes');
    assert.equal((await c.outcome).data.toString(), 'plain bytes');
    const mismatch = await forward({ broker: plain.broker.address, uri: plain.exposer.uri as string, listen: '0', knownKeysFile: false });
    closers.push(() => mismatch.close());
    const events: ServiceEvent[] = [];
    mismatch.on('event', (e: ServiceEvent) => events.push(e));
    const refused = client((mismatch.address() as { port: number }).port);
    assert.equal((await refused.outcome).error?.code, 'ECONNRESET');
    const closed = await closedOf(events, 1, 'forwarder');
    assert.equal(closed.reason, 'failed');
    assert.equal(closed.code, 'ERR_PLAIN_REQUIRED');
    assert.match(String(closed.message), /could not connect to nattrav:\/\/k-.*TLS/);
  });

  test('an unknown URI: the client is reset and the log says the broker does not know it', async () => {
    const broker = await startWatchedBroker(closers);
    const forwarder = await forward({ broker: broker.address, uri: 'nattrav://nobody-here', listen: '0', knownKeysFile: false });
    closers.push(() => forwarder.close());
    const events: ServiceEvent[] = [];
    forwarder.on('event', (e: ServiceEvent) => events.push(e));
    const c = client((forwarder.address() as { port: number }).port);
    assert.equal((await c.outcome).error?.code, 'ECONNRESET');
    const closed = await closedOf(events, 1, 'forwarder');
    assert.deepEqual([closed.reason, closed.code, closed.peer], ['failed', 'ERR_UNKNOWN_URI', 'nattrav://nobody-here']);
    assert.match(String(closed.message), /could not connect to nattrav:\/\/nobody-here: unknown URI: nattrav:\/\/nobody-here/);
  });

  test('close() while start() waits for a broker that does not answer: start() rejects with ERR_CLOSED, nothing is left running', { timeout: 30_000 }, async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => silent.close(() => resolve())));
    const exposer = new Exposer({ broker: `127.0.0.1:${silent.address().port}`, target: '80', keyDir });
    const retries: unknown[] = [];
    exposer.on('registrationRetry', (retry: unknown) => retries.push(retry));
    const starting = exposer.start();
    await until(() => retries.length > 0, 15_000, 'a failed registration try');
    await exposer.close();
    await assert.rejects(starting, (err: unknown) => isNattravError(err, 'ERR_CLOSED'));
    assert.equal(exposer.address(), null);
  });

  test('bad options name what was wrong; a port in use is ERR_ADDRESS_IN_USE naming it', async () => {
    assert.throws(() => new Exposer({ broker: '127.0.0.1:1', target: 'nowhere' }), /target: missing port in "nowhere"/);
    assert.throws(() => new Exposer({ broker: '127.0.0.1:1', target: 80, uri: 'nattrav://x' } as unknown as ExposeOptions), /target: expected \[HOST:\]PORT/);
    assert.throws(() => new Exposer({ broker: '127.0.0.1:1', target: '80', uri: 'http://x' }), /uri "http:\/\/x": scheme "http:" is not nattrav:/);
    assert.throws(() => new Exposer({ broker: '127.0.0.1:1', target: '80', maxConnections: 0 }), /maxConnections: expected a positive integer/);
    assert.throws(() => new Exposer({ broker: '127.0.0.1:1', target: '80', maxConnectionsPerPeer: 1.5 }), /maxConnectionsPerPeer: expected a positive integer/);
    assert.throws(() => new Exposer({ broker: '127.0.0.1:1', target: '80', idleTimeoutMs: -1 }), /idleTimeoutMs: expected a positive integer/);
    assert.throws(() => new Forwarder({ broker: '127.0.0.1:1', uri: 'nattrav://x', listen: '0', idleTimeoutMs: Number.NaN }), /idleTimeoutMs: expected a positive integer/);
    assert.throws(() => new Forwarder({ broker: '127.0.0.1:1', uri: 'nattrav://x', listen: '70000' }), /listen: port must be an integer from 0 to 65535, got 70000/);
    const taken = await service(() => undefined);
    const busy = new Forwarder({ broker: '127.0.0.1:1', uri: 'nattrav://x', listen: String(taken.port), tls: false });
    await assert.rejects(busy.start(), (err: unknown) => isNattravError(err, 'ERR_ADDRESS_IN_USE') && err.port === taken.port && new RegExp(`port ${taken.port} is in use`).test(err.message));
    const foreign = new Forwarder({ broker: '127.0.0.1:1', uri: 'nattrav://x', listen: '203.0.113.9:0', tls: false });
    await assert.rejects(foreign.start(), (err: unknown) => isNattravError(err, 'ERR_INVALID_ARGUMENT') && /not an address of this host/.test(err.message));
  });
});
