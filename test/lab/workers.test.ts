/**
 * A direct connection through two port-restricted NATs of the lab, brokered by
 * `nattrav broker --workers 2` on the lab's public network: several connects in a row,
 * so the recipient's Join and the mapping probes land on either worker, all direct, each
 * echoing its bytes; the primary's count of cross-worker traffic shows they crossed.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CliProcess, startCli as startLabCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab } from './helpers.js';

/** Generous on a busy machine: start, connect and exit each within these. */
const START_WAIT_MS = 30_000;
const CONNECT_WAIT_MS = 45_000;
const CONNECTS = 6;
const TEST_TIMEOUT_MS = 5 * 60_000;

describe('lab: a direct connection through a --workers 2 broker', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;

  function startCli(host: LabHost, args: string[]): CliProcess {
    return startLabCli(lab as Lab, host, args, { home });
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'nattrav-lab-workers-'));
    home = join(work, 'home');
    await mkdir(home);
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({ sites: [{ name: 'a', nat: 'port-restricted' }, { name: 'b', nat: 'port-restricted' }] });
  });
  after(async () => {
    try {
      await lab?.close();
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  test(`${CONNECTS} connects in a row are direct and echo; Joins and probes crossed workers`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || lab === undefined) return;
    const address = `${lab.broker.address}:${LAB_BROKER_PORT}`;
    const broker = startCli(lab.broker, ['broker', '--listen', address, '--workers', '2']);
    await broker.waitForEvent('workers', START_WAIT_MS);
    const listener = startCli(lab.site('b').host, ['listen', 'nattrav://lab-workers', '--broker', address, '--echo', '--key-dir', join(work, 'keys')]);
    await listener.waitForEvent('registered', START_WAIT_MS);
    for (let i = 0; i < CONNECTS; i++) {
      const payload = `hello ${i}\n`;
      const connector = startCli(lab.site('a').host, ['connect', 'nattrav://lab-workers', '--broker', address, '--known-keys', join(work, 'known_keys'), '--accept-new-key']);
      const connected = await connector.waitForEvent('connected', CONNECT_WAIT_MS);
      assert.equal(connected.path, 'direct', `connect ${i}: ${JSON.stringify(connected)}`);
      connector.write(payload);
      await connector.waitForStdout(payload, CONNECT_WAIT_MS);
      connector.child.stdin?.end();
      assert.equal(await connector.exited, 0, connector.stderr);
    }
    listener.child.kill('SIGTERM');
    await listener.exited;
    broker.child.kill('SIGTERM');
    assert.equal(await broker.exited, 143);
    const stopped = broker.events.find((e) => e.event === 'workers-stopped');
    const routed = stopped?.routed as Record<string, number> | undefined;
    assert.ok(routed !== undefined && (routed.join ?? 0) + (routed.probe ?? 0) > 0, `nothing crossed workers: ${JSON.stringify(routed)}`);
    assert.equal(broker.events.filter((e) => e.event === 'scheduled').length, CONNECTS);
  });
});
