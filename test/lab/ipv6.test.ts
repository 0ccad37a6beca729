/**
 * Issue 12 item 2 in the real-kernel lab: two peers on IPv6-only sites, each behind a
 * stateful firewall that drops unsolicited inbound traffic, connect directly over IPv6 through
 * a broker reached over IPv6: the simultaneous open opens both firewalls. Proven by what each
 * side saw of the other (the peer's own IPv6 address, not the broker's), by the broker host's
 * traffic counter (IPv4 and IPv6) while the payload crossed, and by the payload arriving intact
 * both ways (runPair compares it byte for byte).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Lab } from '../../src/lab/lab.js';
import { overIpv6, runPair, startLabBroker, startLabRecipient } from '../../src/lab/scenario.js';
import { endpointHost as hostOf, requireLab } from './helpers.js';

/** Application bytes each way. */
const PAYLOAD_BYTES = 256 * 1024;
/** The broker host may see keepalives while the payload crosses, never the payload. */
const BROKER_BYTES_LIMIT = 4096;

describe('IPv6-only sites behind stateful firewalls', () => {
  const labs: Lab[] = [];
  after(async () => {
    for (const lab of labs) await lab.close();
  });

  test('two peers connect directly over IPv6 through the broker on IPv6; no byte crosses the broker', { timeout: 120_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const lab = await Lab.create({ sites: [{ name: 'a', nat: 'none', ipv6: 'only' }, { name: 'b', nat: 'none', ipv6: 'only' }] });
    labs.push(lab);
    const a = lab.site('a').host;
    const b = lab.site('b').host;
    const broker = overIpv6(await startLabBroker(lab, [], { dualStack: true }));
    assert.equal(broker.address, `[${lab.broker.address6 ?? ''}]:3478`);

    const uri = 'nattrav://v6-only-b';
    const recipient = await startLabRecipient(lab, b, broker, uri);
    const registered = recipient.events.find((event) => event.event === 'registered');
    t.diagnostic(`registered: ${JSON.stringify(registered)}`);
    const result = await runPair(lab, broker, a, recipient, uri, PAYLOAD_BYTES);
    t.diagnostic(`connected: ${JSON.stringify(result.connected)}`);
    t.diagnostic(`broker bytes: setup ${result.brokerBytesDuringSetup}, transfer ${result.brokerBytesDuringTransfer}`);

    assert.equal(result.connected.path, 'direct', 'simultaneous open through both firewalls');
    assert.equal(result.connected.family, 6);
    assert.equal(result.accepted.path, 'direct');
    // Planned first (src/nat/plan.ts): a listener behind its firewall ('public') would never see the SYN.
    assert.equal(result.connected.attempts, 1, `one attempt: ${JSON.stringify(result.connected.trace)}`);
    assert.equal(hostOf(result.accepted.remote), a.address6, 'the recipient saw the initiator\'s own IPv6 address, not the broker\'s');
    assert.equal(hostOf(result.connected.remote), b.address6, 'the initiator reached the recipient\'s own IPv6 address');
    assert.ok(result.brokerBytesDuringSetup > 0, 'the broker counter saw the exchanges over IPv6 (it counts IPv6)');
    assert.ok(result.brokerBytesDuringTransfer < BROKER_BYTES_LIMIT, `the broker host carried ${result.brokerBytesDuringTransfer} bytes while ${2 * PAYLOAD_BYTES} crossed`);
  });
});
