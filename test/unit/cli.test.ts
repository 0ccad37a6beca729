/**
 * The `nattrav` command on loopback, as a user runs it: real processes, JSON
 * events on stderr, data on stdout, documented exit codes.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { runDemo, type DemoStep } from '../../src/lab/demo.js';

const children: ChildProcess[] = [];
// Keys of default identities go here, never into the real ~/.nattrav.
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-'));

function cli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  return new CliProcess(child);
}

async function freeBroker(): Promise<{ proc: CliProcess; address: string }> {
  const proc = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
  const listening = await proc.waitForEvent('listening', 10_000);
  return { proc, address: `127.0.0.1:${String(listening.port)}` };
}

describe('nattrav CLI', () => {
  after(() => {
    for (const child of children) if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  });

  test('listen --echo and connect --json: events, data through the peer-to-peer connection', async () => {
    const { proc: broker, address } = await freeBroker();
    const listener = cli(['listen', 'nattrav://echo', '--broker', address, '--echo', '--json']);
    const registered = await listener.waitForEvent('registered', 10_000);
    assert.equal(registered.uri, 'nattrav://echo');
    await broker.waitForEvent('registered', 5_000, (e) => e.uri === 'nattrav://echo');

    const client = cli(['connect', 'nattrav://echo', '--broker', address, '--json', '-v']);
    const connected = await client.waitForEvent('connected', 15_000);
    // -v reports each strategy as it runs.
    const strategies = client.events.filter((e) => e.event === 'strategy').map((e) => `${String(e.strategy)}:${String(e.outcome)}`);
    assert.deepEqual(strategies, ['public:started', 'public:succeeded']);
    assert.equal(connected.path, 'public'); // loopback: the recipient has no NAT
    assert.match(String(connected.local), /^127\.0\.0\.1:\d+$/);
    assert.match(String(connected.remote), /^127\.0\.0\.1:\d+$/);
    assert.equal(typeof connected.setupMs, 'number');
    const accepted = await listener.waitForEvent('accepted', 5_000);
    assert.equal(accepted.remote, connected.local);
    assert.equal(accepted.path, 'public');

    client.write('round trip through nattrav\n');
    await client.waitForStdout('round trip through nattrav\n', 5_000);
    client.child.stdin?.end();
    assert.equal(await client.exited, 0);
    // A stop signal exits with 128 + its number, as the README says.
    listener.child.kill('SIGTERM');
    assert.equal(await listener.exited, 143);
    broker.child.kill('SIGINT');
    assert.equal(await broker.exited, 130);
  });

  test('broker --open says loudly that registrations are not authenticated', async () => {
    const open = cli(['broker', '--listen', '127.0.0.1:0', '--open', '--json']);
    const listening = await open.waitForEvent('listening', 10_000);
    assert.equal(listening.security, 'open');
    const warning = await open.waitForEvent('warning', 5_000);
    assert.match(String(warning.message), /OPEN MODE: registrations are NOT authenticated/);
    open.child.kill('SIGTERM');
    await open.exited;
    const secure = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
    assert.equal((await secure.waitForEvent('listening', 10_000)).security, 'authenticated');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(secure.events.some((e) => e.event === 'warning'), false);
    secure.child.kill('SIGTERM');
    await secure.exited;
  });

  test('exit 3 and "unknown URI" for an unregistered URI', async () => {
    const { proc: broker, address } = await freeBroker();
    const client = cli(['connect', 'nattrav://ghost', '--broker', address]);
    assert.equal(await client.exited, 3);
    assert.match(client.stderr, /unknown URI: nattrav:\/\/ghost/);
    broker.child.kill('SIGTERM');
    await broker.exited;
  });

  test('exit 4 and "broker unreachable" when nothing listens', async () => {
    const { proc: broker, address } = await freeBroker();
    broker.child.kill('SIGTERM');
    await broker.exited;
    const client = cli(['connect', 'nattrav://x', '--broker', address, '--json']);
    const error = await client.waitForEvent('error', 10_000);
    assert.equal(error.code, 'ERR_BROKER_UNREACHABLE');
    assert.match(String(error.message), /broker unreachable/);
    assert.equal(await client.exited, 4);
  });

  test('exit 2 with a message naming the bad option', async () => {
    const badBroker = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:99999']);
    assert.equal(await badBroker.exited, 2);
    assert.match(badBroker.stderr, /broker: port must be an integer from 0 to 65535, got 99999/);
    const zeroPort = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:0']);
    assert.equal(await zeroPort.exited, 2);
    assert.match(zeroPort.stderr, /broker: port must be an integer from 1 to 65535, got 0/);
    const badTimeout = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:1', '--timeout', 'soon']);
    assert.equal(await badTimeout.exited, 2);
    assert.match(badTimeout.stderr, /--timeout.*positive whole number/);
    const missing = cli(['listen', 'nattrav://x']);
    assert.equal(await missing.exited, 2);
    assert.match(missing.stderr, /--broker/);
    const shortMax = cli(['listen', 'nattrav://x', '--broker', '127.0.0.1:1', '--keepalive-max', '1000']);
    assert.equal(await shortMax.exited, 2);
    assert.match(shortMax.stderr, /keepaliveMaxMs: expected an integer of at least 5000 \(the shortest keepalive\), got 1000/);
  });

  test('exit 5 and the phase named when a time limit fires', async () => {
    // A "broker" that accepts the exchange and never answers.
    const silent = createServer((socket) => socket.resume());
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as { port: number }).port;
      const client = cli(['connect', 'nattrav://x', '--broker', `127.0.0.1:${port}`, '--timeout', '300']);
      assert.equal(await client.exited, 5);
      assert.match(client.stderr, /timed out after 300 ms while connecting to nattrav:\/\/x/);
    } finally {
      silent.close();
    }
  });

  test('demo in loopback mode reports each step and the path', async () => {
    const steps: DemoStep[] = [];
    const result = await runDemo({ mode: 'loopback', onStep: (s) => steps.push(s), keyDir: join(home, 'keys') });
    assert.equal(result.mode, 'loopback');
    assert.equal(result.path, 'public');
    assert.deepEqual(
      steps.map((s) => s.step),
      ['broker', 'registered', 'connecting', 'connected', 'data'],
    );
    assert.match(steps.find((s) => s.step === 'data')?.text ?? '', /hello from the recipient/);
  });
});
