/**
 * Issue 9 "a broker you can watch", in the real-kernel lab: `nattrav broker --http`
 * on the lab's public network, connections through real NATs (direct between two
 * port-restricted NATs, relayed between two random-symmetric ones), then the
 * dashboard in headless Debian chromium (playwright-core with the system browser)
 * must show the numbers the run produced, and /metrics (strict Prometheus text)
 * must count the same.
 *
 * The lab's public network lives in namespaces the host has no route into (and
 * giving the host one would touch the host's own routing, shared with other labs).
 * So the browser runs where the dashboard is: chromium is started inside the
 * broker's namespace through `ip netns exec`, and playwright drives it over its
 * pipe as usual; the lab kills anything left in its namespaces by PID at close.
 */
import assert from 'node:assert/strict';
import { access, chmod, constants, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { startCli, type CliEvent, type CliProcess } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { startLabBroker, startLabRecipient, type LabBroker } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabSite } from '../../src/lab/types.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';
import { requireLab } from './helpers.js';

/** Debian's chromium (apt-get install chromium; in .ci/run). */
const CHROMIUM = '/usr/bin/chromium';
const HTTP_PORT = 8080;
/** A connect's own limit is 30 s; on a busy 2-core machine wait a little longer for its report. */
const CONNECT_WAIT_MS = 40_000;
const ECHO_WAIT_MS = 20_000;
/** Chromium start-up and one page load on a loaded machine. */
const BROWSER_WAIT_MS = 60_000;

/** True when Debian's chromium is installed; otherwise fails in CI (.ci/run installs it) and skips elsewhere, saying why. */
async function haveChromium(t: { skip(reason: string): void }): Promise<boolean> {
  try {
    await access(CHROMIUM, constants.X_OK);
    return true;
  } catch {
    if (process.env.CI !== undefined && process.env.CI !== '') throw new Error(`${CHROMIUM} (Debian package chromium) is required in CI; .ci/run installs it`);
    t.skip(`${CHROMIUM} is not installed (apt-get install chromium)`);
    return false;
  }
}

/** What one `nattrav connect -v` did: the strategy each of its attempts was given, and how it ended. */
interface Connected {
  readonly path: string;
  readonly started: string[];
}

