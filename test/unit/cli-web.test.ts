/**
 * `nattrav listen` / `connect` with `--broker ws://...` (and --http-proxy), as
 * processes: the listener registers over the WebSocket, the initiator connects over
 * another and the bytes come back intact (SHA-256); the same for `expose` and `forward`,
 * forward's WebSocket through an HTTP CONNECT proxy; a bad URL and a bad proxy are
 * usage errors naming the flag, with the proxy password masked.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect, createServer as netServer } from 'node:net';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { connectProxy } from '../helpers/websocket.js';

const children: ChildProcess[] = [];
const closers: Array<() => unknown> = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-web-'));
after(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const close of closers.reverse()) await close();
  rmSync(home, { recursive: true, force: true });
});

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

function cli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home, HTTPS_PROXY: '', HTTP_PROXY: '', https_proxy: '', http_proxy: '' } });
  children.push(child);
  return new CliProcess(child);
}

describe('nattrav listen/connect --broker ws://', () => {
  test('register and connect over WebSocket; the echoed bytes hash the same', async () => {
    const broker = cli(['broker', '--listen', '127.0.0.1:0', '--ws-listen', '127.0.0.1:0', '--json']);
    const ws = await broker.waitForEvent('ws-listening', 10_000);
    const url = String(ws.url);
    const listener = cli(['listen', 'nattrav://web-echo', '--broker', url, '--echo', '--json']);
    const registered = await listener.waitForEvent('registered', 15_000);
    assert.equal(registered.uri, 'nattrav://web-echo');
    const client = cli(['connect', 'nattrav://web-echo', '--broker', url, '--json', '-v']);
    await client.waitForEvent('connected', 40_000);
    const payload = randomBytes(48 * 1024).toString('hex');
    client.write(`${payload}\n`);
    const echoed = await client.waitForStdout(`${payload}\n`, 15_000);
    assert.equal(sha256(echoed), sha256(`${payload}\n`));
    client.child.stdin?.end();
    assert.equal(await client.exited, 0, client.stderr);
    listener.child.kill('SIGTERM');
    broker.child.kill('SIGTERM');
    await Promise.all([listener.exited, broker.exited]);
  });

  test('expose and forward over WebSocket, forward through an HTTP CONNECT proxy (--http-proxy); bytes intact', async () => {
    const broker = cli(['broker', '--listen', '127.0.0.1:0', '--ws-listen', '127.0.0.1:0', '--json']);
    const url = String((await broker.waitForEvent('ws-listening', 10_000)).url);
    // The local service: echoes until the other side ends, then ends.
    const service = netServer((socket) => {
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    service.listen(0, '127.0.0.1');
    await once(service, 'listening');
    closers.push(() => new Promise((resolve) => service.close(resolve)));
    const servicePort = (service.address() as { port: number }).port;
    const proxy = await connectProxy(closers);
    const exposer = cli(['expose', String(servicePort), '--broker', url, '--json']);
    const exposed = JSON.parse((await exposer.waitForStdout('\n', 15_000)).split('\n')[0] as string) as { uri: string };
    const forwarder = cli(['forward', exposed.uri, '--listen', '127.0.0.1:0', '--broker', url, '--http-proxy', proxy.url(), '--known-keys', join(home, 'known_keys'), '--json']);
    const forwarding = await forwarder.waitForEvent('forwarding', 15_000);
    const local = netConnect({ host: '127.0.0.1', port: Number(String(forwarding.listen).split(':')[1]) });
    const payload = randomBytes(96 * 1024);
    const chunks: Buffer[] = [];
    local.on('data', (chunk: Buffer) => chunks.push(chunk));
    local.end(payload);
    await once(local, 'end');
    assert.equal(sha256(Buffer.concat(chunks)), sha256(payload));
    const wsPort = new URL(url).port;
    assert.ok(proxy.asked.includes(`CONNECT 127.0.0.1:${wsPort} HTTP/1.1`), `forward went through the proxy: ${JSON.stringify(proxy.asked)}`);
    for (const proc of [forwarder, exposer, broker]) proc.child.kill('SIGTERM');
    assert.deepEqual(await Promise.all([forwarder.exited, exposer.exited]), [143, 143], `${forwarder.stderr}\n${exposer.stderr}`);
  });

  test('connect when nothing gets out (TCP, wss, ws all refused), also when its time runs out first: exit 4 naming each step, never 5', async () => {
    // A loopback port nothing listens on: TCP is refused there, and on 443 and 80 unless something listens.
    const closed = netServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    for (const timeout of ['1', '20000']) {
      const proc = cli(['connect', 'nattrav://nobody', '--broker', `127.0.0.1:${port}`, '--timeout', timeout, '--json']);
      assert.equal(await proc.exited, 4, `--timeout ${timeout}: ${proc.stderr}`);
      const error = JSON.parse(proc.stderr.split('\n').find((line) => line.includes('"event":"error"')) ?? '{}') as { code?: string; message?: string };
      assert.equal(error.code, 'ERR_BROKER_UNREACHABLE', proc.stderr);
      // Every step is named with what became of it: refused, cut off by the time limit, or not tried.
      assert.match(String(error.message), new RegExp(`tcp: .*; wss://127\\.0\\.0\\.1:443/: .*; ws://127\\.0\\.0\\.1:80/: `), `--timeout ${timeout}`);
    }
  });

  test('bad --broker URLs and --http-proxy values: exit 2 naming them, the password masked', async () => {
    const cases = [
      [['connect', 'nattrav://x', '--broker', 'wss://'], /broker URL wss:\/\/: not a URL/],
      [['connect', 'nattrav://x', '--broker', 'ws://u:pw@h:1/'], /broker URL ws:\/\/u:\*\*\*@h:1\/: no user, password/],
      [['listen', 'nattrav://x', '--broker', 'h:1', '--http-proxy', 'socks5://bob:hunter2@p:1'], /--http-proxy: only http:\/\/ proxies .*socks5:\/\/bob:\*\*\*@p:1/],
      [['expose', '8080', '--broker', 'wss://'], /broker URL wss:\/\/: not a URL/],
      [['forward', 'nattrav://x', '--listen', '0', '--broker', 'h:1', '--http-proxy', 'ftp://bob:hunter2@p:1'], /--http-proxy: only http:\/\/ proxies .*ftp:\/\/bob:\*\*\*@p:1/],
      [['expose', '8080', '--broker', 'ws://h:1/', '--socks5', 'p:1'], /--socks5 with a ws:\/\/ or wss:\/\/ --broker or --http-proxy/],
    ] as const;
    for (const [args, message] of cases) {
      const proc = cli([...args]);
      assert.equal(await proc.exited, 2, `${args.join(' ')}: ${proc.stderr}`);
      assert.match(proc.stderr, message);
      assert.ok(!proc.stderr.includes('hunter2') && !proc.stderr.includes(':pw@'), proc.stderr);
    }
  });
});
