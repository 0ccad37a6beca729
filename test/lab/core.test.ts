/**
 * Issue "Core" in the real-kernel lab: `nattrav connect` and `nattrav listen`
 * processes behind real NATs get a direct TCP connection through a broker on
 * the public side, the remotes they see are the other NAT's public address,
 * and the broker carries no application byte.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab/lab.js';
import { labSupport } from '../../src/lab/support.js';
import { startCli } from '../../src/lab/cli-process.js';
import { runPair, startLabBroker, startLabRecipient, type LabBroker, type PairResult } from '../../src/lab/scenario.js';
import type { LabSite } from '../../src/lab/types.js';
import { requireLab } from './helpers.js';

/** 64 KiB each way: far more than any keepalive traffic the broker sees meanwhile. */
const PAYLOAD_BYTES = 65_536;
/** What the broker may see during the transfer: a few registration refreshes, not the payload. */
const BROKER_BYTES_LIMIT = 4_096;

function hostOf(endpoint: unknown): string {
  return String(endpoint).replace(/:\d+$/, '');
}

describe('core: direct TCP through two real NATs', () => {
  let lab: Lab | undefined;
  let broker: LabBroker;

  before(async () => {
    // Each test decides to skip (laptop) or fail (CI) through requireLab.
    if (!(await labSupport()).ok) return;
    // All LANs use the same private subnet (the lab's default 192.168.1.0/24).
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
        { name: 'c', nat: 'full-cone' },
        { name: 'd', nat: 'none' },
      ],
    });
    broker = await startLabBroker(lab);
  });
  after(async () => {
    await lab?.close();
  });

  async function pair(initiator: LabSite, recipient: LabSite, uri: string): Promise<PairResult> {
    const l = lab as Lab;
    const listener = await startLabRecipient(l, recipient.host, broker, uri);
    return runPair(l, broker, initiator.host, listener, uri, PAYLOAD_BYTES);
  }

  function assertDirect(result: PairResult, initiator: LabSite, recipient: LabSite, path = 'direct'): void {
    const { connected, accepted } = result;
    assert.equal(connected.path, path);
    assert.equal(accepted.path, path);
    // Each side sees the other NAT's public address as its remote: no relay, no broker.
    assert.equal(hostOf(connected.remote), recipient.publicAddress);
    assert.equal(hostOf(accepted.remote), initiator.publicAddress);
    assert.notEqual(hostOf(connected.remote), (lab as Lab).broker.address);
    if (path === 'direct') {
      // Simultaneous open: the remote each side sees is exactly the mapping the broker saw for the other.
      assert.equal(accepted.remote, connected.public);
      assert.equal(connected.remote, accepted.public);
    }
    assert.ok(result.brokerBytesDuringSetup > 0, 'the broker counter saw the exchanges (it counts)');
    assert.ok(
      result.brokerBytesDuringTransfer < BROKER_BYTES_LIMIT,
      `the broker saw ${result.brokerBytesDuringTransfer} bytes while ${2 * PAYLOAD_BYTES} crossed`,
    );
  }

  test('port-restricted -> port-restricted, both LANs on 192.168.1.0/24', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const a = l.site('a');
    const b = l.site('b');
    assert.equal(a.host.address, b.host.address, 'both LAN hosts share one private address');
    assertDirect(await pair(a, b, 'nattrav://pr-b'), a, b);
  });

  test('full-cone -> port-restricted and port-restricted -> full-cone', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    assertDirect(await pair(l.site('c'), l.site('b'), 'nattrav://pr-b2'), l.site('c'), l.site('b'));
    assertDirect(await pair(l.site('a'), l.site('c'), 'nattrav://fc-c'), l.site('a'), l.site('c'));
  });

  test('port-restricted -> recipient with no NAT (it listens: path public)', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    assertDirect(await pair(l.site('a'), l.site('d'), 'nattrav://public-d'), l.site('a'), l.site('d'), 'public');
  });

  test('20 concurrent connects to one recipient all succeed, each its own connection', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const a = l.site('a');
    const b = l.site('b');
    const uri = 'nattrav://echo-b';
    const echo = await startLabRecipient(l, b.host, broker, uri, true);
    const initiators = Array.from({ length: 20 }, () => startCli(l, a.host, ['connect', uri, '--broker', broker.address]));
    const connected = await Promise.all(initiators.map((p) => p.waitForEvent('connected', 60_000)));
    await Promise.all(
      initiators.map(async (p, i) => {
        p.write(`line-from-initiator-${i}\n`);
        await p.waitForStdout(`line-from-initiator-${i}\n`, 20_000);
      }),
    );
    for (const event of connected) {
      assert.equal(event.path, 'direct');
      assert.equal(hostOf(event.remote), b.publicAddress);
    }
    assert.equal(new Set(connected.map((e) => String(e.local))).size, 20, 'twenty distinct local endpoints');
    assert.equal(echo.events.filter((e) => e.event === 'accepted').length, 20);
    for (const p of initiators) p.child.stdin?.end();
  });

  test('connect to an unregistered URI exits 3 with "unknown URI"', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const p = startCli(l, l.site('a').host, ['connect', 'nattrav://nobody', '--broker', broker.address]);
    const error = await p.waitForEvent('error', 20_000);
    assert.equal(error.code, 'ERR_UNKNOWN_URI');
    assert.match(String(error.message), /unknown URI: nattrav:\/\/nobody/);
    assert.equal(await p.exited, 3);
  });
});
