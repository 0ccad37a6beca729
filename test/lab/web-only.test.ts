/**
 * Issue 11 "networks that pass only the web", in the real-kernel lab: a broker
 * serving UDP/TCP on 3478 and WebSocket on port 80; a peer on a `web-only` site
 * (only TCP 80/443 out, no UDP) given the broker's usual HOST:PORT falls back to
 * ws://HOST:80 (wss:443 refused first), registers, is reached by a peer elsewhere
 * and connects to a peer elsewhere; then the same through a real HTTP CONNECT proxy
 * (tinyproxy on a public host, port 443) with --http-proxy. Every connection runs
 * end-to-end TLS (the default) over the broker's relay, half-closed by `connect` when
 * its stdin ends; the bytes echoed back hash the same (SHA-256); netcheck from the web-only site reports the broker as reachable
 * only over the web. In the proxy case the site's router forwards nothing but to
 * the proxy, so without --http-proxy the peer cannot reach the broker (exit 4).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab } from './helpers.js';

/** Node start-up in a namespace plus registration with its fallback steps (UDP 5 s, TCP 5 s, wss, ws), on a busy machine. */
const START_WAIT_MS = 60_000;
/** connect's own limit is 30 s; the relay comes at once now, but a busy machine may be slow: wait longer for its report. */
const CONNECT_WAIT_MS = 60_000;
/** 256 KiB of hex through the relay and back: generous, never asserted. */
const ECHO_WAIT_MS = 60_000;

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

