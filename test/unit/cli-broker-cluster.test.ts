/**
 * Three `nattrav broker --redis` processes on one redis-server, as an operator runs them:
 * a listener given all three (`--broker A,B,C`) registers with the first, is reachable
 * through the others, and after SIGKILL of its broker is registered with the next within
 * one keepalive interval and reachable again; its JSON events say which broker it is on.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { haveRedis, startRedis } from '../helpers/redis-server.js';

const children: ChildProcess[] = [];
const closers: Array<() => unknown> = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-cluster-'));

after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const close of closers.reverse()) await close();
  rmSync(home, { recursive: true, force: true });
});

/** The listener's keepalive, in ms: short, so the test is quick; the promise is one interval. */
const KEEPALIVE_MS = 1_000;
/** Room for a busy machine (process start-up, two cores shared with other tests), in ms. */
const SLACK_MS = 2_500;

function cli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  return new CliProcess(child);
}

/** `nattrav connect` through `broker`, one line through the echoing listener. */
async function echoThrough(broker: string, uri: string): Promise<void> {
  const proc = cli(['connect', uri, '--broker', broker, '--json', '--timeout', '20000']);
  await proc.waitForEvent('connected', 20_000);
  proc.write('hello cluster\n');
  await proc.waitForStdout('hello cluster\n', 10_000);
  proc.child.stdin?.end();
  assert.equal(await proc.exited, 0);
}

describe('nattrav broker --redis: three processes, one cluster', () => {
  test('--broker A,B,C: reachable through every broker; SIGKILL of its broker moves the listener to the next within one keepalive', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis();
    closers.push(() => server.stop());
    const brokers: Array<{ proc: CliProcess; address: string }> = [];
    for (let i = 0; i < 3; i++) {
      const proc = cli(['broker', '--listen', '127.0.0.1:0', '--redis', server.url, '--json']);
      const cluster = await proc.waitForEvent('cluster', 10_000);
      assert.match(String(cluster.busId), /^b-[0-9a-f]{16}$/, 'a random bus ID while the port is chosen at start');
      const listening = await proc.waitForEvent('listening', 10_000);
      brokers.push({ proc, address: `127.0.0.1:${String(listening.port)}` });
    }
    const [one, two, three] = brokers as [(typeof brokers)[0], (typeof brokers)[0], (typeof brokers)[0]];
    const list = brokers.map((b) => b.address).join(',');
    const uri = 'nattrav://clustered';
    const listener = cli(['listen', uri, '--broker', list, '--echo', '--keepalive', String(KEEPALIVE_MS), '--json']);
    const first = await listener.waitForEvent('registered', 15_000);
    assert.equal(first.broker, one.address, 'registered with the first broker listed');

    await echoThrough(two.address, uri);
    await echoThrough(three.address, uri);

    const killed = performance.now();
    one.proc.child.kill('SIGKILL');
    const moved = await listener.waitForEvent('registered', KEEPALIVE_MS + SLACK_MS + 5_000, (e) => e.again === true);
    const after = performance.now() - killed;
    assert.equal(moved.broker, two.address, 'the next broker of the list');
    assert.ok(after <= KEEPALIVE_MS + SLACK_MS, `registered again ${Math.round(after)} ms after the kill`);
    assert.ok(listener.events.some((e) => e.event === 'registration-lost'), 'the loss was reported');

    await echoThrough(three.address, uri);
    await echoThrough(`${one.address},${two.address}`, uri);

    listener.child.kill('SIGTERM');
    assert.equal(await listener.exited, 143);
    for (const broker of [two, three]) {
      broker.proc.child.kill('SIGTERM');
      assert.equal(await broker.proc.exited, 143);
    }
  });

  test('--redis with a wildcard --listen needs --join-address (exit 2, naming both)', async () => {
    const proc = cli(['broker', '--listen', '0.0.0.0:0', '--redis', 'redis://127.0.0.1:1', '--json']);
    assert.equal(await proc.exited, 2);
    assert.match(String(proc.events.find((e) => e.event === 'error')?.message), /--redis with --listen 0\.0\.0\.0:0: pass --join-address IP:PORT/);
    const bad = cli(['broker', '--listen', '0.0.0.0:0', '--redis', 'redis://127.0.0.1:1', '--join-address', 'broker.example:3478', '--json']);
    assert.equal(await bad.exited, 2);
    assert.match(String(bad.events.find((e) => e.event === 'error')?.message), /--join-address: pass the IP address and port/);
  });

  test('--broker with an empty entry is a usage error naming --broker (exit 2), before any traffic', async () => {
    const proc = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:3478,,127.0.0.1:3479', '--json']);
    assert.equal(await proc.exited, 2);
    assert.match(String(proc.events.find((e) => e.event === 'error')?.message), /--broker: an empty entry/);
  });
});
