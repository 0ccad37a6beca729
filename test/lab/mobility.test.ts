/**
 * Issue 12 "Mobility", in the real-kernel lab: `nattrav listen --echo` runs on a laptop behind
 * NAT A (site a). The laptop is carried to the office: its LAN link is moved onto site b's LAN
 * (another router namespace, another NAT), and its address changes. Within one keepalive
 * interval the listener has registered again from there (`moved`, with NAT B's public address:
 * what the broker now holds), and an initiator behind a third NAT connects to it under the same
 * URI and reaches NAT B's public address. Connections open across the move are reported broken
 * with a clear error (a piped `listen` exits 9); the echoing listener never exits.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CliProcess, startCli as startLabCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab, echoLine, workWithHome, closeLabAndWork } from './helpers.js';

/** The listener's refresh interval (--keepalive), in ms: the promise is "again within one of these". */
const KEEPALIVE_MS = 4_000;
/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** Room for a busy machine when reading events of a process in a namespace, in ms. */
const SLACK_MS = 2_000;
/** Set-up, two connections and a move, each bounded above. */
const TEST_TIMEOUT_MS = 4 * 60_000;

describe('mobility: the listener\'s host moves from behind NAT A to behind NAT B', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;

  /** Runs `nattrav ARGS --json` on `host` with HOME in our temp dir (tracked by the lab, killed by PID at close). */
  function startCli(host: LabHost, args: string[]): CliProcess {
    return startLabCli(lab as Lab, host, args, { home });
  }

  /** A connect from `host` that sends a line, reads it back from the echoing listener, and exits 0; resolves with its `connected` event. */
  function echoFrom(host: LabHost, broker: string, uri: string, line: string): Promise<Record<string, unknown>> {
    return echoLine(startCli(host, ['connect', uri, '--broker', broker]), line, CONNECT_WAIT_MS);
  }

  before(async () => {
    ({ work, home } = await workWithHome('nattrav-lab-mobility-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        // The office: a LAN bridge the laptop can be plugged into.
        { name: 'b', nat: 'port-restricted', hosts: 2, lanSubnet: '192.168.2.0/24' },
        { name: 'c', nat: 'port-restricted', lanSubnet: '192.168.3.0/24' },
      ],
    });
  });
  after(() => closeLabAndWork(lab, work));

  test('registered again from NAT B within one keepalive interval; an initiator reaches it there under the same URI', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const broker = `${l.broker.address}:${LAB_BROKER_PORT}`;
    const uri = 'nattrav://lab-mobile';
    const brokerProcess = startCli(l.broker, ['broker', '--listen', broker]);
    await brokerProcess.waitForEvent('listening', START_WAIT_MS);
    const laptop = l.site('a').host;
    const listener = startCli(laptop, ['listen', uri, '--broker', broker, '--echo', '--keepalive', String(KEEPALIVE_MS)]);
    const first = await listener.waitForEvent('registered', START_WAIT_MS);
    assert.equal(String(first.public).split(':')[0], l.site('a').publicAddress);
    const before = await echoFrom(l.site('c').host, broker, uri, 'at home');
    assert.equal(before.path, 'direct');
    assert.equal(String(before.remote).split(':')[0], l.site('a').publicAddress);

    // Connections that stay open across the move: they cannot follow the laptop.
    const open = startCli(l.site('c').host, ['connect', uri, '--broker', broker]);
    await open.waitForEvent('connected', CONNECT_WAIT_MS);
    open.write('across the move\n');
    await open.waitForStdout('across the move\n', CONNECT_WAIT_MS);
    // One piped to a plain `listen` (its registration is withdrawn once the connection came): it ends with exit 9.
    const piped = startCli(laptop, ['listen', 'nattrav://lab-mobile-pipe', '--broker', broker]);
    await piped.waitForEvent('registered', START_WAIT_MS);
    const pipeClient = startCli(l.site('c').host, ['connect', 'nattrav://lab-mobile-pipe', '--broker', broker]);
    await pipeClient.waitForEvent('connected', CONNECT_WAIT_MS);
    pipeClient.write('piped across the move\n');
    await piped.waitForStdout('piped across the move\n', CONNECT_WAIT_MS);

    const movedAt = Date.now();
    const carried = await l.moveHost(laptop, 'b');
    assert.notEqual(carried.address, laptop.address);
    const moved = await listener.waitForEvent('moved', KEEPALIVE_MS + SLACK_MS + START_WAIT_MS);
    const movedMs = Date.now() - movedAt;
    assert.ok(movedMs <= KEEPALIVE_MS + SLACK_MS, `registered from the new place ${movedMs} ms after the move`);
    assert.equal(moved.reason, 'local-addresses');
    // What the broker answered (and holds now): NAT B's public address.
    assert.equal(String(moved.to).split(':')[0], l.site('b').publicAddress, JSON.stringify(moved));
    assert.equal(String(moved.from).split(':')[0], l.site('a').publicAddress);
    assert.deepEqual(moved.localTo, [carried.address]);

    const afterMove = await echoFrom(l.site('c').host, broker, uri, 'at the office');
    assert.equal(String(afterMove.remote).split(':')[0], l.site('b').publicAddress, 'the initiator reached NAT B');
    assert.equal(afterMove.path, 'direct');

    // The connection from before the move was reported broken on the laptop, naming why.
    const broken = await listener.waitForEvent('closed', SLACK_MS + START_WAIT_MS, (e) => typeof e.message === 'string' && /went away/.test(e.message));
    assert.match(String(broken.message), new RegExp(`local address ${laptop.address.replace(/\./g, '\\.')} went away`));
    assert.equal(await piped.exited, 9, piped.stderr.slice(-2000));
    const pipedError = piped.events.find((e) => e.event === 'error');
    assert.equal(pipedError?.code, 'ERR_CONNECTION_BROKEN', JSON.stringify(pipedError));
    assert.equal(listener.child.exitCode, null, `listen exited: ${listener.stderr.slice(-2000)}`);
    pipeClient.child.kill('SIGTERM');
    await pipeClient.exited;
    open.child.kill('SIGTERM');
    await open.exited;
    listener.child.kill('SIGTERM');
    assert.equal(await listener.exited, 143);
    brokerProcess.child.kill('SIGTERM');
    await brokerProcess.exited;
  });
});
