/**
 * Issue 11 item 2 in the real-kernel lab, against the real danted (Debian dante-server):
 * a site whose only way out is the SOCKS5 proxy on its router (the router's forward chain
 * drops everything from the LAN to the WAN, UDP included), with username/password
 * required (RFC 1929, a system user the test creates and removes).
 *
 * 1. The site really has no other way out: a plain TCP connect to the broker fails.
 * 2. A peer there connects out to a peer elsewhere through the proxy's CONNECT (path
 *    `public`: the broker plans only what a proxied initiator can do); the data arrives
 *    intact (SHA-256).
 * 3. A peer there registers through the proxy (over its TCP control connection), holds a
 *    BIND open at the proxy and registers the address danted bound; a peer behind another NAT,
 *    and a public one, connect to it there (path `socks5-bind`): the initiator's remote
 *    address is the proxy's public (WAN) address, and the data arrives intact both ways
 *    (the listener echoes it).
 * 4. With BIND blocked in danted's rules (`socks block { command: bind }`) the recipient says
 *    so once and is reached as before: over the relay from behind another NAT, by connecting
 *    out through CONNECT to a public initiator (path `reversal`).
 * 5. Wrong credentials: connect exits 12 (ERR_PROXY), says the proxy refused our
 *    username/password, and never prints the password.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test, type TestContext } from 'node:test';
import { CliProcess, startCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import type { LabHost } from '../../src/lab/types.js';
import { labSupport } from '../../src/lab/support.js';
import { DANTED, Danted } from './danted.js';
import { requireLab } from './helpers.js';

/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** Moving the payload and the process exits; generous, never asserted. */
const TRANSFER_WAIT_MS = 60_000;
const TEST_TIMEOUT_MS = 3 * 60_000;
/** Bytes sent each time (as hex text: the CLI's stdout is read as text). */
const PAYLOAD_BYTES = 256 * 1024;

/** Lab tests need root; this one also needs danted (required in CI, like the lab). */
function requireDanted(t: TestContext): boolean {
  if (existsSync(DANTED)) return true;
  if (process.env.CI !== undefined && process.env.CI !== '') throw new Error(`${DANTED} is required in CI (Debian package dante-server)`);
  t.skip(`${DANTED} is not installed (Debian package dante-server)`);
  return false;
}

/** Where a peer runs: behind the proxy, on the public network, or behind another NAT. */
type Where = 'corp' | 'outside' | 'home';

