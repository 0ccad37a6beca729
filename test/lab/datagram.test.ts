/**
 * Issue 12 item 1 "Datagram channels" in the real-kernel lab: `nattrav listen --udp --echo`
 * and `nattrav connect --udp` behind real NATs. A representative set of NAT pairs covers
 * every UDP strategy the broker plans (lan, public, reversal, direct, predicted, birthday, relay):
 * the channel takes the planned path; a direct one ends at the other site's public (or,
 * on one LAN, private) address and moves no datagram through the broker; 10,000 lines
 * go out as datagrams and all 10,000 come back (10,000 each way); and datagrams a third
 * public host sends to both peers' channel endpoints are never delivered (the channel's
 * own counters show them dropped where no NAT filtered them first). A site that blocks
 * UDP altogether still gets its channel, through the relay.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCli, type CliEvent, type CliProcess } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { startLabBroker, type LabBroker } from '../../src/lab/scenario.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab } from './helpers.js';

/** Datagrams each way. */
const COUNT = 10_000;
/** Lines written ahead of their echoes at most: well within the sockets' buffers. */
const WINDOW = 200;
/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** One window's echoes on a busy machine: generous, never asserted as a speed. */
const ECHO_WAIT_MS = 20_000;
/** What the broker host may carry while a direct channel moves 2 x 10,000 datagrams (about 1.4 MB): registration refreshes only. */
const DIRECT_BROKER_BYTES_LIMIT = 50_000;

interface Pair {
  readonly initiator: () => LabHost;
  readonly recipient: () => LabHost;
  readonly want: 'lan' | 'public' | 'reversal' | 'direct' | 'predicted' | 'birthday' | 'relay';
  /** Where the initiator must see the recipient: its site's public address, or on one LAN its own. */
  readonly remote: () => string;
  /** Sides with no NAT filtering in front of them: a stranger's datagram reaches the channel, which must count it dropped. */
  readonly unfiltered: ReadonlyArray<'initiator' | 'recipient'>;
}