describe('dashboard: the numbers of a lab run, in a browser and in /metrics', () => {
  let lab: Lab | undefined;
  let broker: LabBroker;
  let dir: string;
  let browser: Browser | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nattrav-lab-dashboard-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
        { name: 'c', nat: 'symmetric' },
        { name: 'd', nat: 'symmetric' },
      ],
    });
    broker = await startLabBroker(lab, ['--http', `${lab.broker.address}:${HTTP_PORT}`]);
    await broker.process.waitForEvent('http-listening', 10_000);
  });
  after(async () => {
    await browser?.close();
    await lab?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** `nattrav connect -v URI` from `from`: one line through the echo, then the end of stdin; waits for a clean exit. */
  async function connectOnce(from: LabSite, uri: string, line: string): Promise<Connected> {
    const l = lab as Lab;
    const p: CliProcess = startCli(l, from.host, ['connect', uri, '--broker', broker.address, '-v']);
    const connected = await p.waitForEvent('connected', CONNECT_WAIT_MS);
    p.write(`${line}\n`);
    await p.waitForStdout(`${line}\n`, ECHO_WAIT_MS);
    p.child.stdin?.end();
    assert.equal(await p.exited, 0, p.stderr);
    const started = p.events.filter((e: CliEvent) => e.event === 'strategy' && e.outcome === 'started').map((e) => String(e.strategy));
    assert.equal(started.length, Number(connected.attempts), 'one started strategy per attempt');
    return { path: String(connected.path), started };
  }

  test('after direct and relayed connections the page and /metrics show what the run did', async (t) => {
    if (!(await requireLab(t)) || !(await haveChromium(t))) return;
    const l = lab as Lab;
    await startLabRecipient(l, l.site('b').host, broker, 'nattrav://dash-direct', true);
    await startLabRecipient(l, l.site('d').host, broker, 'nattrav://dash-relay', true);
    const runs: Connected[] = [];
    for (let i = 0; i < 2; i++) runs.push(await connectOnce(l.site('a'), 'nattrav://dash-direct', `direct-${i}`));
    runs.push(await connectOnce(l.site('c'), 'nattrav://dash-relay', 'relayed-0'));
    assert.deepEqual(runs.map((r) => r.path), ['direct', 'direct', 'relay'], 'the paths this lab should give');
    // What the broker must have counted: every attempt of every connect, by the strategy it was given.
    const attempts = runs.flatMap((r) => r.started);
    const byPath = new Map<string, number>();
    for (const path of attempts) byPath.set(path, (byPath.get(path) ?? 0) + 1);
    const relays = runs.filter((r) => r.path === 'relay').length;
    // The relay's end reaches the broker once both peers closed.
    await broker.process.waitForEvent('relay-ended', ECHO_WAIT_MS);

    // The browser runs in the broker's namespace (see the module comment).
    const wrapper = join(dir, 'chromium-in-lab');
    await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${l.broker.ns} ${CHROMIUM} "$@"\n`);
    await chmod(wrapper, 0o755);
    browser = await chromium.launch({ executablePath: wrapper, headless: true, args: ['--no-sandbox'], timeout: BROWSER_WAIT_MS });
    const page = await browser.newPage();
    const base = `http://${l.broker.address}:${HTTP_PORT}`;
    await page.goto(`${base}/`, { timeout: BROWSER_WAIT_MS });
    const metric = async (name: string, path?: string): Promise<string> =>
      ((await page.locator(path === undefined ? `[data-metric="${name}"]` : `[data-metric="${name}"][data-path="${path}"]`).textContent()) ?? '').trim();
    assert.equal(await metric('listening'), 'listening');
    assert.equal(await metric('registrations'), '2');
    assert.equal(await metric('attempts'), String(attempts.length));
    for (const [path, count] of byPath) assert.equal(await metric('path-scheduled', path), String(count), `attempts on path ${path}`);
    assert.equal(await metric('path-failed', 'none'), '0');
    assert.equal(await metric('relays-active'), '0');
    assert.equal(await metric('success-rate'), '100.0 %');
    const relayedBytes = Number(await page.locator('[data-metric="relay-bytes"]').getAttribute('data-value'));
    assert.ok(relayedBytes >= 2 * 'relayed-0\n'.length, `relayed ${relayedBytes} bytes`);
    // The page reloads itself (meta refresh), with no script.
    await page.waitForEvent('load', { timeout: 15_000 });
    assert.equal(await metric('registrations'), '2');

    const response = await page.goto(`${base}/metrics`, { timeout: BROWSER_WAIT_MS });
    assert.ok(response !== null);
    assert.match((await response.allHeaders())['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusText(await response.text());
    assert.equal(sampleValue(families, 'nattrav_broker_attempts_started_total'), attempts.length);
    for (const [path, count] of byPath) assert.equal(sampleValue(families, 'nattrav_broker_attempts_total', { path, result: 'scheduled' }), count, path);
    assert.equal(sampleValue(families, 'nattrav_broker_attempts_total', { path: 'none', result: 'failed' }), 0);
    assert.equal(sampleValue(families, 'nattrav_broker_registrations_active'), 2);
    assert.equal(sampleValue(families, 'nattrav_broker_relays_started_total'), relays);
    assert.equal(sampleValue(families, 'nattrav_broker_relays_ended_total', { reason: 'closed' }), relays);
    assert.equal(sampleValue(families, 'nattrav_broker_relays_active'), 0);
    assert.equal(sampleValue(families, 'nattrav_broker_relay_bytes_total'), relayedBytes);
    // The NAT pairs the broker saw: endpoint-independent for the port-restricted sites, random for the symmetric ones.
    assert.equal(sampleValue(families, 'nattrav_broker_attempts_by_nat_total', { initiator_nat: 'eim', recipient_nat: 'eim' }), runs.filter((r) => r.path === 'direct').length);
    assert.equal(sampleValue(families, 'nattrav_broker_attempts_by_nat_total', { initiator_nat: 'random', recipient_nat: 'random' }), relays);
    assert.equal(sampleValue(families, 'nattrav_broker_setup_seconds_count', { path: 'relay' }), relays);
    const health = await page.goto(`${base}/healthz`, { timeout: BROWSER_WAIT_MS });
    assert.equal(health?.status(), 200);
  });
});
