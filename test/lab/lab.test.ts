/**
 * The lab's life cycle: validation, teardown (also when a test throws or the build is aborted),
 * stale-lab cleanup, traffic counters, the lab's own temporary home for its processes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { isNattravError, ErrorCode } from '../../src/errors.js';
import { cleanupStaleLabs, Lab, natRuleset, NAT_TYPES, type LabOptions } from '../../src/lab/index.js';
import { addNamespace, deleteNamespace, listNamespaces } from '../../src/lab/netns.js';
import { startCli } from '../../src/lab/cli-process.js';
import { requireLab, runProbe, startProbe, withLab } from './helpers.js';

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

/** A PID that belonged to a process that has exited (so a namespace named after it is stale). */
function deadPid(): number {
  const pid = spawnSync('true').pid;
  assert.ok(pid !== undefined && processGone(pid));
  return pid;
}

test('Lab.create rejects invalid options before creating anything', async () => {
  const bad: Array<[string, unknown]> = [
    ['no sites array', {}],
    ['unknown NAT type', { sites: [{ name: 'a', nat: 'cone' }] }],
    ['duplicate site', { sites: [{ name: 'a', nat: 'none' }, { name: 'a', nat: 'symmetric' }] }],
    ['public LAN', { sites: [{ name: 'a', nat: 'symmetric', lanSubnet: '203.0.113.0/24' }] }],
    ['host bits set', { sites: [{ name: 'a', nat: 'symmetric', lanSubnet: '192.168.1.7/24' }] }],
    ['bad name', { sites: [{ name: 'a b', nat: 'symmetric' }] }],
    ['public host called broker', { sites: [], publicHosts: ['broker'] }],
    ['too many public hosts', { sites: [], publicHosts: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'] }],
  ];
  for (const [why, options] of bad) {
    await assert.rejects(Lab.create(options as LabOptions), (error: unknown) => isNattravError(error, ErrorCode.InvalidArgument), why);
  }
});

test('every NAT type but none has a ruleset, and it names the WAN interface', () => {
  for (const nat of NAT_TYPES) {
    if (nat === 'none') continue;
    const text = natRuleset(nat, { wanAddress: '203.0.113.10' });
    assert.match(text, /oifname "wan0"/);
    assert.match(text, /ct state invalid drop/);
    assert.match(text, /policy drop/);
  }
  assert.throws(() => natRuleset('symmetric', { wan: 'way too long a name', wanAddress: '203.0.113.10' }), /interface/);
});

test('close() removes every namespace and process even when the test throws', async (t) => {
  if (!(await requireLab(t))) return;
  let names: string[] = [];
  let pid: number | undefined;
  await assert.rejects(
    withLab({ sites: [{ name: 'a', nat: 'port-restricted' }, { name: 'b', nat: 'none' }], publicHosts: ['x'] }, async (lab) => {
      names = lab.namespaces;
      assert.equal(names.length, 6); // inet, broker, x, a router + host, b host
      pid = lab.spawn(lab.site('a').host, 'sleep', ['60']).pid;
      throw new Error('boom');
    }),
    /boom/,
  );
  const left = await listNamespaces();
  assert.deepEqual(names.filter((ns) => left.includes(ns)), []);
  assert.ok(pid !== undefined && processGone(pid), 'the spawned process was killed');
});

test('close() is idempotent and the lab refuses work afterwards', async (t) => {
  if (!(await requireLab(t))) return;
  const lab = await Lab.create({ sites: [{ name: 'a', nat: 'symmetric' }] });
  const host = lab.site('a').host;
  await Promise.all([lab.close(), lab.close()]);
  await lab[Symbol.asyncDispose]();
  assert.equal(lab.closed, true);
  assert.deepEqual(lab.namespaces, []);
  assert.throws(() => lab.spawn(host, 'true', []), (error: unknown) => isNattravError(error, ErrorCode.Closed));
  await assert.rejects(lab.run(host, 'true', []), (error: unknown) => isNattravError(error, ErrorCode.Closed));
});

test("the lab's CLI processes keep their keys in the lab's temporary home, never the real one; close() removes it", async (t) => {
  if (!(await requireLab(t))) return;
  const lab = await Lab.create({ sites: [{ name: 'a', nat: 'none' }] });
  let home: string | undefined;
  try {
    home = lab.home;
    assert.ok(home.startsWith(tmpdir()), home);
    // A plain name's key is made before the first registration; no broker answers on the host's own loopback.
    const listener = startCli(lab, lab.site('a').host, ['listen', 'nattrav://home-check', '--broker', '127.0.0.1:9', '--once', '--no-portmap']);
    assert.equal(await listener.exited, 4, listener.stderr);
    const keys = readdirSync(join(home, '.nattrav', 'keys'));
    assert.equal(keys.length, 1, 'the key went into the lab home');
  } finally {
    await lab.close();
  }
  assert.equal(existsSync(home), false, 'the lab home is removed with the lab');
  assert.throws(() => lab.home, (error: unknown) => isNattravError(error, ErrorCode.Closed));
});

test('a build aborted half-way leaves no namespace behind', async (t) => {
  if (!(await requireLab(t))) return;
  const mine = async (): Promise<string[]> => (await listNamespaces()).filter((ns) => ns.startsWith(`ntlab-${process.pid}-`));
  const before = await mine();
  const controller = new AbortController();
  const sites = Array.from({ length: 12 }, (_, i) => ({ name: `s${i}`, nat: 'full-cone' as const }));
  const creating = Lab.create({ sites, signal: controller.signal });
  setTimeout(() => controller.abort(), 30);
  try {
    const lab = await creating;
    await lab.close(); // the machine was faster than the abort: nothing to prove this time
    t.diagnostic('build finished before the abort');
  } catch (error) {
    assert.ok(isNattravError(error, ErrorCode.Aborted), String(error));
  }
  assert.deepEqual(await mine(), before);
});

test('run() reports failures, time limits and output', async (t) => {
  if (!(await requireLab(t))) return;
  await withLab({ sites: [] }, async (lab) => {
    const ok = await lab.run(lab.broker, 'cat', [], { input: 'hello' });
    assert.deepEqual(ok, { code: 0, stdout: 'hello', stderr: '' });
    await assert.rejects(lab.run(lab.broker, 'false', []), (error: unknown) => isNattravError(error, ErrorCode.Lab) && /false/.test(error.message));
    assert.equal((await lab.run(lab.broker, 'false', [], { allowFailure: true })).code, 1);
    await assert.rejects(lab.run(lab.broker, 'sleep', ['10'], { timeoutMs: 200 }), (error: unknown) => isNattravError(error, ErrorCode.Timeout));
    assert.throws(() => lab.site('nope'), (error: unknown) => isNattravError(error, ErrorCode.InvalidArgument));
    assert.throws(() => lab.publicHost('nope'), (error: unknown) => isNattravError(error, ErrorCode.InvalidArgument));
  });
});

test('trafficCounter counts IPv4 in and out of a host', async (t) => {
  if (!(await requireLab(t))) return;
  await withLab({ sites: [{ name: 'a', nat: 'port-restricted' }] }, async (lab) => {
    const read = await lab.trafficCounter(lab.broker);
    const observer = startProbe(lab, lab.broker, ['observe', '4000']);
    await observer.lines.nextJson(5_000);
    const start = await read();
    const result = await runProbe(lab, lab.site('a').host, ['udp-send', '0', `${lab.broker.address}:4000`, '1', '2000']);
    assert.equal(result.replied, true);
    const end = await read();
    assert.ok(end.packetsIn - start.packetsIn >= 1 && end.bytesIn - start.bytesIn >= 28, JSON.stringify({ start, end }));
    assert.ok(end.packetsOut - start.packetsOut >= 1 && end.bytesOut - start.bytesOut >= 28, JSON.stringify({ start, end }));
  });
});

test('cleanupStaleLabs removes labs of dead owners only', async (t) => {
  if (!(await requireLab(t))) return;
  const stale = `ntlab-${deadPid()}-beef-inet`;
  const foreign = `nttest-${process.pid}-not-a-lab`;
  await addNamespace(stale);
  await addNamespace(foreign);
  try {
    await withLab({ sites: [{ name: 'a', nat: 'full-cone' }] }, async (lab) => {
      const removed = await cleanupStaleLabs();
      assert.ok(removed.includes(stale), `removed ${removed.join(', ')}`);
      const left = await listNamespaces();
      assert.ok(!left.includes(stale));
      assert.ok(left.includes(foreign), 'a namespace not made by the lab is untouched');
      assert.deepEqual(lab.namespaces.filter((ns) => !left.includes(ns)), [], 'the live lab is untouched');
      // The live lab still works.
      assert.equal((await lab.run(lab.site('a').host, 'true', [])).code, 0);
    });
  } finally {
    await deleteNamespace(foreign).catch(() => {});
    await deleteNamespace(stale).catch(() => {});
  }
});
