/**
 * Issue 13 "Warm recipient" in the real-kernel lab: a recipient behind a port-restricted NAT
 * holds a standby exchange (peer/standby.ts); an initiator behind another port-restricted NAT
 * connects to it twice. Both connections are direct, the broker answered the recipient down
 * its standby both times (its 'scheduled' events say warm), and it sent no ConnectionRequest
 * for either (it logs 'connection-request' for every one it sends). The second connect shows
 * the recipient opened a new standby after the first was used. Then a recipient that declines
 * (`--no-standby`) is still reached, by ConnectionRequest.
 *
 * Two random symmetric NATs (only the relay connects them): the first connect from a NAT new
 * to the broker is relayed the old way (ConnectionRequest, Join); the second is relayed at once,
 * down the recipient's standby (the broker remembers the initiator's NAT is random), and its
 * bytes cross the broker.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { startCli as startLabCli, type CliEvent, type CliProcess } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { closeLabAndWork, echoLine, requireLab, workWithHome } from './helpers.js';

/** Events of one kind the broker logged for `uri`. */
function brokerEvents(broker: CliProcess, event: string, uri: string): CliEvent[] {
  return broker.events.filter((e) => e.event === event && e['uri'] === uri);
}

/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** A standby is a handshake, one request and a mapping probe after the registration: seconds at most, even on a busy machine. */
const STANDBY_SETTLE_MS = 3_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;

describe('warm recipient: a standby exchange between two port-restricted NATs', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;

  const startCli = (host: LabHost, args: string[]): CliProcess => startLabCli(lab as Lab, host, args, { home });

  before(async () => {
    ({ work, home } = await workWithHome('nattrav-lab-warm-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
      ],
      wanDelayMs: 10,
    });
  });
  after(() => closeLabAndWork(lab, work));

  test('connects direct twice with no ConnectionRequest; a declining recipient is still reached', { timeout: 5 * 60_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const address = `${l.broker.address}:${LAB_BROKER_PORT}`;
    const broker = startCli(l.broker, ['broker', '--listen', address]);
    await broker.waitForEvent('listening', START_WAIT_MS);
    const requests = (uri: string): number => brokerEvents(broker, 'connection-request', uri).length;
    const scheduled = (uri: string): CliEvent[] => brokerEvents(broker, 'scheduled', uri);

    const warm = 'nattrav://warm-lab';
    const listener = startCli(l.site('a').host, ['listen', warm, '--broker', address, '--echo']);
    await listener.waitForEvent('registered', START_WAIT_MS);
    for (let i = 1; i <= 2; i++) {
      await sleep(STANDBY_SETTLE_MS);
      const connected = await echoLine(startCli(l.site('b').host, ['connect', warm, '--broker', address]), `warm ${i}`, CONNECT_WAIT_MS);
      assert.equal(connected['path'], 'direct', `connect ${i} is direct`);
      const events = scheduled(warm);
      assert.equal(events.length, i);
      assert.equal(events[i - 1]?.['warm'], true, `connect ${i} was answered down the recipient's standby`);
      assert.equal(requests(warm), 0, `no ConnectionRequest for connect ${i}`);
    }

    const cold = 'nattrav://cold-lab';
    const declining = startCli(l.site('a').host, ['listen', cold, '--broker', address, '--echo', '--no-standby']);
    await declining.waitForEvent('registered', START_WAIT_MS);
    await sleep(STANDBY_SETTLE_MS);
    const connected = await echoLine(startCli(l.site('b').host, ['connect', cold, '--broker', address]), 'cold', CONNECT_WAIT_MS);
    assert.equal(connected['path'], 'direct');
    assert.equal(scheduled(cold)[0]?.['warm'], false);
    assert.equal(requests(cold), 1, 'the declining recipient was asked by ConnectionRequest');
  });
});

describe('warm recipient: two random symmetric NATs, relayed at once', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;

  const startCli = (host: LabHost, args: string[]): CliProcess => startLabCli(lab as Lab, host, args, { home });

  before(async () => {
    ({ work, home } = await workWithHome('nattrav-lab-warm-relay-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'c', nat: 'symmetric' },
        { name: 'd', nat: 'symmetric' },
      ],
      wanDelayMs: 10,
    });
  });
  after(() => closeLabAndWork(lab, work));

  test('the second connect is relayed down the standby with no ConnectionRequest, and its bytes cross the broker', { timeout: 5 * 60_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const address = `${l.broker.address}:${LAB_BROKER_PORT}`;
    const broker = startCli(l.broker, ['broker', '--listen', address]);
    await broker.waitForEvent('listening', START_WAIT_MS);
    const uri = 'nattrav://warm-relay-lab';
    const listener = startCli(l.site('d').host, ['listen', uri, '--broker', address, '--echo']);
    await listener.waitForEvent('registered', START_WAIT_MS);
    const counter = await l.trafficCounter(l.broker);
    /** Far more than the exchanges, the Hello and TLS: only a relay puts this through the broker. */
    const line = 'r'.repeat(32_768);
    for (let i = 1; i <= 2; i++) {
      await sleep(STANDBY_SETTLE_MS);
      const before = await counter();
      const connected = await echoLine(startCli(l.site('c').host, ['connect', uri, '--broker', address]), line, CONNECT_WAIT_MS);
      const after = await counter();
      assert.equal(connected['path'], 'relay', `connect ${i} is relayed`);
      const crossed = after.bytesIn + after.bytesOut - before.bytesIn - before.bytesOut;
      assert.ok(crossed > 4 * line.length, `connect ${i}: the line crossed the broker both ways (${crossed} bytes)`);
      const events = brokerEvents(broker, 'scheduled', uri);
      assert.equal(events.length, i);
      assert.equal(events[i - 1]?.['strategy'], 'relay');
    }
    const [first, second] = brokerEvents(broker, 'scheduled', uri);
    assert.equal(first?.['warm'], false, 'the first: a NAT new to the broker is probed the old way');
    assert.equal(second?.['warm'], true, 'the second: answered down the standby');
    assert.equal(second?.['initiatorMapping'], 'random');
    assert.equal(brokerEvents(broker, 'connection-request', uri).length, 1, 'one ConnectionRequest, for the first connect only');
  });
});
