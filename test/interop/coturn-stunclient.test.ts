/**
 * Interop: coturn's `turnutils_stunclient` (a real third-party STUN client,
 * whose first request is a bare 20-byte Binding) against a broker started with
 * no flags must print the correct mapped address: on loopback over IPv4 and
 * IPv6, and behind a real NAT in the lab, where it must be the NAT's public address.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { startLabBroker, LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { requireLab } from '../lab/helpers.js';

const run = promisify(execFile);
/** What coturn prints: "UDP reflexive addr: IP:PORT" (an IPv6 address unbracketed: the port follows the last colon). */
const REFLEXIVE = /UDP reflexive addr: (\S+):(\d+)/;
/** A broker process binding its sockets. */
const START_TIMEOUT_MS = 10_000;

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

  for (const [family, host, listen] of [['IPv4', '127.0.0.1', '127.0.0.1:0'], ['IPv6', '::1', '[::1]:0']] as const) {
    test(`on loopback, ${family}, broker started with no flags: prints the address and port the broker saw`, async (t) => {
      if (!(await haveStunclient(t))) return;
      // `nattrav broker` as a user starts it (--json only shapes its log lines).
      const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', listen, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const broker = new CliProcess(child);
      closers.push(async () => {
        if (child.exitCode === null) child.kill('SIGTERM');
        await broker.exited;
      });
      const listening = await broker.waitForEvent('listening', START_TIMEOUT_MS);
      const { stdout } = await run('turnutils_stunclient', ['-p', String(listening.port), host], { timeout: 10_000 });
      const match = REFLEXIVE.exec(stdout);
      assert.ok(match, `no reflexive address in: ${stdout}`);
      assert.equal(match[1], host);
      const binding = await broker.waitForEvent('binding', 2_000, (e) => e.transport === 'udp');
      assert.equal(Number(match[2]), (binding.remote as { port: number }).port, 'the port coturn printed is the one it sent from');
    });
  }

  test('behind a port-restricted NAT: prints the NAT public address', async (t) => {
    if (!(await requireLab(t)) || !(await haveStunclient(t))) return;
    const lab = await Lab.create({ sites: [{ name: 'a', nat: 'port-restricted' }] });
    closers.push(() => lab.close());
    await startLabBroker(lab); // no flags
    const site = lab.site('a');
    const result = await lab.run(site.host, 'turnutils_stunclient', ['-p', String(LAB_BROKER_PORT), lab.broker.address], { timeoutMs: 10_000 });
    const match = REFLEXIVE.exec(result.stdout);
    assert.ok(match, `no reflexive address in: ${result.stdout}`);
    assert.equal(match[1], site.publicAddress);
    assert.notEqual(match[1], site.host.address);
  });
});
