/**
 * Issue 9 "A listener that runs for months", in the real-kernel lab: `nattrav listen
 * --echo` runs behind a port-restricted NAT while the broker on the public side is
 * stopped and started again on the same address. The listener reports the loss,
 * registers again within one keepalive interval after the broker is back, a new
 * connection from behind another NAT works (checked once that interval has passed),
 * and the listener never exits on its own.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { CliProcess, startCli as startLabCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab, echoLine, workWithHome, closeLabAndWork } from './helpers.js';

/** The listener's refresh interval (--keepalive), in ms: short, to keep the test short; far under the NATs' 30 s UDP timeout. */
const KEEPALIVE_MS = 4_000;
/** How long the broker stays away, in ms: several failed tries, with the backoff reaching its keepalive cap. */
const DOWNTIME_MS = 3 * KEEPALIVE_MS;
/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** Room for a busy machine when reading events of a process in a namespace, in ms. */
const SLACK_MS = 1_500;
/** Per test: set-up, two connections, the outage, each bounded above. */
const TEST_TIMEOUT_MS = 4 * 60_000;

describe('listener: the broker restarts while `listen --echo` runs behind a NAT', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;

  /** Runs `nattrav ARGS --json` on `host` with HOME in our temp dir (tracked by the lab, killed by PID at close). */
  function startCli(host: LabHost, args: string[]): CliProcess {
    return startLabCli(lab as Lab, host, args, { home });
  }

  async function startBroker(address: string): Promise<CliProcess> {
    const broker = startCli((lab as Lab).broker, ['broker', '--listen', address]);
    await broker.waitForEvent('listening', START_WAIT_MS);
    return broker;
  }

  /** A connect from `host` that sends a line, reads it back from the echoing listener, and exits 0; resolves with its `connected` event. */
  function echoFrom(host: LabHost, brokerAddress: string, uri: string, line: string): Promise<Record<string, unknown>> {
    return echoLine(startCli(host, ['connect', uri, '--broker', brokerAddress]), line, CONNECT_WAIT_MS);
  }

  before(async () => {
    ({ work, home } = await workWithHome('nattrav-lab-restart-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
      ],
    });
  });
  after(() => closeLabAndWork(lab, work));

  test('registration-lost, registered again within one keepalive interval, a new direct connection works, listen never exits', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const address = `${l.broker.address}:${LAB_BROKER_PORT}`;
    const uri = 'nattrav://lab-restart';
    let broker = await startBroker(address);
    const listener = startCli(l.site('b').host, ['listen', uri, '--broker', address, '--echo', '--keepalive', String(KEEPALIVE_MS)]);
    const first = await listener.waitForEvent('registered', START_WAIT_MS);
    assert.equal(first.again, false);
    assert.equal(first.transport, 'udp');
    const before = await echoFrom(l.site('a').host, address, uri, 'before the restart');
    assert.equal(before.path, 'direct');

    broker.child.kill('SIGTERM');
    assert.equal(await broker.exited, 143);
    const lost = await listener.waitForEvent('registration-lost', 2 * KEEPALIVE_MS + START_WAIT_MS);
    assert.equal(lost.code, 'ERR_BROKER_UNREACHABLE', String(lost.message));
    await sleep(DOWNTIME_MS);
    assert.equal(listener.child.exitCode, null, `listen exited while the broker was away: ${listener.stderr.slice(-2000)}`);
    const retries = listener.events.filter((e) => e.event === 'registration-retry');
    assert.ok(retries.length >= 2, `the listener kept trying: ${retries.length} tries reported`);
    assert.ok(retries.every((e) => e.phase === 'lost' && typeof e.retryInMs === 'number' && e.retryInMs <= KEEPALIVE_MS), JSON.stringify(retries));

    broker = await startBroker(address);
    const backAt = Date.now();
    await listener.waitForEvent('registered', KEEPALIVE_MS + SLACK_MS, (e) => e.again === true);
    const againMs = Date.now() - backAt;
    assert.ok(againMs <= KEEPALIVE_MS + SLACK_MS, `registered again ${againMs} ms after the broker was back`);
    // The promise: within one keepalive interval after the broker is back, a new connection works.
    await sleep(Math.max(0, backAt + KEEPALIVE_MS - Date.now()));
    const afterRestart = await echoFrom(l.site('a').host, address, uri, 'after the restart');
    assert.equal(afterRestart.path, 'direct');
    assert.equal(listener.child.exitCode, null, `listen exited: ${listener.stderr.slice(-2000)}`);
    listener.child.kill('SIGTERM');
    assert.equal(await listener.exited, 143);
    broker.child.kill('SIGTERM');
    await broker.exited;
  });
});
