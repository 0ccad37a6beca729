/**
 * `nattrav broker` logs and `--http`, as a process: JSON lines with time and level by
 * default, a readable line per event with --log-format pretty, refreshes and page
 * requests only at debug, bad flag values refused naming the flag, and the status
 * server reachable where --http says.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { createServer, type NattravServer } from '../../src/peer/server.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';
import { until } from '../helpers/loopback.js';

const children: ChildProcess[] = [];
const servers: NattravServer[] = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-log-'));

function broker(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  return new CliProcess(child);
}

async function stop(proc: CliProcess): Promise<number | null> {
  proc.child.kill('SIGTERM');
  return proc.exited;
}

/** A recipient refreshing its registration every 200 ms. */
async function recipient(port: number, uri: string): Promise<void> {
  const server = createServer({ broker: `127.0.0.1:${port}`, uri, keepaliveMs: 200, tls: false, keyDir: join(home, 'keys') }, () => undefined);
  servers.push(server);
  server.listen();
  await new Promise((resolve) => server.once('listening', resolve));
}

after(async () => {
  for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

describe('nattrav broker logs', () => {
  test('default: JSON lines with an ISO time and a level name; refreshes are not logged at info', async () => {
    const proc = broker([]);
    const listening = await proc.waitForEvent('listening', 10_000);
    assert.equal(listening.level, 'info');
    assert.match(String(listening.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    await recipient(Number(listening.port), 'nattrav://quiet');
    await proc.waitForEvent('registered', 5_000);
    // Five refresh intervals: none of them may show at info.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal(proc.events.filter((e) => e.event === 'registered').length, 1, proc.stderr);
    assert.equal(proc.events.some((e) => e.refresh === true), false);
    for (const line of proc.stderr.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), line);
    assert.equal(await stop(proc), 143);
  });

  test('--log-level debug shows refreshes at debug', async () => {
    const proc = broker(['--log-level', 'debug']);
    const listening = await proc.waitForEvent('listening', 10_000);
    await recipient(Number(listening.port), 'nattrav://chatty');
    const refresh = await proc.waitForEvent('registered', 5_000, (e) => e.refresh === true);
    assert.equal(refresh.level, 'debug');
    assert.equal(proc.events.find((e) => e.event === 'registered')?.level, 'info', 'the first registration is info');
    await stop(proc);
  });

  test('--log-format pretty: one readable line per event, no JSON', async () => {
    const proc = broker(['--log-format', 'pretty', '--open']);
    await until(() => /WARN .*OPEN MODE/.test(proc.stderr), 10_000, 'the open-mode warning');
    assert.match(proc.stderr, /^\d\d:\d\d:\d\d\.\d{3} INFO  listening address=127\.0\.0\.1 port=\d+ alternatePort=\d+ security=open$/m);
    assert.match(proc.stderr, /^\d\d:\d\d:\d\d\.\d{3} WARN  \*\*\* WARNING: OPEN MODE: registrations are NOT authenticated/m);
    assert.equal(proc.events.length, 0, 'no JSON lines');
    await stop(proc);
  });

  test('bad values of --http, --log-level and --log-format are usage errors naming the flag', async () => {
    const cases = [
      [['--http', '127.0.0.1'], /--http: missing port/],
      [['--http', '127.0.0.1:99999'], /--http: port must be an integer/],
      [['--log-level', 'loud'], /--log-level <level>' argument 'loud' is invalid\. Allowed choices are trace, debug, info, warn, error/],
      [['--log-format', 'xml'], /--log-format <format>' argument 'xml' is invalid/],
      [['--json', '--log-format', 'pretty'], /--json means --log-format json; it contradicts --log-format pretty/],
    ] as const;
    for (const [args, message] of cases) {
      const proc = broker([...args]);
      assert.equal(await proc.exited, 2, `${args.join(' ')}: ${proc.stderr}`);
      assert.match(proc.stderr, message);
    }
  });
});

describe('nattrav broker --http', () => {
  test('serves /healthz, /metrics and the page where --http says; page requests are debug', async () => {
    const proc = broker(['--http', '127.0.0.1:0', '--log-level', 'debug']);
    const http = await proc.waitForEvent('http-listening', 10_000);
    const url = String(http.url);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const listening = proc.events.find((e) => e.event === 'listening');
    await recipient(Number(listening?.port), 'nattrav://seen');
    await proc.waitForEvent('registered', 5_000);
    assert.equal((await fetch(`${url}healthz`)).status, 200);
    const families = parsePrometheusText(await (await fetch(`${url}metrics`)).text());
    assert.equal(sampleValue(families, 'nattrav_broker_registrations_active'), 1);
    assert.match(await (await fetch(url)).text(), /data-metric="registrations">1</);
    const request = await proc.waitForEvent('http-request', 5_000, (e) => e.path === '/metrics');
    assert.deepEqual([request.level, request.status, request.method], ['debug', 200, 'GET']);
    await stop(proc);
  });

  test('an --http port in use: exit 10 naming --http, and the broker does not stay up', async () => {
    const first = broker(['--http', '127.0.0.1:0', '--json']);
    const url = new URL(String((await first.waitForEvent('http-listening', 10_000)).url));
    const second = broker(['--http', `127.0.0.1:${url.port}`, '--json']);
    assert.equal(await second.exited, 10, second.stderr);
    const error = second.events.find((e) => e.event === 'error');
    assert.match(String(error?.message), new RegExp(`^--http 127\\.0\\.0\\.1:${url.port}: cannot serve HTTP on 127\\.0\\.0\\.1:${url.port}: port ${url.port} is in use`));
    await stop(first);
  });
});
