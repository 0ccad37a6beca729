/**
 * Issue 12 "Adaptive keepalive", in the real-kernel lab: site a's NAT router forgets an
 * idle UDP mapping after 30 s (both conntrack UDP timeouts set to 30 s in its namespace,
 * and read back). `netcheck --lifetime` reports the mapping lifetime within 20% of 30 s;
 * `listen --echo` measures it too, in the background after registering, and adapts its
 * keepalive to it. Then the listener stays idle for 5 minutes while an nftables counter in
 * the router counts its UDP packets to the broker: at most one per adapted interval. At
 * the end an initiator behind site b's NAT connects to it and its bytes come back.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { CliProcess, startCli as startLabCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab, workWithHome, closeLabAndWork } from './helpers.js';

/** The NAT's UDP timeout, in seconds (conntrack's default for a flow without replies). */
const NAT_UDP_TIMEOUT_S = 30;
/** How idle the listener stays while its keepalives are counted, in ms (the 5 minutes). */
const IDLE_MS = 5 * 60_000;
/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** The measurement takes about 70 s for a 30 s lifetime; room for a busy machine. */
const MEASURE_WAIT_MS = 4 * 60_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** Whole test: two measurements at once, the idle window, a connection. */
const TEST_TIMEOUT_MS = 14 * 60_000;
/** Resends of one refresh come within this much of it (250 ms doubling, three sends): they count as one keepalive. */
const RESEND_MS = 2_000;
/** The nftables table and counter the test adds to site a's router (gone with the lab's namespaces). */
const COUNT_TABLE = 'nattrav_keepalive';

