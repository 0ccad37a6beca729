/**
 * `--socks5` and the SOCKS5 environment on the command line, against the in-test proxy:
 * the proxy is reported without its password, wrong credentials exit 12 (ERR_PROXY), a
 * bad value exits 2, and ALL_PROXY is read when the flag is not given.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { startTestSocks5, type TestSocks5 } from '../helpers/socks5-server.js';

const children: ChildProcess[] = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-socks5-'));
/** Proxy variables of the machine running the tests must not leak into the commands. */
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(all|socks|no)_proxy$/i.test(name)));

function cli(args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...cleanEnv, HOME: home, ...env } });
  children.push(child);
  return new CliProcess(child);
}

describe('nattrav --socks5', () => {
  const proxies: TestSocks5[] = [];
  after(async () => {
    for (const child of children) if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    for (const proxy of proxies) await proxy.close();
    rmSync(home, { recursive: true, force: true });
  });

  test('listen and connect through the proxy: reported without the password, data through', async () => {
    const proxy = await startTestSocks5({ username: 'alice', password: 'hunter2' });
    proxies.push(proxy);
    const broker = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
    const address = `127.0.0.1:${String((await broker.waitForEvent('listening', 10_000)).port)}`;
    const socks5 = `alice:hunter2@127.0.0.1:${proxy.port}`;
    const listener = cli(['listen', 'nattrav://socks-cli', '--broker', address, '--echo', '--no-tls', '--socks5', socks5, '--json']);
    const reported = await listener.waitForEvent('proxy', 10_000);
    assert.equal(reported.proxy, `alice@127.0.0.1:${proxy.port}`);
    assert.equal((await listener.waitForEvent('registered', 10_000)).transport, 'tcp');
    // The listener holds a BIND at the proxy, reported before it registered.
    const bound = listener.events.find((e) => e.event === 'socks5-bind');
    assert.deepEqual(bound, { event: 'socks5-bind', type: 'bound', bound: `127.0.0.1:${proxy.boundPorts[0]}` });
    // The connector takes the proxy from the environment.
    const client = cli(['connect', 'nattrav://socks-cli', '--broker', address, '--no-tls', '--json'], { ALL_PROXY: `socks5://${socks5}` });
    assert.match(String((await client.waitForEvent('proxy', 10_000)).source), /environment/);
    assert.equal((await client.waitForEvent('connected', 20_000)).path, 'socks5-bind');
    const accepted = await listener.waitForEvent('socks5-bind', 10_000, (e) => e.type === 'accepted');
    assert.match(String(accepted.from), /^127\.0\.0\.1:\d+$/);
    client.write('through the proxy\n');
    await client.waitForStdout('through the proxy\n', 10_000);
    client.child.stdin?.end();
    assert.equal(await client.exited, 0);
    assert.ok(!listener.stderr.includes('hunter2') && !client.stderr.includes('hunter2'), 'the password was printed');
    assert.ok(proxy.targets.includes(address), 'the broker was reached through the proxy');
  });

  test('wrong credentials exit 12 with ERR_PROXY; a bad --socks5 exits 2 naming it', async () => {
    const proxy = await startTestSocks5({ username: 'alice', password: 'hunter2' });
    proxies.push(proxy);
    const wrong = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:3478', '--no-tls', '--socks5', `alice:not-the-secret@127.0.0.1:${proxy.port}`, '--json']);
    assert.equal(await wrong.exited, 12, wrong.stderr);
    const error = wrong.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_PROXY');
    assert.match(String(error?.message), /refused our username\/password/);
    assert.ok(!wrong.stderr.includes('not-the-secret'));
    const bad = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:3478', '--socks5', 'alice:secret@nowhere', '--json']);
    assert.equal(await bad.exited, 2, bad.stderr);
    assert.match(bad.stderr, /--socks5: no HOST:PORT/);
    assert.ok(!bad.stderr.includes('secret@'), 'the password was printed');
  });

  test('nattrav config shows a --socks5 set by NATTRAV_SOCKS5 with the password masked', async () => {
    const config = cli(['config'], { NATTRAV_SOCKS5: 'alice:hunter2@proxy:1080' });
    assert.equal(await config.exited, 0, config.stderr);
    assert.match(config.stdout, /--socks5 +alice:\*\*\*@proxy:1080 +env NATTRAV_SOCKS5/);
    assert.ok(!config.stdout.includes('hunter2'));
  });
});