/** The address of `HOST:PORT`. */
function hostOf(endpoint: unknown): string {
  return String(endpoint).replace(/:\d+$/, '');
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

describe('SOCKS5 through a real danted, the site\'s only way out', () => {
  let lab: Lab | undefined;
  let danted: Danted | undefined;
  let brokerAddress = '';
  const processes: CliProcess[] = [];

  before(async () => {
    if (!(await labSupport()).ok || !existsSync(DANTED)) return;
    lab = await Lab.create({ sites: [{ name: 'corp', nat: 'port-restricted' }, { name: 'home', nat: 'port-restricted' }], publicHosts: ['outside'] });
    brokerAddress = `${lab.broker.address}:${LAB_BROKER_PORT}`;
    const broker = startCli(lab, lab.broker, ['broker', '--listen', brokerAddress]);
    processes.push(broker);
    await broker.waitForEvent('listening', START_WAIT_MS);
    danted = await Danted.start(lab, lab.site('corp'));
  });
  after(async () => {
    await danted?.close();
    await lab?.close();
  });

  /** Runs `nattrav listen` and `nattrav connect`, sends a payload from connect to listen, and returns both processes' events once the data is in. */
  async function transfer(listener: { host: Where; args: string[] }, connector: { host: Where; args: string[] }, uri: string): Promise<{ accepted: Record<string, unknown>; connected: Record<string, unknown> }> {
    const l = lab as Lab;
    const hostOf = (name: Where) => (name === 'outside' ? l.publicHost('outside') : l.site(name).host);
    const { listen, connect, payload, accepted, connected } = await startPair(hostOf(listener.host), listener.args, hostOf(connector.host), connector.args, uri);
    connect.child.stdin?.end(payload);
    await listen.waitForStdout(payload, TRANSFER_WAIT_MS).catch(() => undefined);
    assert.equal(sha256(listen.stdout), sha256(payload), `the listener got ${listen.stdout.length} of ${payload.length} characters`);
    return { accepted, connected };
  }

  /** Starts `nattrav listen` (waits until registered), then `nattrav connect` (waits until both sides report the connection); a payload to send. */
  async function startPair(listenHost: LabHost, listenArgs: string[], connectHost: LabHost, connectArgs: string[], uri: string): Promise<{ listen: CliProcess; connect: CliProcess; payload: string; accepted: Record<string, unknown>; connected: Record<string, unknown> }> {
    const l = lab as Lab;
    const listen = startCli(l, listenHost, ['listen', uri, '--broker', brokerAddress, '--no-tls', ...listenArgs]);
    processes.push(listen);
    await listen.waitForEvent('registered', START_WAIT_MS);
    const connect = startCli(l, connectHost, ['connect', uri, '--broker', brokerAddress, '--no-tls', '-v', ...connectArgs]);
    processes.push(connect);
    const payload = randomBytes(PAYLOAD_BYTES / 2).toString('hex');
    const connected = await connect.waitForEvent('connected', CONNECT_WAIT_MS).catch((err: unknown) => {
      throw new Error(`connect did not connect: ${String(err)}\n${connect.stderr}\nlistener:\n${listen.stderr}\ndanted:\n${danted?.log ?? ''}`);
    });
    const accepted = await listen.waitForEvent('accepted', CONNECT_WAIT_MS);
    return { listen, connect, payload, accepted, connected };
  }

  test('the site has no way out but the proxy: a plain TCP connect to the broker fails', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || !requireDanted(t)) return;
    const l = lab as Lab;
    const probe = `const s = require('node:net').connect(${LAB_BROKER_PORT}, '${l.broker.address}');
s.on('connect', () => process.exit(0)); s.on('error', () => process.exit(1)); setTimeout(() => process.exit(1), 3000);`;
    const result = await l.run(l.site('corp').host, process.execPath, ['-e', probe], { allowFailure: true, timeoutMs: 10_000 });
    assert.notEqual(result.code, 0, 'the LAN host reached the broker without the proxy');
  });

  test('a peer behind the proxy connects out to a peer elsewhere (CONNECT): data intact', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || !requireDanted(t)) return;
    const d = danted as Danted;
    const { connected, accepted } = await transfer({ host: 'outside', args: [] }, { host: 'corp', args: ['--socks5', d.proxy] }, 'nattrav://outside-peer');
    assert.equal(connected.path, 'public', 'a proxied initiator connects out to the public recipient');
    // The recipient sees the proxy's WAN address: the connection came out of danted.
    assert.equal(String(accepted.remote).replace(/:\d+$/, ''), lab?.site('corp').publicAddress);
  });

  /**
   * Runs an echoing `nattrav listen` behind the proxy and `nattrav connect` from `from`; the
   * payload goes there and back (hashes equal both ways). Returns both sides' events.
   */
  async function echoThroughProxy(from: Where, uri: string, proxy: string): Promise<{ listen: CliProcess; accepted: Record<string, unknown>; connected: Record<string, unknown> }> {
    const l = lab as Lab;
    const { listen, connect, payload, accepted, connected } = await startPair(l.site('corp').host, ['--echo', '--socks5', proxy], from === 'outside' ? l.publicHost('outside') : l.site(from).host, [], uri);
    connect.child.stdin?.end(payload);
    await connect.waitForStdout(payload, TRANSFER_WAIT_MS).catch(() => undefined);
    assert.equal(sha256(connect.stdout), sha256(payload), `the initiator got back ${connect.stdout.length} of ${payload.length} characters`);
    return { listen, accepted, connected };
  }

  for (const from of ['home', 'outside'] as const) {
    test(`a peer behind the proxy is reached through the proxy's BIND from ${from === 'home' ? 'a peer behind another NAT' : 'a public peer'} (socks5-bind): data intact both ways`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      if (!(await requireLab(t)) || !requireDanted(t)) return;
      const l = lab as Lab;
      const d = danted as Danted;
      const { listen, accepted, connected } = await echoThroughProxy(from, `nattrav://corp-bound-${from}`, d.proxy);
      const bound = listen.events.find((e) => e.event === 'socks5-bind' && e.type === 'bound');
      assert.equal(hostOf(bound?.bound), l.site('corp').publicAddress, 'danted bound on its WAN address');
      assert.equal(connected.path, 'socks5-bind', `trace ${JSON.stringify(connected.trace)}\n${listen.stderr}`);
      assert.equal(accepted.path, 'socks5-bind');
      // The connection really came through the proxy: the initiator reached danted's bound address.
      assert.equal(connected.remote, bound?.bound, 'the initiator connected to the bound address');
      assert.equal(hostOf(connected.remote), l.site('corp').publicAddress, 'the initiator\'s remote address is the proxy\'s');
      assert.ok(listen.events.some((e) => e.event === 'socks5-bind' && e.type === 'accepted' && hostOf(e.from) === (from === 'home' ? l.site('home').publicAddress : l.publicHost('outside').address)), 'danted named the initiator (its NAT\'s address) in its second reply');
      // The BIND was renewed after its use.
      await listen.waitForEvent('socks5-bind', START_WAIT_MS, (e) => e.type === 'bound' && e.bound !== bound?.bound);
      listen.child.kill('SIGTERM');
      assert.equal(await listen.exited, 143);
    });
  }

  test('with BIND blocked by danted\'s rules: said once, and the peer behind the proxy is reached as before (relay; reversal from a public peer)', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || !requireDanted(t)) return;
    const l = lab as Lab;
    await danted?.close();
    danted = await Danted.start(l, l.site('corp'), { bind: false });
    const d = danted;
    const started = processes.length;
    const relayed = await transfer({ host: 'corp', args: ['--socks5', d.proxy] }, { host: 'home', args: [] }, 'nattrav://corp-peer-2');
    assert.equal(relayed.accepted.path, 'relay');
    assert.equal(relayed.connected.path, 'relay');
    const reversed = await transfer({ host: 'corp', args: ['--socks5', d.proxy] }, { host: 'outside', args: [] }, 'nattrav://corp-peer');
    assert.equal(reversed.accepted.path, 'reversal', `the proxied recipient connects out to the public initiator; trace ${JSON.stringify(reversed.connected.trace)}`);
    const listeners = processes.slice(started).filter((p) => p.events.some((e) => e.event === 'registered'));
    assert.equal(listeners.length, 2);
    for (const listener of listeners) {
      assert.deepEqual(listener.events.filter((e) => e.event === 'socks5-bind').map((e) => e.type), ['refused'], `the refusal, once: ${listener.stderr}`);
    }
  });

  test('wrong credentials: exit 12 (ERR_PROXY), a clear message, no password printed', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || !requireDanted(t)) return;
    const l = lab as Lab;
    const d = danted as Danted;
    const wrong = `${d.username}:not-${d.password}@${l.site('corp').lanAddress as string}:1080`;
    const connect = startCli(l, l.site('corp').host, ['connect', 'nattrav://outside-peer', '--broker', brokerAddress, '--no-tls', '--socks5', wrong]);
    processes.push(connect);
    assert.equal(await connect.exited, 12, connect.stderr);
    const error = connect.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_PROXY');
    assert.match(String(error?.message), new RegExp(`SOCKS5 proxy ${d.username}@[\\d.]+:1080 refused our username/password`));
    assert.ok(!connect.stderr.includes(d.password), 'the password was printed');
  });
});