describe('adaptive keepalive behind a NAT with a 30 s UDP timeout', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;

  /** Runs `nattrav ARGS --json` on `host` with HOME in our temp dir (tracked by the lab, killed by PID at close). */
  function startCli(host: LabHost, args: string[]): CliProcess {
    return startLabCli(lab as Lab, host, args, { home });
  }

  /** The packets the counter in `router` has seen. */
  async function counted(router: LabHost): Promise<number> {
    const { stdout } = await (lab as Lab).run(router, 'nft', ['list', 'counter', 'ip', COUNT_TABLE, 'to_broker']);
    const match = /packets (\d+)/.exec(stdout);
    assert.ok(match !== null, `no packet count in: ${stdout}`);
    return Number(match[1]);
  }

  before(async () => {
    ({ work, home } = await workWithHome('nattrav-lab-keepalive-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
      ],
    });
  });
  after(() => closeLabAndWork(lab, work));

  test('lifetime measured within 20%; 5 idle minutes with at most one keepalive per adapted interval; still reachable', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const site = l.site('a');
    const router = site.router as LabHost;
    // An entry that saw traffic both ways is "assured" and uses the stream timeout: set both.
    const timeouts = ['net.netfilter.nf_conntrack_udp_timeout', 'net.netfilter.nf_conntrack_udp_timeout_stream'];
    await l.run(router, 'sysctl', ['-q', '-w', ...timeouts.map((key) => `${key}=${NAT_UDP_TIMEOUT_S}`)]);
    const readBack = await l.run(router, 'sysctl', ['-n', ...timeouts]);
    assert.deepEqual(readBack.stdout.trim().split('\n'), [String(NAT_UDP_TIMEOUT_S), String(NAT_UDP_TIMEOUT_S)]);

    const address = `${l.broker.address}:${LAB_BROKER_PORT}`;
    await l.run(router, 'nft', ['add', 'table', 'ip', COUNT_TABLE]);
    await l.run(router, 'nft', ['add', 'counter', 'ip', COUNT_TABLE, 'to_broker']);
    await l.run(router, 'nft', ['add', 'chain', 'ip', COUNT_TABLE, 'forward', '{ type filter hook forward priority 0; policy accept; }']);
    await l.run(router, 'nft', ['add', 'rule', 'ip', COUNT_TABLE, 'forward', 'ip', 'saddr', site.host.address, 'ip', 'daddr', l.broker.address, 'udp', 'dport', String(LAB_BROKER_PORT), 'counter', 'name', 'to_broker']);

    // --log-level debug: the broker reports every refresh (with its time), so keepalives are counted from its view too.
    const broker = startCli(l.broker, ['broker', '--listen', address, '--log-level', 'debug']);
    await broker.waitForEvent('listening', START_WAIT_MS);
    const uri = 'nattrav://lab-keepalive';
    const listener = startCli(site.host, ['listen', uri, '--broker', address, '--echo']);
    const registered = await listener.waitForEvent('registered', START_WAIT_MS);
    assert.equal(registered.transport, 'udp');
    // netcheck measures alongside the listener's own background measurement (their sockets differ).
    const netcheck = startCli(site.host, ['netcheck', '--broker', address, '--no-tcp', '--lifetime']);
    const [adapted, netcheckExit] = await Promise.all([listener.waitForEvent('keepalive', MEASURE_WAIT_MS), netcheck.exited]);
    assert.equal(netcheckExit, 0, netcheck.stderr.slice(-2000));
    const report = JSON.parse(netcheck.stdout.trim().split('\n').at(-1) as string) as { lifetime?: { lifetimeMs?: number; upperMs?: number } };
    const truthMs = NAT_UDP_TIMEOUT_S * 1000;
    const netcheckMs = report.lifetime?.lifetimeMs ?? 0;
    assert.ok(Math.abs(netcheckMs - truthMs) <= 0.2 * truthMs, `netcheck measured ${netcheckMs} ms for a ${truthMs} ms timeout: ${netcheck.stdout}`);

    assert.equal(adapted.source, 'measured');
    const mapping = adapted.mappingLifetime as { lifetimeMs: number };
    assert.ok(Math.abs(mapping.lifetimeMs - truthMs) <= 0.2 * truthMs, `listen measured ${mapping.lifetimeMs} ms`);
    const keepaliveMs = adapted.keepaliveMs as number;
    assert.ok(keepaliveMs <= 0.8 * mapping.lifetimeMs && keepaliveMs >= 0.8 * 0.8 * truthMs, `adapted keepalive ${keepaliveMs} ms`);
    assert.equal(adapted.lifetimeMs, 3 * keepaliveMs, 'the registration lifetime follows the interval');

    // The refresh still due on the starting 10 s schedule goes first; then only adapted intervals.
    await sleep(keepaliveMs);
    const windowStart = Date.now();
    const before = await counted(router);
    await sleep(IDLE_MS);
    const packets = (await counted(router)) - before;
    const windowEnd = Date.now();
    // The broker's view: each refresh of our URI in the window; a resent request (within RESEND_MS) is the same keepalive.
    const keepalives: number[] = [];
    for (const e of broker.events) {
      const at = Date.parse(String(e.time));
      if (e.event !== 'registered' || e.uri !== uri || at < windowStart || at > windowEnd) continue;
      if (keepalives.length === 0 || at - (keepalives.at(-1) as number) > RESEND_MS) keepalives.push(at);
    }
    const allowed = Math.ceil(IDLE_MS / keepaliveMs);
    t.diagnostic(`netcheck: ${netcheckMs} ms; listen: ${mapping.lifetimeMs} ms, keepalive ${keepaliveMs} ms; in ${IDLE_MS / 1000} s idle: ${keepalives.length} keepalives at the broker, ${packets} packets at the router (at most ${allowed} keepalives)`);
    assert.ok(keepalives.length >= Math.floor(IDLE_MS / keepaliveMs) - 1, `only ${keepalives.length} keepalives: the listener stopped refreshing`);
    assert.ok(keepalives.length <= allowed, `${keepalives.length} keepalives in ${IDLE_MS / 1000} s idle: more than one per ${keepaliveMs} ms interval (${allowed})`);
    for (let i = 1; i < keepalives.length; i++) {
      const gap = (keepalives[i] as number) - (keepalives[i - 1] as number);
      assert.ok(gap >= keepaliveMs - RESEND_MS, `two keepalives ${gap} ms apart, under the ${keepaliveMs} ms interval`);
    }
    // The router saw them (and at most the two resends a refresh may have).
    assert.ok(packets >= keepalives.length && packets <= 3 * keepalives.length, `${packets} packets at the router for ${keepalives.length} keepalives`);
    assert.equal(listener.events.some((e) => e.event === 'registration-lost'), false, listener.stderr.slice(-2000));

    const client = startCli(l.site('b').host, ['connect', uri, '--broker', address]);
    await client.waitForEvent('connected', CONNECT_WAIT_MS);
    client.write('still here\n');
    await client.waitForStdout('still here\n', CONNECT_WAIT_MS);
    client.child.stdin?.end();
    assert.equal(await client.exited, 0, client.stderr.slice(-2000));
    listener.child.kill('SIGTERM');
    assert.equal(await listener.exited, 143);
    broker.child.kill('SIGTERM');
    await broker.exited;
  });
});
