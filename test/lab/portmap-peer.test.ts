/**
 * Issue 11 item 1, integration, in the real-kernel lab: a recipient (`nattrav listen --echo`)
 * behind a port-restricted NAT router running the real miniupnpd maps its accepting port and
 * registers it; an initiator (`nattrav connect`) behind a random-symmetric NAT, which no
 * punching strategy reaches from there, connects with path `portmap` straight to the mapped
 * endpoint. Once with UPnP IGD (miniupnpd serving only UPnP), once with PCP (miniupnpd
 * serving NAT-PMP and PCP; PCP is preferred), and once with NAT-PMP (the same miniupnpd; the
 * recipient is then an API server told `portmap: { protocols: ['nat-pmp'] }`, which the CLI
 * does not offer). Checked: the path on both sides, the recipient
 * sees the initiator NAT's public address, every byte comes back (SHA-256), and after the
 * recipient exits the mapping is gone from miniupnpd. With `--no-portmap` nothing is mapped
 * and the usual path runs. The recipient finds the gateway as a user's would: its default route.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CliProcess, startCli, type CliEvent } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { requireLab } from './helpers.js';
import { MINIUPNPD, MINIUPNPD_START_TIMEOUT_MS, Miniupnpd, type MiniupnpdMode } from './miniupnpd.js';

/** Node start-up in a namespace, registration, discovery and one mapping exchange, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** The refresh that registers the mapping follows the 'mapped' event at once; this is generous slack for it. */
const REGISTER_SETTLE_MS = 2_000;
/** Per test: miniupnpd's start (STUN), two processes, a connection, teardown. */
const TEST_TIMEOUT_MS = 3 * 60_000;
/** Random bytes sent (as hex text) and echoed back. */
const PAYLOAD_BYTES = 128 * 1024;

/** The built library, for the NAT-PMP recipient. */
const LIBRARY = fileURLToPath(new URL('../../src/index.js', import.meta.url));
/**
 * An echoing recipient through the API (argv: library, broker, URI, key dir), speaking only
 * NAT-PMP to its gateway; reports as `nattrav listen --json` does, on stderr; exits on SIGTERM once closed.
 */
const NAT_PMP_RECIPIENT = `const [lib, broker, uri, keyDir] = process.argv.slice(1);
const report = (event, fields) => console.error(JSON.stringify({ event, ...fields }));
import(lib).then(({ createServer, formatEndpoint }) => {
  const server = createServer({ broker, uri, keyDir, portmap: { protocols: ['nat-pmp'] } }, (socket) => {
    report('accepted', { path: socket.nattrav.path, remote: formatEndpoint(socket.nattrav.remote) });
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  server.on('registered', (e) => report('registered', { kind: e.kind }));
  server.on('portmap', (e) => report('portmap', { type: e.type, protocol: e.mapping.protocol, external: e.mapping.externalAddress + ':' + e.mapping.externalPort }));
  process.on('SIGTERM', () => server.close(() => process.exit(143)));
  server.listen();
});`;

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
const hostOf = (endpoint: unknown): string => String(endpoint).replace(/:\d+$/, '');

/** Lab tests need root; this one also needs miniupnpd (required in CI, like the lab). */
function requireMiniupnpd(t: TestContext): boolean {
  if (existsSync(MINIUPNPD)) return true;
  if (process.env.CI !== undefined && process.env.CI !== '') throw new Error(`${MINIUPNPD} is required in CI (Debian package miniupnpd-nftables)`);
  t.skip(`${MINIUPNPD} is not installed (Debian package miniupnpd-nftables)`);
  return false;
}

