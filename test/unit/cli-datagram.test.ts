/**
 * `nattrav listen --udp` / `nattrav connect --udp` as real processes on loopback: lines
 * become datagrams both ways, EOF on the initiator's stdin closes the channel and both
 * exit 0; --udp with options that need TLS or a proxy is refused (exit 2, naming them).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { startBroker } from '../helpers/loopback.js';

const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-dgram-'));
const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

function cli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  child.stdin?.on('error', () => undefined);
  return new CliProcess(child);
}

test('listen --udp and connect --udp carry lines as datagrams both ways; EOF closes both', async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const listener = cli(['listen', 'nattrav://cli-dgram', '--udp', '--broker', address, '--json']);
  await listener.waitForEvent('registered', 15_000);
  const client = cli(['connect', 'nattrav://cli-dgram', '--udp', '--broker', address, '--json']);
  await client.waitForEvent('connected', 15_000);
  await listener.waitForEvent('accepted', 15_000);
  client.write('hello\nsecond line\n');
  await listener.waitForStdout('hello\nsecond line\n', 5_000);
  listener.write('back\n');
  await client.waitForStdout('back\n', 5_000);
  client.child.stdin?.end();
  assert.equal(await client.exited, 0, client.stderr);
  assert.equal(await listener.exited, 0, listener.stderr);
});

test('--udp with --expect-key or --socks5 is refused with exit 2 and says why', async () => {
  const pinned = cli(['connect', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9', '--expect-key', 'a'.repeat(52)]);
  assert.equal(await pinned.exited, 2);
  assert.match(pinned.stderr, /--udp: a datagram channel proves no TLS identity/);
  const proxied = cli(['listen', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9', '--socks5', '127.0.0.1:1080']);
  assert.equal(await proxied.exited, 2);
  assert.match(proxied.stderr, /--udp: a proxy or a ws:\/\/ broker carries no UDP/);
});
