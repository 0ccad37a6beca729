/**
 * Issue 12 item 2 in the real-kernel lab, dual-stack: peers on sites with IPv4 behind
 * port-restricted NATs and IPv6 behind stateful firewalls, given the broker's address of each
 * family, race IPv6 against IPv4 (RFC 8305). Where both paths work the connection runs direct
 * over IPv6 (family 6, the peer's own IPv6 address); where a router blocks IPv6 between the
 * sites (with IPv6 to the broker passing, or not) it runs direct over IPv4 through the NATs.
 * Paths and families are asserted, not timings (the setup time is bench/lab-ipv6.ts's).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { CliEvent } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { overBothFamilies, runPair, startLabBroker, startLabRecipient, type PairResult } from '../../src/lab/scenario.js';
import type { LabSite } from '../../src/lab/types.js';
import { endpointHost, requireLab } from './helpers.js';

/** Application bytes each way. */
const PAYLOAD_BYTES = 64 * 1024;
/** The broker host may see keepalives while the payload crosses, never the payload. */
const BROKER_BYTES_LIMIT = 4096;
/** The second family registers right after the first. */
const SECOND_FAMILY_WAIT_MS = 30_000;

describe('dual-stack sites: IPv6 when both paths work, IPv4 when IPv6 is blocked', () => {
  const labs: Lab[] = [];
  after(async () => {
    for (const lab of labs) await lab.close();
  });

  test('each pair connects direct in the family that works', { timeout: 240_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const lab = await Lab.create({
      sites: [
        { name: 'd1', nat: 'port-restricted', ipv6: 'dual' },
        { name: 'd2', nat: 'port-restricted', ipv6: 'dual' },
        { name: 'b1', nat: 'port-restricted', ipv6: 'blocked' },
        { name: 'b2', nat: 'port-restricted', ipv6: 'blocked' },
        { name: 'k1', nat: 'port-restricted', ipv6: 'blocked', ipv6ToBroker: false },
        { name: 'k2', nat: 'port-restricted', ipv6: 'blocked', ipv6ToBroker: false },
      ],
    });
    labs.push(lab);
    // A --broker list with an address of each family makes a peer dual-stack.
    const broker = overBothFamilies(await startLabBroker(lab, [], { dualStack: true }));
    let n = 0;
    const pair = async (from: LabSite, to: LabSite): Promise<PairResult> => {
      const uri = `nattrav://dual-${n++}-${to.name}`;
      const recipient = await startLabRecipient(lab, to.host, broker, uri);
      // Registered over IPv4 first, then over IPv6 too, unless the site's router drops IPv6 to the broker.
      const darkToBroker = to.ipv6 === 'blocked' && !to.ipv6ToBroker;
      if (!darkToBroker) {
        const second = await recipient.waitForEvent('second-family', SECOND_FAMILY_WAIT_MS);
        assert.equal(endpointHost(second.public), to.host.address6, `${to.name} registered its own IPv6 address`);
      }
      const result = await runPair(lab, broker, from.host, recipient, uri, PAYLOAD_BYTES);
      t.diagnostic(`${from.name} -> ${to.name}: ${JSON.stringify(summary(result.connected))}, broker bytes during transfer ${result.brokerBytesDuringTransfer}`);
      assert.ok(result.brokerBytesDuringTransfer < BROKER_BYTES_LIMIT, `${from.name} -> ${to.name}: the broker host carried ${result.brokerBytesDuringTransfer} bytes`);
      if (darkToBroker) assert.ok(!recipient.events.some((e) => e.event === 'second-family'), `${to.name} cannot have registered over IPv6`);
      return result;
    };
    const [d1, d2, b1, b2, k1, k2] = ['d1', 'd2', 'b1', 'b2', 'k1', 'k2'].map((name) => lab.site(name)) as [LabSite, LabSite, LabSite, LabSite, LabSite, LabSite];

    // Both paths work: IPv6, direct, each side sees the other's own IPv6 address.
    const v6 = await pair(d1, d2);
    assert.equal(v6.connected.family, 6, 'dual-stack on both sides: IPv6 wins');
    assert.equal(v6.connected.path, 'direct');
    assert.equal(endpointHost(v6.accepted.remote), d1.host.address6);
    assert.equal(endpointHost(v6.connected.remote), d2.host.address6);

    // IPv6 blocked on one side or both (the broker still reachable over IPv6, or not): IPv4,
    // direct through the two port-restricted NATs, each side seeing the other's public address.
    for (const [from, to] of [[b1, b2], [d1, b2], [b1, d2], [k1, d2], [d1, k2]] as const) {
      const v4 = await pair(from, to);
      assert.equal(v4.connected.family, 4, `${from.name} -> ${to.name}: IPv6 is blocked, IPv4 carries it`);
      assert.equal(v4.connected.path, 'direct', `${from.name} -> ${to.name}`);
      assert.equal(endpointHost(v4.accepted.remote), from.publicAddress, `${from.name} -> ${to.name}`);
    }
  });
});

/** The fields of a `connected` event worth a diagnostic line. */
function summary(event: CliEvent): Record<string, unknown> {
  return { path: event.path, family: event.family, remote: event.remote, setupMs: event.setupMs, trace: event.trace };
}
