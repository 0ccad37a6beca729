/**
 * `nattrav listen` / `connect` with `--broker ws://...` (and --http-proxy), as
 * processes: the listener registers over the WebSocket, the initiator connects over
 * another and the bytes come back intact (SHA-256); a bad URL and a bad proxy are
 * usage errors naming the flag, with the proxy password masked.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';

const children: ChildProcess[] = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-web-'));
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

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
    assert.equal(createHash('sha256').update(echoed).digest('hex'), createHash('sha256').update(`${payload}\n`).digest('hex'));
    client.child.stdin?.end();
    assert.equal(await client.exited, 0, client.stderr);
    listener.child.kill('SIGTERM');
    broker.child.kill('SIGTERM');
    await Promise.all([listener.exited, broker.exited]);
  });

  test('bad --broker URLs and --http-proxy values: exit 2 naming them, the password masked', async () => {
    const cases = [
      [['connect', 'nattrav://x', '--broker', 'wss://'], /broker URL wss:\/\/: not a URL/],
      [['connect', 'nattrav://x', '--broker', 'ws://u:pw@h:1/'], /broker URL ws:\/\/u:\*\*\*@h:1\/: no user, password/],
      [['listen', 'nattrav://x', '--broker', 'h:1', '--http-proxy', 'socks5://bob:hunter2@p:1'], /--http-proxy: only http:\/\/ proxies .*socks5:\/\/bob:\*\*\*@p:1/],
    ] as const;
    for (const [args, message] of cases) {
      const proc = cli([...args]);
      assert.equal(await proc.exited, 2, `${args.join(' ')}: ${proc.stderr}`);
      assert.match(proc.stderr, message);
      assert.ok(!proc.stderr.includes('hunter2') && !proc.stderr.includes(':pw@'), proc.stderr);
    }
  });
});
