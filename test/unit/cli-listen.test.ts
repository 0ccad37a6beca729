/**
 * `nattrav listen` as a long-running service, with real processes on loopback: it
 * waits for a broker that is not up yet, keeps running across the broker's restart
 * and reports each step; `--once` keeps the old fail-fast exit; `--allow` refuses
 * initiators with other identities, and both sides say so.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createBroker } from '../../src/broker/broker.js';
import type { CliProcess } from '../../src/lab/cli-process.js';
import { cliHome } from '../helpers/cli-home.js';
import { newSelfCertifyingIdentity, saveIdentity } from '../../src/security/index.js';

/** The listener's refresh interval in these tests, in ms. */
const KEEPALIVE_MS = 1_000;
/** Room for a busy machine on top of the keepalive interval, in ms. */
const SLACK_MS = 2_000;

const { home, cli, cleanUp } = cliHome('nattrav-cli-listen-');

/** A port where a broker can listen (and its port + 1), found by starting one and closing it. */
async function freeBrokerPort(): Promise<number> {
  const probe = createBroker({ host: '127.0.0.1', port: 0 });
  const { port } = await probe.listen();
  await probe.close();
  return port;
}

async function brokerOn(port: number): Promise<CliProcess> {
  const proc = cli(['broker', '--listen', `127.0.0.1:${port}`, '--json']);
  await proc.waitForEvent('listening', 10_000);
  return proc;
}

async function stop(proc: CliProcess): Promise<number | null> {
  proc.child.kill('SIGTERM');
  return proc.exited;
}

/** Connects to the echoing `uri` and checks the bytes come back. */
async function echoes(address: string, uri: string, extra: string[] = []): Promise<void> {
  const client = cli(['connect', uri, '--broker', address, '--json', '--known-keys', join(home, 'known'), ...extra]);
  await client.waitForEvent('connected', 15_000);
  client.write('ping\n');
  await client.waitForStdout('ping\n', 5_000);
  client.child.stdin?.end();
  assert.equal(await client.exited, 0, client.stderr);
}

describe('nattrav listen as a service', () => {
  after(() => cleanUp());

  test('--once: an unreachable broker at start exits 4 at once, as before', async () => {
    const port = await freeBrokerPort();
    const listen = cli(['listen', 'nattrav://once', '--broker', `127.0.0.1:${port}`, '--once', '--json']);
    const error = await listen.waitForEvent('error', 15_000);
    assert.equal(error.code, 'ERR_BROKER_UNREACHABLE');
    assert.equal(await listen.exited, 4);
    assert.equal(listen.events.some((e) => e.event === 'registration-retry'), false);
  });

  test('without --once: waits for the broker, survives its restart, and never exits on its own', async () => {
    const port = await freeBrokerPort();
    const address = `127.0.0.1:${port}`;
    const uri = 'nattrav://service';
    const listen = cli(['listen', uri, '--broker', address, '--echo', '--keepalive', String(KEEPALIVE_MS), '--json']);
    // No broker yet: each failed try is reported, and the listener keeps going.
    const retry = await listen.waitForEvent('registration-retry', 15_000);
    assert.equal(retry.phase, 'start');
    assert.equal(retry.code, 'ERR_BROKER_UNREACHABLE');
    assert.equal(typeof retry.retryInMs, 'number');
    let broker = await brokerOn(port);
    const first = await listen.waitForEvent('registered', 15_000);
    assert.equal(first.again, false);
    await echoes(address, uri);

    // The broker restarts on the same port.
    assert.equal(await stop(broker), 143);
    const lost = await listen.waitForEvent('registration-lost', KEEPALIVE_MS + 10_000);
    assert.equal(lost.code, 'ERR_BROKER_UNREACHABLE');
    await new Promise((resolve) => setTimeout(resolve, 3 * KEEPALIVE_MS));
    broker = await brokerOn(port);
    const backAt = Date.now();
    await listen.waitForEvent('registered', KEEPALIVE_MS + SLACK_MS, (e) => e.again === true);
    const againMs = Date.now() - backAt;
    assert.ok(againMs <= KEEPALIVE_MS + SLACK_MS, `registered again ${againMs} ms after the broker was back`);
    await echoes(address, uri);
    assert.equal(listen.child.exitCode, null, `listen exited: ${listen.stderr}`);
    const order = listen.events.map((e) => (e.event === 'registered' ? `registered${e.again === true ? '-again' : ''}` : e.event)).filter((e) => e !== 'registration-retry');
    const firstLost = order.indexOf('registration-lost');
    assert.deepEqual([order.indexOf('registered'), firstLost < order.indexOf('registered-again')], [0, true], order.join(' '));
    assert.equal(await stop(listen), 143);
    await stop(broker);
  });

  test('--allow: a listed identity is served; another gets exit 8 with the reason, and the listener reports it', async () => {
    const port = await freeBrokerPort();
    const address = `127.0.0.1:${port}`;
    const broker = await brokerOn(port);
    const friend = await newSelfCertifyingIdentity({ dir: join(home, 'keys') });
    const friendDir = join(home, 'friend');
    await saveIdentity(friendDir, friend);
    const listen = cli(['listen', 'nattrav://guarded', '--broker', address, '--echo', '--allow', friend.uri, '--allow', 'nattrav://ops', '--json']);
    await listen.waitForEvent('registered', 15_000);
    await echoes(address, 'nattrav://guarded', ['--identity', friendDir]);

    const stranger = cli(['connect', 'nattrav://guarded', '--broker', address, '--json', '--known-keys', join(home, 'known')]);
    const error = await stranger.waitForEvent('error', 15_000);
    assert.equal(error.code, 'ERR_NOT_ALLOWED');
    assert.match(String(error.message), /the recipient refused the connection: nattrav:\/\/k-[a-z2-7]{52} is not on the allow-list of nattrav:\/\/guarded/);
    assert.equal(await stranger.exited, 8);
    const rejected = await listen.waitForEvent('connection-rejected', 5_000);
    assert.match(String(rejected.peerUri), /^nattrav:\/\/k-/);
    assert.notEqual(rejected.peerUri, friend.uri);
    assert.equal(await stop(listen), 143);
    await stop(broker);
  });

  test('bad --allow and --keepalive values exit 2 naming the option', async () => {
    const notUri = cli(['listen', 'nattrav://x', '--broker', '127.0.0.1:3478', '--allow', 'alice']);
    assert.equal(await notUri.exited, 2);
    assert.match(notUri.stderr, /--allow "alice": no scheme/);
    const plain = cli(['listen', 'nattrav://x', '--broker', '127.0.0.1:3478', '--allow', 'nattrav://a', '--no-tls']);
    assert.equal(await plain.exited, 2);
    assert.match(plain.stderr, /allow needs TLS.*--no-tls.*--allow/);
    const keepalive = cli(['listen', 'nattrav://x', '--broker', '127.0.0.1:3478', '--keepalive', '0']);
    assert.equal(await keepalive.exited, 2);
    assert.match(keepalive.stderr, /--keepalive.*positive whole number/);
  });
});
