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
 * 3. A peer there registers through the proxy (over its TCP control connection) and
 *    accepts a connection from a public peer: it connects out to the initiator through
 *    CONNECT (path `reversal`); from a peer behind another NAT: over the broker's relay
 *    (the proxy's BIND is not used yet). The data arrives intact each time.
 * 4. Wrong credentials: connect exits 12 (ERR_PROXY), says the proxy refused our
 *    username/password, and never prints the password.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test, type TestContext } from 'node:test';
import { CliProcess, startCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
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
    const listen = startCli(l, hostOf(listener.host), ['listen', uri, '--broker', brokerAddress, '--no-tls', ...listener.args]);
    processes.push(listen);
    await listen.waitForEvent('registered', START_WAIT_MS);
    const connect = startCli(l, hostOf(connector.host), ['connect', uri, '--broker', brokerAddress, '--no-tls', '-v', ...connector.args]);
    processes.push(connect);
    const payload = randomBytes(PAYLOAD_BYTES / 2).toString('hex');
    const connected = await connect.waitForEvent('connected', CONNECT_WAIT_MS).catch((err: unknown) => {
      throw new Error(`connect did not connect: ${String(err)}\n${connect.stderr}\nlistener:\n${listen.stderr}\ndanted:\n${danted?.log ?? ''}`);
    });
    const accepted = await listen.waitForEvent('accepted', CONNECT_WAIT_MS);
    connect.child.stdin?.end(payload);
    await listen.waitForStdout(payload, TRANSFER_WAIT_MS).catch(() => undefined);
    assert.equal(sha256(listen.stdout), sha256(payload), `the listener got ${listen.stdout.length} of ${payload.length} characters`);
    return { accepted, connected };
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

  test('a peer behind the proxy registers through it and accepts a connection from a peer elsewhere: data intact', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || !requireDanted(t)) return;
    const d = danted as Danted;
    const { accepted, connected } = await transfer({ host: 'corp', args: ['--socks5', d.proxy] }, { host: 'outside', args: [] }, 'nattrav://corp-peer');
    assert.equal(accepted.path, 'reversal', `the proxied recipient connects out to the public initiator; trace ${JSON.stringify(connected.trace)}`);
  });

  test('a peer behind the proxy accepts a connection from a peer behind another NAT (relay): data intact', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t)) || !requireDanted(t)) return;
    const d = danted as Danted;
    const { accepted, connected } = await transfer({ host: 'corp', args: ['--socks5', d.proxy] }, { host: 'home', args: [] }, 'nattrav://corp-peer-2');
    assert.equal(accepted.path, 'relay');
    assert.equal(connected.path, 'relay');
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
