/**
 * `nattrav expose` and `nattrav forward` on loopback, as a user runs them: the URI to
 * share on stdout (kept with --identity), HTTP through the pair, a refused service's
 * reason in forward's log, --allow, one identity in two processes (exit 2, --takeover and
 * exit 13), bad input (exit 2) and a port in use (exit 10)
 * before any traffic, and stop signals (130/143) with open connections ended.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, get as httpGet, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createTcpServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { loadOrCreateIdentity } from '../../src/security/identity.js';
import { until } from '../helpers/loopback.js';

const dir = mkdtempSync(join(tmpdir(), 'nattrav-cli-expose-'));
const children: ChildProcess[] = [];
const servers: Array<Server | HttpServer> = [];
const SELF_CERTIFYING = /^nattrav:\/\/k-[a-z2-7]{52}$/;

function cli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: join(dir, 'home') } });
  children.push(child);
  return new CliProcess(child);
}

async function broker(): Promise<string> {
  const proc = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
  const listening = await proc.waitForEvent('listening', 10_000);
  return `127.0.0.1:${String(listening.port)}`;
}

async function listening<T extends Server | HttpServer>(server: T): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

/** `expose ... --json`; resolves with the process and the URI from its one stdout line. */
async function exposeCli(args: string[]): Promise<{ proc: CliProcess; uri: string }> {
  const proc = cli(['expose', ...args, '--json']);
  const line = (await proc.waitForStdout('\n', 15_000)).split('\n')[0] as string;
  const result = JSON.parse(line) as { event: string; uri: string };
  assert.equal(result.event, 'exposed');
  return { proc, uri: result.uri };
}

/** `forward URI --listen 127.0.0.1:0 ... --json`; resolves with the process and its port. */
async function forwardCli(uri: string, address: string, extra: string[] = []): Promise<{ proc: CliProcess; port: number }> {
  const proc = cli(['forward', uri, '--listen', '127.0.0.1:0', '--broker', address, '--known-keys', join(dir, 'known_keys'), ...extra, '--json']);
  const forwarding = await proc.waitForEvent('forwarding', 15_000);
  return { proc, port: Number(String(forwarding.listen).split(':')[1]) };
}

/** The exit code, or a failure naming the process's stderr when it does not exit within `ms`. */
async function exitOf(proc: CliProcess, ms: number): Promise<number | null> {
  const timer = new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), ms).unref());
  const result = await Promise.race([proc.exited, timer]);
  if (result === 'running') {
    proc.child.kill('SIGKILL');
    throw new Error(`still running after ${ms} ms; stderr: ${proc.stderr}`);
  }
  return result;
}