describe('web-only site: registers over WebSocket, reachable, connects out; also through an HTTP CONNECT proxy', () => {
  let lab: Lab | undefined;
  let work: string;
  let brokerAddress: string;
  const procs: CliProcess[] = [];

  function startCli(host: LabHost, args: string[]): CliProcess {
    const child = (lab as Lab).spawn(host, process.execPath, [CLI_PATH, ...args, '--json'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, HOME: work, HTTPS_PROXY: '', HTTP_PROXY: '', https_proxy: '', http_proxy: '' },
    });
    child.stdin?.on('error', () => undefined);
    const proc = new CliProcess(child);
    procs.push(proc);
    return proc;
  }

  /**
   * `connect` from `host` to `uri`, 256 KiB of hex echoed back intact; returns the process's
   * events. One side is on the web, so the broker plans the relay at once: the path is the
   * relay and no strategy before it was tried (the setup time is reported, never asserted).
   */
  async function echoThrough(t: TestContext, host: LabHost, uri: string, extra: string[]): Promise<CliProcess> {
    const client = startCli(host, ['connect', uri, '--broker', brokerAddress, '-v', ...extra]);
    const connected = await client.waitForEvent('connected', CONNECT_WAIT_MS);
    t.diagnostic(`${uri}: path ${String(connected.path)}, setup ${String(connected.setupMs)} ms`);
    assert.equal(connected.path, 'relay', client.stderr.slice(-2000));
    const tried = client.events.filter((e) => e.event === 'strategy').map((e) => `${String(e.strategy)} ${String(e.outcome)}`);
    assert.ok(tried.every((step) => step.startsWith('relay ')), `no punch before the relay: ${tried.join(', ')}`);
    const payload = `${randomBytes(128 * 1024).toString('hex')}\n`;
    client.write(payload);
    const echoed = await client.waitForStdout(payload, ECHO_WAIT_MS);
    assert.equal(sha256(echoed), sha256(payload));
    client.child.stdin?.end();
    assert.equal(await client.exited, 0, client.stderr.slice(-2000));
    return client;
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'nattrav-lab-web-'));
    if (!(await labSupport()).ok) return;
    lab = await Lab.create({
      sites: [
        { name: 'web', nat: 'web-only' },
        { name: 'webproxied', nat: 'web-only' },
        { name: 'out', nat: 'port-restricted' },
      ],
      publicHosts: ['proxy'],
    });
    const broker = startCli(lab.broker, ['broker', '--listen', `${lab.broker.address}:${LAB_BROKER_PORT}`, '--ws-listen', `${lab.broker.address}:80`]);
    await broker.waitForEvent('ws-listening', START_WAIT_MS);
    brokerAddress = `${lab.broker.address}:${LAB_BROKER_PORT}`;
  });
  after(async () => {
    try {
      await lab?.close();
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  test('fallback to ws:80, reachable from a peer elsewhere, and connects out', { timeout: 5 * 60_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const listener = startCli(l.site('web').host, ['listen', 'nattrav://web-only', '--broker', brokerAddress, '--echo']);
    await listener.waitForEvent('registered', START_WAIT_MS);
    const fallback = listener.events.find((e) => e.event === 'web-fallback');
    assert.equal(fallback?.via, `ws://${l.broker.address}:80/`, listener.stderr.slice(-2000));
    // wss:443 was tried first (nothing listens there), after TCP.
    assert.deepEqual((fallback?.reasons as string[]).map((r) => r.split(':')[0]), ['tcp', 'wss']);
    await echoThrough(t, l.site('out').host, 'nattrav://web-only', []);

    const outListener = startCli(l.site('out').host, ['listen', 'nattrav://out-echo', '--broker', brokerAddress, '--echo']);
    await outListener.waitForEvent('registered', START_WAIT_MS);
    const client = await echoThrough(t, l.site('web').host, 'nattrav://out-echo', []);
    assert.ok(client.events.some((e) => e.event === 'web-fallback'), 'the initiator on the web-only site fell back too');

    // netcheck says the broker answers only over the web, and from which address.
    const check = startCli(l.site('web').host, ['netcheck', '--broker', brokerAddress]);
    assert.equal(await check.exited, 0, check.stderr.slice(-2000));
    const result = JSON.parse(check.stdout.trim()) as { name?: string; web?: { reachable?: boolean; via?: string; publicEndpoint?: string } };
    assert.equal(result.name, 'web only');
    assert.equal(result.web?.via, `ws://${l.broker.address}:80/`);
    assert.match(String(result.web?.publicEndpoint), new RegExp(`^${l.site('web').publicAddress.replace(/\./g, '\\.')}:\\d+$`));
  });

  test('through tinyproxy (HTTP CONNECT) with --http-proxy', { timeout: 5 * 60_000 }, async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const proxyHost = l.publicHost('proxy');
    const conf = join(work, 'tinyproxy.conf');
    await writeFile(conf, ['Port 443', 'Listen 0.0.0.0', 'Timeout 120', 'MaxClients 20', 'ConnectPort 443', 'ConnectPort 80', 'LogLevel Connect', ''].join('\n'));
    const proxy = l.spawn(proxyHost, 'tinyproxy', ['-d', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    let proxyLog = '';
    proxy.stdout?.on('data', (chunk: Buffer) => (proxyLog += chunk.toString()));
    proxy.stderr?.on('data', (chunk: Buffer) => (proxyLog += chunk.toString()));
    const proxyUrl = `http://${proxyHost.address}:443`;
    // The proxy is the site's only way out: its router forwards nothing from the LAN host to any other address.
    const site = l.site('webproxied');
    assert.ok(site.router !== undefined);
    await l.run(site.router, 'nft', ['add', 'table', 'ip', 'only_proxy']);
    await l.run(site.router, 'nft', ['add', 'chain', 'ip', 'only_proxy', 'forward', '{ type filter hook forward priority -10; policy accept; }']);
    await l.run(site.router, 'nft', ['add', 'rule', 'ip', 'only_proxy', 'forward', 'ip', 'saddr', site.host.address, 'ip', 'daddr', '!=', proxyHost.address, 'drop']);
    const direct = startCli(site.host, ['netcheck', '--broker', brokerAddress]);
    assert.equal(await direct.exited, 4, `without the proxy nothing gets out: ${direct.stderr.slice(-1000)}`);
    assert.match(direct.stderr, /web: no answer either \(wss:\/\/.*; ws:\/\//);
    const listener = startCli(l.site('webproxied').host, ['listen', 'nattrav://web-proxied', '--broker', brokerAddress, '--echo', '--http-proxy', proxyUrl]);
    await listener.waitForEvent('registered', START_WAIT_MS);
    await echoThrough(t, l.site('out').host, 'nattrav://web-proxied', []);
    const outListener = startCli(l.site('out').host, ['listen', 'nattrav://out-echo-2', '--broker', brokerAddress, '--echo']);
    await outListener.waitForEvent('registered', START_WAIT_MS);
    await echoThrough(t, l.site('webproxied').host, 'nattrav://out-echo-2', ['--http-proxy', proxyUrl]);
    assert.match(proxyLog, /CONNECT/, `tinyproxy saw a CONNECT: ${proxyLog.slice(-2000)}`);
  });
});