describe('path portmap: a recipient behind miniupnpd, an initiator behind a random-symmetric NAT', () => {
  let lab: Lab | undefined;
  let broker: CliProcess | undefined;
  let dir = '';

  before(async () => {
    if (!(await labSupport()).ok || !existsSync(MINIUPNPD)) return;
    dir = await mkdtemp(join(tmpdir(), 'nattrav-portmap-peer-'));
    lab = await Lab.create({ sites: [{ name: 'home', nat: 'port-restricted' }, { name: 'away', nat: 'symmetric' }] });
    // The broker is also miniupnpd's STUN server (its alternate address answers too).
    broker = startCli(lab, lab.broker, ['broker', '--listen', `${lab.broker.address}:${LAB_BROKER_PORT}`, '--alternate', lab.broker.alternateAddress as string]);
    await broker.waitForEvent('listening', START_WAIT_MS);
  });
  after(async () => {
    await lab?.close();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  /** Connects from the away site, sends the payload, and returns its 'connected' event after checking the echo. */
  async function connectAndEcho(uri: string, name: string): Promise<CliEvent> {
    const l = lab as Lab;
    const payload = `${randomBytes(PAYLOAD_BYTES).toString('hex')}\n`;
    const connector = startCli(l, l.site('away').host as LabHost, ['connect', uri, '--broker', `${l.broker.address}:${LAB_BROKER_PORT}`, '--known-keys', join(dir, `known-${name}`)]);
    try {
      connector.child.stdin?.end(payload);
      const connected = await connector.waitForEvent('connected', CONNECT_WAIT_MS);
      assert.equal(await connector.exited, 0, 'connect exits 0 once the echo ended');
      assert.equal(sha256(connector.stdout), sha256(payload), 'every byte came back');
      return connected;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- connect stderr ---\n${connector.stderr.slice(-3000)}`, { cause: err });
    } finally {
      connector.child.kill('SIGKILL');
    }
  }

  async function scenario(mode: MiniupnpdMode, protocol: 'upnp' | 'pcp' | 'nat-pmp', portmap: boolean): Promise<void> {
    const l = lab as Lab;
    const home = l.site('home');
    const daemon = await Miniupnpd.create(l, home, mode);
    const name = `${protocol}-${portmap ? 'on' : 'off'}`;
    const uri = `nattrav://portmap-${name}`;
    let listener: CliProcess | undefined;
    try {
      await daemon.start();
      const brokerAddress = `${l.broker.address}:${LAB_BROKER_PORT}`;
      const args = ['listen', uri, '--broker', brokerAddress, '--echo', '--key-dir', join(dir, `keys-${name}`)];
      listener =
        protocol === 'nat-pmp'
          ? new CliProcess(l.spawn(home.host as LabHost, process.execPath, ['-e', NAT_PMP_RECIPIENT, LIBRARY, brokerAddress, uri, join(dir, `keys-${name}`)], { stdio: ['pipe', 'pipe', 'pipe'] }))
          : startCli(l, home.host as LabHost, portmap ? args : [...args, '--no-portmap']);
      await listener.waitForEvent('registered', START_WAIT_MS);
      let external = '';
      if (portmap) {
        const mapped = await listener.waitForEvent('portmap', START_WAIT_MS, (e) => e.type === 'mapped');
        assert.equal(mapped.protocol, protocol);
        assert.equal(hostOf(mapped.external), home.publicAddress, 'mapped on the router\'s public address');
        external = String(mapped.external);
        assert.match(await daemon.redirects(), new RegExp(`dport ${external.split(':')[1]}\\b`), 'miniupnpd holds the mapping');
        await sleep(REGISTER_SETTLE_MS);
      }

      const connected = await connectAndEcho(uri, name);
      const accepted = await listener.waitForEvent('accepted', START_WAIT_MS);
      if (portmap) {
        assert.equal(connected.path, 'portmap');
        assert.equal(connected.remote, external, 'the initiator dialled the mapped endpoint');
        assert.equal(accepted.path, 'portmap');
        assert.equal(hostOf(accepted.remote), l.site('away').publicAddress, 'the recipient sees the initiator NAT\'s public address');
      } else {
        assert.notEqual(connected.path, 'portmap');
        assert.equal(listener.events.filter((e) => e.event === 'portmap').length, 0, 'no mapping was asked for');
        assert.doesNotMatch(await daemon.redirects(), /dport/, 'miniupnpd holds no mapping');
      }

      listener.child.kill('SIGTERM');
      assert.equal(await listener.exited, 143);
      if (portmap) {
        assert.ok(listener.events.some((e) => e.event === 'portmap' && e.type === 'deleted'), 'the recipient reported the deletion');
        assert.doesNotMatch(await daemon.redirects(), new RegExp(`dport ${external.split(':')[1]}\\b`), 'the mapping is gone from miniupnpd');
      }
    } catch (err) {
      throw new Error(`${name}: ${(err as Error).message}\n--- listen stderr ---\n${listener?.stderr.slice(-3000) ?? ''}\n--- miniupnpd ---\n${daemon.log.slice(-2000)}`, { cause: err });
    } finally {
      listener?.child.kill('SIGKILL');
      await daemon.close();
    }
  }

  for (const [mode, protocol, portmap] of [['upnp', 'upnp', true], ['pmp', 'pcp', true], ['pmp', 'nat-pmp', true], ['pmp', 'pcp', false]] as const) {
    test(`${protocol}${portmap ? '' : ' with --no-portmap'}: ${portmap ? 'path portmap, the initiator NAT\'s address seen, the mapping deleted on exit' : 'nothing mapped, the usual path'}`, { timeout: TEST_TIMEOUT_MS + MINIUPNPD_START_TIMEOUT_MS }, async (t) => {
      if (!(await requireLab(t)) || !requireMiniupnpd(t)) return;
      await scenario(mode, protocol, portmap);
    });
  }
});
