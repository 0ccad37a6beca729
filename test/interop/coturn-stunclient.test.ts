/**
 * Interop: coturn's `turnutils_stunclient` (a real third-party STUN client)
 * against our broker must print the correct mapped address: on loopback, and
 * behind a real NAT in the lab, where it must be the NAT's public address.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Lab } from '../../src/lab/lab.js';
import { startLabBroker, LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { startBroker } from '../helpers/loopback.js';
import { requireLab } from '../lab/helpers.js';
import type { BrokerEvent } from '../../src/broker/broker.js';

const run = promisify(execFile);
/** What coturn prints: "UDP reflexive addr: IP:PORT". */
const REFLEXIVE = /UDP reflexive addr: ([\d.]+):(\d+)/;

async function haveStunclient(t: { skip(reason: string): void }): Promise<boolean> {
  try {
    await run('turnutils_stunclient', [], { timeout: 5000 }).catch((err: { code?: unknown }) => {
      if (err.code === 'ENOENT') throw err;
    });
    return true;
  } catch {
    if (process.env.CI) throw new Error('turnutils_stunclient (Debian package coturn) is required in CI; .ci/run installs it');
    t.skip('turnutils_stunclient is not installed (apt-get install coturn)');
    return false;
  }
}

describe('interop: coturn turnutils_stunclient against the nattrav broker', () => {
  const closers: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const close of closers) await close();
  });

  test('on loopback: prints the address and port the broker saw', async (t) => {
    if (!(await haveStunclient(t))) return;
    // coturn's client sends a bare 20-byte Binding: smaller than any answer, so it needs stunCompat.
    const { broker } = await startBroker({ stunCompat: true });
    closers.push(() => broker.close());
    const seen: BrokerEvent[] = [];
    broker.on('event', (e: BrokerEvent) => seen.push(e));
    const { stdout } = await run('turnutils_stunclient', ['-p', String(broker.address().port), '127.0.0.1'], { timeout: 10_000 });
    const match = REFLEXIVE.exec(stdout);
    assert.ok(match, `no reflexive address in: ${stdout}`);
    const binding = seen.find((e) => e.type === 'binding' && e.transport === 'udp');
    assert.ok(binding && binding.type === 'binding');
    assert.equal(match[1], '127.0.0.1');
    assert.equal(Number(match[2]), binding.remote.port, 'the port coturn printed is the one it sent from');
  });

  test('behind a port-restricted NAT: prints the NAT public address', async (t) => {
    if (!(await requireLab(t)) || !(await haveStunclient(t))) return;
    const lab = await Lab.create({ sites: [{ name: 'a', nat: 'port-restricted' }] });
    closers.push(() => lab.close());
    await startLabBroker(lab, ['--stun-compat']);
    const site = lab.site('a');
    const result = await lab.run(site.host, 'turnutils_stunclient', ['-p', String(LAB_BROKER_PORT), lab.broker.address], { timeoutMs: 10_000 });
    const match = REFLEXIVE.exec(result.stdout);
    assert.ok(match, `no reflexive address in: ${result.stdout}`);
    assert.equal(match[1], site.publicAddress);
    assert.notEqual(match[1], site.host.address);
  });
});
