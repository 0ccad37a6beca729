/**
 * `nattrav broker --redis URL` as a user runs it: a bad URL is a usage error naming the
 * flag (exit 2), a Redis that does not answer is exit 4 naming the server without its
 * password, and two broker processes on one redis-server share the owner binding of a
 * plain name (a second key cannot take it through the other broker: exit 8).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connectRedis } from '../../src/broker/registry/redis.js';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { haveRedis, selfSignedForLoopback, startRedis } from '../helpers/redis-server.js';

const children: ChildProcess[] = [];
const closers: Array<() => unknown> = [];
// Keys of default identities go here, never into the real ~/.nattrav.
const homes = [mkdtempSync(join(tmpdir(), 'nattrav-cli-redis-a-')), mkdtempSync(join(tmpdir(), 'nattrav-cli-redis-b-'))] as const;

after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const close of closers.reverse()) await close();
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

function cli(args: string[], home: string = homes[0], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home, ...env } });
  children.push(child);
  return new CliProcess(child);
}

describe('nattrav broker --redis', () => {
  test('a bad URL is a usage error naming --redis (exit 2)', async () => {
    for (const [url, why] of [
      ['http://127.0.0.1:6379', /--redis: Redis URL http:\/\/127.0.0.1:6379\/?: the scheme must be redis:\/\/ or rediss:\/\//],
      ['redis://127.0.0.1:6379/x', /--redis: .*database number/],
    ] as const) {
      const proc = cli(['broker', '--listen', '127.0.0.1:0', '--redis', url, '--json']);
      assert.equal(await proc.exited, 2, url);
      const error = proc.events.find((e) => e.event === 'error');
      assert.equal(error?.code, 'ERR_INVALID_ARGUMENT');
      assert.match(String(error?.message), why);
    }
  });

  test('nattrav config shows where --redis comes from, never its password', async () => {
    const proc = cli(['config', 'broker', '--redis', 'rediss://broker:hunter2@redis.internal:6380', '--json']);
    const printed = await proc.waitForStdout('\n', 10_000).then(() => proc.stdout);
    assert.equal(await proc.exited, 0);
    const options = (JSON.parse(printed) as { options: Array<{ command: string; key: string; value: unknown }> }).options;
    assert.equal(options.find((o) => o.command === 'broker' && o.key === 'redis')?.value, 'rediss://broker:***@redis.internal:6380');
    assert.ok(!printed.includes('hunter2'));
  });

  test('a Redis that does not answer: exit 4, naming the server without its password', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis();
    await server.stop(); // its port is free now: nothing answers there
    const proc = cli(['broker', '--listen', '127.0.0.1:0', '--redis', `redis://nattrav:topsecret@127.0.0.1:${server.port}`, '--json']);
    assert.equal(await proc.exited, 4);
    const error = proc.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_REGISTRY_UNAVAILABLE');
    assert.match(String(error?.message), new RegExp(`Redis redis://nattrav:\\*\\*\\*@127.0.0.1:${server.port} is unreachable`));
    assert.ok(!JSON.stringify(proc.events).includes('topsecret'), 'the password is never printed');
  });

  test('rediss:// with a user and password, trusting the server\'s CA through NODE_EXTRA_CA_CERTS', async (t) => {
    if (!(await haveRedis(t))) return;
    const tls = await selfSignedForLoopback(homes[1]);
    const server = await startRedis(['--requirepass', 'tls-secret'], tls);
    closers.push(() => server.stop());
    const url = `rediss://default:tls-secret@127.0.0.1:${server.port}`;
    const untrusted = cli(['broker', '--listen', '127.0.0.1:0', '--redis', url, '--json']);
    assert.equal(await untrusted.exited, 4, 'a certificate nobody vouches for is refused');
    assert.match(String(untrusted.events.find((e) => e.event === 'error')?.message), /self.signed|certificate/i);
    const proc = cli(['broker', '--listen', '127.0.0.1:0', '--redis', url, '--json'], homes[0], { NODE_EXTRA_CA_CERTS: tls.certFile });
    const registry = await proc.waitForEvent('registry', 10_000);
    assert.equal(registry.server, `rediss://default:***@127.0.0.1:${server.port}`);
    await proc.waitForEvent('listening', 10_000);
    proc.child.kill('SIGTERM');
    assert.equal(await proc.exited, 143);
  });

  test('two broker processes on one redis-server: a name held through one cannot be taken through the other', async (t) => {
    if (!(await haveRedis(t))) return;
    const server = await startRedis();
    closers.push(() => server.stop());
    const start = async (): Promise<{ proc: CliProcess; address: string }> => {
      const proc = cli(['broker', '--listen', '127.0.0.1:0', '--redis', server.url, '--json']);
      const registry = await proc.waitForEvent('registry', 10_000);
      assert.deepEqual({ kind: registry.kind, server: registry.server, cluster: registry.cluster }, { kind: 'redis', server: server.url, cluster: false });
      const listening = await proc.waitForEvent('listening', 10_000);
      return { proc, address: `127.0.0.1:${String(listening.port)}` };
    };
    const one = await start();
    const two = await start();
    const holder = cli(['listen', 'nattrav://shared-name', '--broker', one.address, '--echo', '--json'], homes[0]);
    await holder.waitForEvent('registered', 10_000);
    const backend = await connectRedis({ url: server.url });
    closers.push(() => backend.close());
    assert.ok(await backend.registry.get('nattrav://shared-name'), 'the registration is in Redis');
    const thief = cli(['listen', 'nattrav://shared-name', '--broker', two.address, '--echo', '--once', '--json'], homes[1]);
    assert.equal(await thief.exited, 8, 'another key is refused by the other broker');
    assert.match(String(thief.events.find((e) => e.event === 'error')?.message), /registered by another key/);
    holder.child.kill('SIGTERM');
    assert.equal(await holder.exited, 143);
    for (const broker of [one, two]) {
      broker.proc.child.kill('SIGTERM');
      assert.equal(await broker.proc.exited, 143);
    }
  });
});