function endpointHost(endpoint: unknown): string {
  return String(endpoint).replace(/:\d+$/, '');
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Sends `text` as UDP datagrams from `host` to each endpoint (three copies each), with node inside the namespace. */
async function strangerSends(lab: Lab, host: LabHost, endpoints: string[], text: string): Promise<void> {
  const script = `const s=require('node:dgram').createSocket('udp4');const t=${JSON.stringify(endpoints)};let n=0;for(const e of t){const i=e.lastIndexOf(':');for(let k=0;k<3;k++){n++;s.send(${JSON.stringify(text)},Number(e.slice(i+1)),e.slice(0,i),()=>{if(--n===0)s.close();});}}`;
  await lab.run(host, process.execPath, ['-e', script], { timeoutMs: 10_000 });
}

describe('datagram channels across NAT pairs', () => {
  let lab: Lab | undefined;
  let broker: LabBroker | undefined;
  const processes: CliProcess[] = [];
  after(async () => {
    for (const p of processes) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await lab?.close();
  });

  test('every UDP strategy: the planned path, 10,000 datagrams each way, a stranger never heard', { timeout: 6 * 60_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const built = await Lab.create({
      sites: [
        { name: 'pr1', nat: 'port-restricted' },
        { name: 'pr2', nat: 'port-restricted' },
        { name: 'open1', nat: 'none' },
        { name: 'fc', nat: 'full-cone' },
        { name: 'rc', nat: 'restricted-cone' },
        { name: 'seq', nat: 'symmetric-sequential' },
        { name: 'sym1', nat: 'symmetric' },
        { name: 'sym2', nat: 'symmetric' },
        { name: 'office', nat: 'port-restricted', hosts: 2 },
        { name: 'noudp', nat: 'udp-blocked' },
      ],
      publicHosts: ['stranger'],
    });
    lab = built;
    broker = await startLabBroker(built);
    processes.push(broker.process);
    const site = (name: string) => built.site(name);
    const pairs: Pair[] = [
      { initiator: () => site('pr1').host, recipient: () => site('open1').host, want: 'public', remote: () => site('open1').publicAddress, unfiltered: ['recipient'] },
      { initiator: () => site('open1').host, recipient: () => site('pr2').host, want: 'reversal', remote: () => site('pr2').publicAddress, unfiltered: ['initiator'] },
      { initiator: () => site('pr1').host, recipient: () => site('pr2').host, want: 'direct', remote: () => site('pr2').publicAddress, unfiltered: [] },
      { initiator: () => site('fc').host, recipient: () => site('rc').host, want: 'direct', remote: () => site('rc').publicAddress, unfiltered: ['initiator'] },
      { initiator: () => site('seq').host, recipient: () => site('pr2').host, want: 'predicted', remote: () => site('pr2').publicAddress, unfiltered: [] },
      { initiator: () => site('pr1').host, recipient: () => site('seq').host, want: 'predicted', remote: () => site('seq').publicAddress, unfiltered: [] },
      { initiator: () => site('office').hosts[0] as LabHost, recipient: () => site('office').hosts[1] as LabHost, want: 'lan', remote: () => (site('office').hosts[1] as LabHost).address, unfiltered: [] },
      { initiator: () => site('sym1').host, recipient: () => site('pr2').host, want: 'birthday', remote: () => site('pr2').publicAddress, unfiltered: [] },
      { initiator: () => site('pr1').host, recipient: () => site('sym2').host, want: 'birthday', remote: () => site('sym2').publicAddress, unfiltered: [] },
      { initiator: () => site('sym1').host, recipient: () => site('sym2').host, want: 'relay', remote: () => built.broker.address, unfiltered: [] },
      // No UDP at all at the recipient's site: its Bindings go unanswered, so the broker can only relay (over TCP).
      { initiator: () => site('pr1').host, recipient: () => site('noudp').host, want: 'relay', remote: () => built.broker.address, unfiltered: [] },
    ];
    const problems: string[] = [];
    for (const [n, pair] of pairs.entries()) {
      const label = `${pair.initiator().name} -> ${pair.recipient().name} (${pair.want})`;
      try {
        await runPair(built, broker, pair, `nattrav://dgram-${n}-${pair.want}`, processes);
        t.diagnostic(`${label}: ok`);
      } catch (err) {
        problems.push(`${label}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    assert.deepEqual(problems, [], problems.join('\n'));
  });
});

async function runPair(lab: Lab, broker: LabBroker, pair: Pair, uri: string, processes: CliProcess[]): Promise<void> {
  const listener = startCli(lab, pair.recipient(), ['listen', uri, '--udp', '--echo', '--broker', broker.address, '--json']);
  processes.push(listener);
  try {
    await listener.waitForEvent('registered', START_WAIT_MS);
    const initiator = startCli(lab, pair.initiator(), ['connect', uri, '--udp', '--broker', broker.address, '--json', '-v']);
    processes.push(initiator);
    initiator.child.stdin?.on('error', () => undefined);
    const connected = await initiator.waitForEvent('connected', CONNECT_WAIT_MS);
    const accepted = await listener.waitForEvent('accepted', START_WAIT_MS);
    assert.equal(connected.path, pair.want, `path: ${JSON.stringify(connected)}`);
    assert.equal(accepted.path, pair.want);
    assert.equal(endpointHost(connected.remote), pair.remote(), `the initiator's channel ends at ${String(connected.remote)}`);

    const counter = await lab.trafficCounter(lab.broker);
    const before = await counter();
    for (let sent = 0; sent < COUNT; ) {
      const batch = Math.min(WINDOW / 2, COUNT - sent);
      let lines = '';
      for (let k = 0; k < batch; k++) lines += `d${sent + k}\n`;
      initiator.write(lines);
      sent += batch;
      await waitFor(() => countLines(initiator.stdout) >= sent - WINDOW / 2, ECHO_WAIT_MS, `echoes of ${sent - WINDOW / 2} datagrams`);
    }
    await waitFor(() => countLines(initiator.stdout) >= COUNT, ECHO_WAIT_MS, `all ${COUNT} echoes`);
    const afterTransfer = await counter();
    const brokerBytes = afterTransfer.bytesIn + afterTransfer.bytesOut - before.bytesIn - before.bytesOut;
    const echoed = new Set(initiator.stdout.split('\n').filter((l) => l !== ''));
    assert.equal(echoed.size, COUNT, 'every datagram came back once');
    for (let i = 0; i < COUNT; i += 997) assert.ok(echoed.has(`d${i}`), `d${i} came back`);
    if (pair.want === 'relay') assert.ok(brokerBytes > COUNT * 2 * 30, `a relayed channel crosses the broker (${brokerBytes} bytes)`);
    else assert.ok(brokerBytes < DIRECT_BROKER_BYTES_LIMIT, `no datagram crossed the broker (${brokerBytes} bytes)`);

    // A stranger on the internet sends to both channel endpoints; nothing of it reaches the application.
    const stranger = lab.publicHost('stranger');
    await strangerSends(lab, stranger, [String(connected.public), String(accepted.public)], 'INTRUDER');
    initiator.write('last\n');
    await waitFor(() => initiator.stdout.includes('last\n'), ECHO_WAIT_MS, 'the last echo');
    await sleep(300);
    assert.ok(!initiator.stdout.includes('INTRUDER') && !listener.stdout.includes('INTRUDER'), 'a stranger datagram was delivered');
    initiator.child.stdin?.end();
    assert.equal(await initiator.exited, 0, initiator.stderr);
    const closedHere = initiator.events.find((e) => e.event === 'closed');
    const closedThere = await listener.waitForEvent('closed', START_WAIT_MS);
    const foreign = (event: CliEvent | undefined): number => Number((event?.dropped as { foreign?: number } | undefined)?.foreign ?? 0);
    if (pair.unfiltered.includes('initiator')) assert.ok(foreign(closedHere) >= 1, `the initiator counted the stranger dropped: ${JSON.stringify(closedHere)}`);
    if (pair.unfiltered.includes('recipient')) assert.ok(foreign(closedThere) >= 1, `the recipient counted the stranger dropped: ${JSON.stringify(closedThere)}`);
  } finally {
    listener.child.kill('SIGTERM');
    await listener.exited;
  }
}