function fetchText(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('nattrav expose / forward', () => {
  after(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const server of servers) server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the URI is the result; --identity keeps it; HTTP goes through; a refused service is logged with its reason', async () => {
    const address = await broker();
    const httpServer = createHttpServer((request, response) => response.end(`you asked for ${request.url ?? ''}`));
    const http = await listening(httpServer);
    const identity = join(dir, 'exposer-identity');
    const first = await exposeCli([String(http), '--broker', address, '--identity', identity]);
    assert.match(first.uri, SELF_CERTIFYING);
    assert.equal((await first.proc.waitForEvent('identity-created', 1_000)).uri, first.uri);
    first.proc.child.kill('SIGINT');
    assert.equal(await first.proc.exited, 130);
    // Human output: stdout is the URI alone, and the same identity comes back.
    const again = cli(['expose', String(http), '--broker', address, '--identity', identity]);
    assert.equal((await again.waitForStdout('\n', 15_000)).trim(), first.uri);
    assert.doesNotMatch(again.stderr, /created the identity/);

    const forward = await forwardCli(first.uri, address);
    const answer = await fetchText(forward.port, '/some/page');
    assert.deepEqual(answer, { status: 200, body: 'you asked for /some/page' });
    const logged = await forward.proc.waitForEvent('closed', 5_000, (e) => e.reason === 'closed');
    assert.ok(Number(logged.bytesIn) > 0 && Number(logged.bytesOut) > 0);
    await until(() => /#1 closed \(closed\): \d+ bytes in, \d+ bytes out, \d+ ms, peer nattrav:\/\/k-/.test(again.stderr), 5_000, 'expose\'s log line');

    // The service goes away: the client is reset, forward logs why, expose logs where.
    const closing = new Promise((resolve) => httpServer.close(resolve));
    httpServer.closeAllConnections();
    await closing;
    const reset = await fetchText(forward.port, '/').then(
      () => 'answered',
      (err: NodeJS.ErrnoException) => err.code,
    );
    assert.equal(reset, 'ECONNRESET');
    const refused = await forward.proc.waitForEvent('closed', 5_000, (e) => e.reason === 'refused');
    assert.match(String(refused.message), /the exposed service refused the connection \(ECONNREFUSED\)/);
    const refusedLine = new RegExp(`#2 closed \\(refused on the local side\\).*the service at 127\\.0\\.0\\.1:${http} refused the connection`);
    await until(() => refusedLine.test(again.stderr), 5_000, 'expose\'s log line of the refused connection');
    forward.proc.child.kill('SIGTERM');
    assert.equal(await forward.proc.exited, 143);
    again.child.kill('SIGTERM');
    assert.equal(await again.exited, 143);
  });

  test('--allow: a forwarder with an allowed --identity gets through, another is refused and both sides say so', async () => {
    const address = await broker();
    const echo = await listening(createTcpServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket)));
    const allowedDir = join(dir, 'allowed-forwarder');
    const allowed = await forwardCli('nattrav://placeholder', address, ['--identity', allowedDir]);
    const allowedUri = String((await allowed.proc.waitForEvent('identity-created', 1_000)).uri);
    allowed.proc.child.kill('SIGTERM');
    await allowed.proc.exited;
    const exposer = await exposeCli([String(echo), '--broker', address, '--allow', allowedUri]);
    const good = await forwardCli(exposer.uri, address, ['--identity', allowedDir]);
    assert.equal((await good.proc.waitForEvent('forwarding', 1_000)).identity, allowedUri);
    const socket = netConnect({ host: '127.0.0.1', port: good.port });
    socket.end('allowed bytes');
    let echoed = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (echoed += chunk));
    await new Promise((resolve) => socket.once('close', resolve));
    assert.equal(echoed, 'allowed bytes');

    const stranger = await forwardCli(exposer.uri, address);
    const refusedSocket = netConnect({ host: '127.0.0.1', port: stranger.port });
    refusedSocket.on('error', () => undefined);
    const failed = await stranger.proc.waitForEvent('closed', 20_000);
    assert.equal(failed.reason, 'failed');
    assert.match(String(failed.message), /is not on the allow-list of nattrav:\/\/k-/);
    const rejected = await exposer.proc.waitForEvent('connection-rejected', 5_000);
    assert.match(String(rejected.peerUri), SELF_CERTIFYING);
    assert.notEqual(rejected.peerUri, allowedUri);
  });

  test('bad input exits 2 naming the argument, before any traffic; a port in use exits 10', async () => {
    const quiet = createSocket('udp4');
    await new Promise<void>((resolve) => quiet.bind(0, '127.0.0.1', resolve));
    let traffic = 0;
    quiet.on('message', () => traffic++);
    const silent = `127.0.0.1:${quiet.address().port}`;
    const identity = join(dir, 'mismatch-identity');
    try {
      const cases: Array<[string[], RegExp]> = [
        [['expose', 'abc', '--broker', silent], /TARGET: missing port in "abc"; expected \[HOST:\]PORT such as 8080/],
        [['expose', '0', '--broker', silent], /TARGET: port must be an integer from 1 to 65535, got 0/],
        [['expose', 'localhost:http', '--broker', silent], /TARGET: port "http" in "localhost:http" is not a number/],
        [['expose', '8080', 'http://x', '--broker', silent], /URI "http:\/\/x": scheme "http:" is not nattrav:/],
        [['expose', '8080', '--broker', 'host:99999'], /--broker: port must be an integer from 0 to 65535, got 99999/],
        [['expose', '8080', '--broker', silent, '--allow', 'bob'], /--allow "bob": no scheme/],
        [['expose', '8080', '--broker', silent, '--max-connections', '0'], /--max-connections.*expected a positive whole number/],
        [['expose', '8080', '--broker', silent, '--max-connections-per-peer', 'x'], /--max-connections-per-peer.*expected a positive whole number/],
        [['expose', '8080', '--broker', silent, '--idle-timeout', '0'], /--idle-timeout.*expected a positive whole number/],
        [['expose', '8080', '--broker', silent, '--keepalive-max', '1000'], /keepaliveMaxMs: expected an integer of at least 5000/],
        [['forward', 'nattrav://alice', '--listen', '0', '--broker', silent, '--idle-timeout', '1.5'], /--idle-timeout.*expected a positive whole number/],
        [['expose', '8080', '--broker', silent, '--allow', 'nattrav://bob', '--no-tls'], /allow needs TLS/],
        [['forward', 'alice', '--listen', '8080', '--broker', silent], /URI "alice": no scheme/],
        [['forward', 'nattrav://alice', '--listen', 'abc', '--broker', silent], /--listen: missing port in "abc"/],
        [['forward', 'nattrav://alice', '--broker', silent], /required option '--listen <\[host:\]port>' not specified/],
        [['forward', 'nattrav://alice', '--listen', '203.0.113.9:8080', '--broker', silent], /listen: cannot listen on 203\.0\.113\.9:8080: not an address of this host/],
      ];
      for (const [args, message] of cases) {
        const proc = cli(args);
        assert.equal(await exitOf(proc, 10_000), 2, `${args.join(' ')}: ${proc.stderr}`);
        assert.match(proc.stderr, message, args.join(' '));
      }
      // An identity for another URI than the one asked for.
      await loadOrCreateIdentity(identity);
      const mismatch = cli(['expose', '8080', 'nattrav://other', '--broker', silent, '--identity', identity]);
      assert.equal(await exitOf(mismatch, 10_000), 2);
      assert.match(mismatch.stderr, /uri nattrav:\/\/other and identity \(for nattrav:\/\/k-[a-z2-7]+\) name different URIs/);
      assert.equal(traffic, 0, 'bad input sends nothing');
    } finally {
      quiet.close();
    }
    const taken = await listening(createTcpServer());
    const busy = cli(['forward', 'nattrav://alice', '--listen', String(taken), '--broker', '127.0.0.1:1', '--json']);
    assert.equal(await exitOf(busy, 10_000), 10);
    const error = busy.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_ADDRESS_IN_USE');
    assert.match(String(error?.message), new RegExp(`port ${taken} is in use`));
  });

  test('a second expose of the same identity exits 2 while the first lives; --takeover takes the URI and the first exits 13', async () => {
    const address = await broker();
    const http = await listening(createHttpServer((_request, response) => response.end('twin')));
    const identity = join(dir, 'twin-identity');
    const first = await exposeCli([String(http), '--broker', address, '--identity', identity]);
    const second = cli(['expose', String(http), '--broker', address, '--identity', identity, '--once', '--json']);
    assert.equal(await exitOf(second, 15_000), 2, second.stderr);
    assert.equal(second.events.find((e) => e.event === 'error')?.code, 'ERR_URI_HELD_BY_INSTANCE');
    const third = await exposeCli([String(http), '--broker', address, '--identity', identity, '--takeover']);
    assert.equal(third.uri, first.uri);
    assert.equal(await exitOf(first.proc, 15_000), 13, first.proc.stderr);
    assert.equal(first.proc.events.find((e) => e.event === 'error')?.code, 'ERR_TAKEN_OVER');
    const forward = await forwardCli(third.uri, address);
    assert.deepEqual(await fetchText(forward.port, '/'), { status: 200, body: 'twin' });
    third.proc.child.kill('SIGTERM');
    forward.proc.child.kill('SIGTERM');
    assert.equal(await exitOf(third.proc, 10_000), 143);
  });

  test('signals: expose while it cannot register (130), forward with an open connection ends it with a FIN (143)', async () => {
    // A broker address that swallows every datagram: expose keeps trying until the signal.
    const sink = createSocket('udp4');
    await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
    try {
      const waiting = cli(['expose', '8080', '--broker', `127.0.0.1:${sink.address().port}`, '--json']);
      const retry = await waiting.waitForEvent('registration-retry', 15_000);
      assert.equal(retry.phase, 'start');
      const sent = Date.now();
      waiting.child.kill('SIGINT');
      assert.equal(await waiting.exited, 130);
      assert.ok(Date.now() - sent < 2_000, 'stopped within 2 s');
      assert.equal(waiting.stdout, '', 'no URI is printed before it is registered');
      // --once: the first failed registration is the end (exit 4, broker unreachable).
      const once = cli(['expose', '8080', '--broker', `127.0.0.1:${sink.address().port}`, '--once', '--json']);
      assert.equal(await exitOf(once, 20_000), 4, once.stderr);
      assert.equal(once.events.find((e) => e.event === 'error')?.code, 'ERR_BROKER_UNREACHABLE');
    } finally {
      sink.close();
    }
    const address = await broker();
    const holding = await listening(createTcpServer({ allowHalfOpen: true }, () => undefined));
    const exposer = await exposeCli([String(holding), '--broker', address]);
    const forward = await forwardCli(exposer.uri, address);
    const socket = netConnect({ host: '127.0.0.1', port: forward.port, allowHalfOpen: true });
    let ended = false;
    socket.on('end', () => {
      ended = true;
      socket.end();
    });
    socket.on('error', () => undefined);
    const socketClosed = new Promise((resolve) => socket.once('close', resolve));
    socket.write('x');
    await forward.proc.waitForEvent('connected', 15_000);
    forward.proc.child.kill('SIGTERM');
    assert.equal(await forward.proc.exited, 143);
    const closed = forward.proc.events.find((e) => e.event === 'closed');
    assert.equal(closed?.reason, 'stopped');
    await socketClosed;
    assert.equal(ended, true, 'the client got a FIN, not a reset');
    exposer.proc.child.kill('SIGINT');
    assert.equal(await exposer.proc.exited, 130);
  });
});
