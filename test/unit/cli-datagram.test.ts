/**
 * `nattrav listen --udp` / `nattrav connect --udp` as real processes on loopback: lines
 * become datagrams both ways, EOF on stdin ends that side (the other side's lines still
 * arrive) and both exit 0 once both ended, an echo comes back whole before the exit; --udp with options that need TLS or a proxy, or with a SOCKS5 proxy in the
 * environment, is refused (exit 2, naming them); listen --udp honours --keepalive-max
 * and --takeover as listen does.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { refuseWithUdp } from '../../src/cli/datagram.js';
import { startBroker } from '../helpers/loopback.js';

const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-dgram-'));
const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, SOCKS_PROXY: '', ALL_PROXY: '', HOME: home, ...env } });
  children.push(child);
  child.stdin?.on('error', () => undefined);
  return new CliProcess(child);
}

test('listen --udp and connect --udp carry lines as datagrams both ways; EOF half-closes, both exit 0 once both ended', { timeout: 60_000 }, async (t) => {
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
  // The client's EOF ends its side only: the listener's lines still reach it.
  client.child.stdin?.end();
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(client.child.exitCode, null, 'the client waits for the listener to end too');
  listener.write('after your end\n');
  await client.waitForStdout('back\nafter your end\n', 5_000);
  listener.child.stdin?.end();
  assert.equal(await client.exited, 0, client.stderr);
  assert.equal(await listener.exited, 0, listener.stderr);
  assert.match(client.stderr, /"reason":"both sides ended"/);
});

test('connect --udp to listen --udp --echo: every line comes back before the exit, exit 0', { timeout: 60_000 }, async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const listener = cli(['listen', 'nattrav://cli-dgram-echo', '--udp', '--echo', '--broker', address, '--json']);
  t.after(() => listener.child.kill('SIGTERM'));
  await listener.waitForEvent('registered', 15_000);
  const client = cli(['connect', 'nattrav://cli-dgram-echo', '--udp', '--broker', address]);
  const lines = Array.from({ length: 50 }, (_, i) => `line ${i}`);
  client.child.stdin?.end(`${lines.join('\n')}\n`);
  assert.equal(await client.exited, 0, client.stderr);
  assert.deepEqual(client.stdout.split('\n').filter((line) => line !== ''), lines);
});

test('connect --udp whose reader went away (`| head -1`): the next datagram ends it with exit 1, naming stdout', { timeout: 60_000 }, async (t) => {
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const listener = cli(['listen', 'nattrav://cli-dgram-gone', '--udp', '--broker', address, '--json']);
  t.after(() => listener.child.kill('SIGTERM'));
  await listener.waitForEvent('registered', 15_000);
  const client = cli(['connect', 'nattrav://cli-dgram-gone', '--udp', '--broker', address, '--json']);
  await client.waitForEvent('connected', 15_000);
  await listener.waitForEvent('accepted', 15_000);
  client.child.stdout?.destroy();
  listener.write('nobody reads this\n');
  assert.equal(await client.exited, 1, client.stderr);
  assert.match(client.stderr, /cannot write to stdout: .*the rest of the data was not delivered/);
  assert.match(client.stderr, /"reason":"stdout-error"/);
});

test('--udp with --expect-key or --socks5 is refused with exit 2 and says why', async () => {
  const pinned = cli(['connect', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9', '--expect-key', 'a'.repeat(52)]);
  assert.equal(await pinned.exited, 2);
  assert.match(pinned.stderr, /--udp: a datagram channel proves no TLS identity/);
  const proxied = cli(['listen', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9', '--socks5', '127.0.0.1:1080']);
  assert.equal(await proxied.exited, 2);
  assert.match(proxied.stderr, /--udp: a proxy or a ws:\/\/ broker carries no UDP/);
});

test('--udp with a SOCKS5 proxy in the environment is refused with exit 2 (UDP would go around it), unless NO_PROXY exempts the broker', async () => {
  for (const env of [{ SOCKS_PROXY: '127.0.0.1:1080' }, { ALL_PROXY: 'socks5h://127.0.0.1:1080' }]) {
    const run = cli(['connect', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9'], env);
    assert.equal(await run.exited, 2, JSON.stringify(env));
    assert.match(run.stderr, /--udp: the environment names a SOCKS5 proxy \(SOCKS_PROXY \/ ALL_PROXY\), and a datagram channel would go around it/);
  }
  const listen = cli(['listen', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9'], { ALL_PROXY: 'socks5://127.0.0.1:1080' });
  assert.equal(await listen.exited, 2);
  assert.match(listen.stderr, /--udp: the environment names a SOCKS5 proxy/);
  const brokers = [{ host: 'broker.example', port: 3478 }];
  assert.throws(() => refuseWithUdp({ broker: 'broker.example:3478' }, brokers, { SOCKS_PROXY: '127.0.0.1:1080' }), /environment names a SOCKS5 proxy/);
  assert.doesNotThrow(() => refuseWithUdp({ broker: 'broker.example:3478' }, brokers, { SOCKS_PROXY: '127.0.0.1:1080', NO_PROXY: 'example' }));
  assert.doesNotThrow(() => refuseWithUdp({ broker: 'broker.example:3478' }, brokers, { ALL_PROXY: 'http://proxy.example:8080' }), 'an HTTP proxy in ALL_PROXY is not a SOCKS5 one');
});

test('listen --udp passes --keepalive-max (checked like listen does) and --takeover (the first listener exits 13)', { timeout: 60_000 }, async (t) => {
  const shortMax = cli(['listen', 'nattrav://x', '--udp', '--broker', '127.0.0.1:9', '--keepalive-max', '1000']);
  assert.equal(await shortMax.exited, 2);
  assert.match(shortMax.stderr, /keepaliveMaxMs: expected an integer of at least 5000/);
  const { broker, address } = await startBroker();
  t.after(() => broker.close());
  const first = cli(['listen', 'nattrav://dgram-twin', '--udp', '--echo', '--broker', address, '--json']);
  await first.waitForEvent('registered', 15_000);
  const second = cli(['listen', 'nattrav://dgram-twin', '--udp', '--echo', '--takeover', '--broker', address, '--json']);
  await second.waitForEvent('registered', 15_000);
  const told = await first.waitForEvent('error', 15_000);
  assert.equal(told.code, 'ERR_TAKEN_OVER');
  assert.equal(await first.exited, 13);
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 143);
});
