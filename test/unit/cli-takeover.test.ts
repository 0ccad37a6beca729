/**
 * Two `nattrav listen` processes with one key (the same HOME keeps the same key for a URI), on
 * loopback: the second exits 2 naming the URI; with --takeover it wins, and the first exits 13
 * saying it was taken over; a listener killed with SIGKILL and started again gets its URI back
 * at once, not after the registration's lifetime. Against a broker in one process and one with --workers.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CliProcess } from '../../src/lab/cli-process.js';
import { cliHome } from '../helpers/cli-home.js';

/** A long refresh interval: its lifetime (three of these) is what a restart must not wait for. */
const KEEPALIVE_MS = 20_000;
/** Node start-up and one registration with an instance check, on a busy machine. */
const START_WAIT_MS = 15_000;

const { home, cli, cleanUp } = cliHome('nattrav-cli-takeover-');

/** Connects to the echoing `uri` and checks the bytes come back. */
async function echoes(address: string, uri: string): Promise<void> {
  const client = cli(['connect', uri, '--broker', address, '--json', '--known-keys', join(home, 'known')]);
  await client.waitForEvent('connected', START_WAIT_MS);
  client.write('ping\n');
  await client.waitForStdout('ping\n', 5_000);
  client.child.stdin?.end();
  assert.equal(await client.exited, 0, client.stderr);
}

for (const workers of [[], ['--workers', '2']]) describe(`nattrav listen: one key, two processes (broker ${workers.join(' ') || 'in one process'})`, () => {
  let broker: CliProcess;
  let address: string;
  before(async () => {
    // With --workers, answers and retransmitted proofs land on any worker (broker/instances.ts routes them).
    broker = cli(['broker', '--listen', '127.0.0.1:0', '--json', ...workers]);
    const listening = await broker.waitForEvent('listening', START_WAIT_MS);
    address = `127.0.0.1:${String(listening.port)}`;
  });
  after(async () => {
    broker.child.kill('SIGTERM');
    await broker.exited;
  });

  function listen(uri: string, extra: string[] = []): CliProcess {
    return cli(['listen', uri, '--broker', address, '--echo', '--keepalive', String(KEEPALIVE_MS), '--json', ...extra]);
  }

  test('the second exits 2 naming the URI; with --takeover it wins and the first exits 13', { timeout: 60_000 }, async () => {
    const uri = `nattrav://twin${workers.length}`;
    const first = listen(uri);
    await first.waitForEvent('registered', START_WAIT_MS);
    const second = listen(uri);
    const refused = await second.waitForEvent('error', START_WAIT_MS);
    assert.equal(refused.code, 'ERR_URI_HELD_BY_INSTANCE');
    assert.match(String(refused.message), new RegExp(`${uri} is held by another live instance of this key`));
    assert.match(String(refused.message), /--takeover/);
    assert.equal(await second.exited, 2);
    await echoes(address, uri);
    assert.equal(first.child.exitCode, null, 'the first keeps running');

    const third = listen(uri, ['--takeover']);
    await third.waitForEvent('registered', START_WAIT_MS);
    const told = await first.waitForEvent('error', START_WAIT_MS);
    assert.equal(told.code, 'ERR_TAKEN_OVER');
    assert.match(String(told.message), new RegExp(`${uri} was taken over by another process holding the same key`));
    assert.equal(await first.exited, 13);
    await echoes(address, uri);
    assert.equal(third.child.exitCode, null);
    third.child.kill('SIGTERM');
    assert.equal(await third.exited, 143);
  });

  test('a listener killed with SIGKILL and started again registers at once, not after its lifetime', { timeout: 60_000 }, async () => {
    const uri = `nattrav://phoenix${workers.length}`;
    const crashed = listen(uri);
    await crashed.waitForEvent('registered', START_WAIT_MS);
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    const started = Date.now();
    const restarted = listen(uri);
    await restarted.waitForEvent('registered', START_WAIT_MS);
    const tookMs = Date.now() - started;
    // Its old registration lives for 3 keepalives (60 s): the broker found nobody answering instead.
    assert.ok(tookMs < KEEPALIVE_MS, `registered ${tookMs} ms after the restart`);
    await echoes(address, uri);
    restarted.child.kill('SIGTERM');
    assert.equal(await restarted.exited, 143);
  });
});

after(() => cleanUp());
