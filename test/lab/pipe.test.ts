/**
 * Issue 7 "A pipe users can trust", in the real-kernel lab: `nattrav listen` and
 * `nattrav connect` processes behind real NATs pipe 20 MiB of random data each way,
 * over a direct path (two port-restricted NATs) and over the broker's relay (two
 * random symmetric NATs), plain and TLS, with either side's stdin ending first.
 * Every byte arrives (SHA-256), both exit 0, and `--json` ends with a `closed`
 * event counting 20 MiB each way. Then a broker with `--relay-max-bytes` cuts a
 * relayed transfer: both peers exit 9 and say it was the relay quota.
 *
 * "Ending first" is made real, not left to timing: the side that ends second gets
 * only half of its data at first, and the other half only after the first side's
 * 20 MiB have all reached its stdout and its kernel holds the connection in
 * CLOSE-WAIT (the first side's FIN has arrived). So it keeps sending into a
 * connection whose other direction has already ended.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { CLI_PATH, CliProcess, type CliEvent } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost, LabSite, TrafficCounterReader } from '../../src/lab/types.js';
import { createCa, issueCertificate, type CaFiles } from '../../src/security/ca.js';
import { saveIdentity } from '../../src/security/identity.js';
import { requireLab } from './helpers.js';

/** Bytes each side sends: the issue's 20 MB. */
const SIZE = 20 * 1024 * 1024;
/** The quota of the second broker: a tenth of one direction's payload. */
const QUOTA_BYTES = 2_000_000;
/** The quota broker's port (it also takes the next one for mapping probes); the main broker has 3478/3479. */
const QUOTA_BROKER_PORT = 3490;
/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** connect's own limit is 30 s; wait longer for its report. */
const CONNECT_WAIT_MS = 45_000;
/** Moving 20 MiB (plus TLS, plus the relay's copy) on a busy machine: generous, never asserted. */
const TRANSFER_WAIT_MS = 120_000;
/** A cut connection ends at once; this only bounds a peer that never notices (a hang is a failure). */
const QUOTA_EXIT_WAIT_MS = 60_000;
/** Polling interval for file sizes and socket states. */
const POLL_MS = 100;
/** Per test: set-up, two transfers and exits, each bounded above. */
const TEST_TIMEOUT_MS = 5 * 60_000;
/** What the broker host may carry while a direct connection moves 2 x 20 MiB: exchanges and keepalives only. */
const DIRECT_BROKER_BYTES_LIMIT = 1024 * 1024;

type Side = 'listener' | 'connector';
type PathName = 'direct' | 'relay';

function hostOf(endpoint: unknown): string {
  return String(endpoint).replace(/:\d+$/, '');
}

function portOf(endpoint: unknown): string {
  const match = /:(\d+)$/.exec(String(endpoint));
  assert.ok(match !== null, `no port in endpoint ${String(endpoint)}`);
  return match[1] as string;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** The process's exit code, or a rejection naming it and its stderr after `timeoutMs`. */
async function exitOf(name: string, proc: CliProcess, timeoutMs: number): Promise<number | null> {
  const timeout = sleep(timeoutMs, 'timeout' as const, { ref: false });
  const result = await Promise.race([proc.exited, timeout]);
  if (result === 'timeout') throw new Error(`${name} did not exit within ${timeoutMs} ms; stderr: ${proc.stderr.slice(-2000)}`);
  return result;
}

/** The last JSON event, which must be `closed`. */
function closedEvent(name: string, proc: CliProcess): CliEvent {
  const last = proc.events.at(-1);
  assert.equal(last?.event, 'closed', `${name}'s last JSON event is "closed"; stderr: ${proc.stderr.slice(-2000)}`);
  return last as CliEvent;
}

/** Polls until `check` returns true; fails at once when one of `procs` exits, or after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, procs: Array<[string, CliProcess]>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    for (const [name, proc] of procs) {
      if (!running(proc.child)) throw new Error(`${name} exited (${proc.child.exitCode ?? proc.child.signalCode}) while waiting for ${what}; stderr: ${proc.stderr.slice(-2000)}`);
    }
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await sleep(POLL_MS);
  }
}

/** Writes `data` to a child's stdin and resolves once the pipe took all of it. */
function feed(child: ChildProcess, data: Buffer, end: boolean): Promise<void> {
  const stdin = child.stdin;
  if (stdin === null) return Promise.reject(new Error('the child has no stdin pipe'));
  return new Promise((resolve, reject) => {
    const done = (err?: Error | null): void => (err ? reject(err) : resolve());
    if (end) stdin.end(data, done);
    else stdin.write(data, done);
  });
}

describe('pipe: 20 MiB each way, half-close in either order, direct and relay, plain and TLS', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;
  let keyDir: string;
  let ca: CaFiles;
  let caFile: string;
  let brokerAddress: string;
  let counter: TrafficCounterReader;
  const data: Record<Side, { file: string; bytes: Buffer; sha: string }> = {} as Record<Side, { file: string; bytes: Buffer; sha: string }>;

  /** Runs `nattrav ARGS --json` on `host` with HOME in our temp dir; stdin/stdout are a pipe or an open file. */
  function startCli(host: LabHost, args: string[], stdin: number | 'pipe', stdout: number | 'ignore'): CliProcess {
    const child = (lab as Lab).spawn(host, process.execPath, [CLI_PATH, ...args, '--json'], {
      stdio: [stdin, stdout, 'pipe'],
      env: { ...process.env, HOME: home },
    });
    // A process killed at teardown must not turn our pending writes into an unhandled error.
    child.stdin?.on('error', () => undefined);
    return new CliProcess(child);
  }

  async function startBroker(port: number, extraArgs: string[]): Promise<string> {
    const l = lab as Lab;
    const address = `${l.broker.address}:${port}`;
    const broker = startCli(l.broker, ['broker', '--listen', address, ...extraArgs], 'pipe', 'ignore');
    await broker.waitForEvent('listening', START_WAIT_MS);
    return address;
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'nattrav-lab-pipe-'));
    home = join(work, 'home');
    keyDir = join(work, 'keys');
    await mkdir(home);
    if (!(await labSupport()).ok) return;
    for (const side of ['listener', 'connector'] as const) {
      const bytes = randomBytes(SIZE);
      const file = join(work, `${side}.bin`);
      await writeFile(file, bytes);
      data[side] = { file, bytes, sha: createHash('sha256').update(bytes).digest('hex') };
    }
    assert.notEqual(data.listener.sha, data.connector.sha);
    ca = await createCa({ name: 'pipe test CA' });
    caFile = join(work, 'ca.pem');
    await writeFile(caFile, ca.certPem);
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
        { name: 'c', nat: 'symmetric' },
        { name: 'd', nat: 'symmetric' },
      ],
    });
    brokerAddress = await startBroker(LAB_BROKER_PORT, []);
    counter = await lab.trafficCounter(lab.broker);
  });
  after(async () => {
    try {
      await lab?.close();
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  /** The recipient's identity for `uri`, issued by the test CA (plain names need one for TLS). */
  async function identityFor(uri: string): Promise<string> {
    const dir = join(work, 'identities', uri.replace(/[^a-z0-9-]/g, '_'));
    const issued = await issueCertificate({ ca, uri });
    await saveIdentity(dir, { uri, keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] });
    return dir;
  }

  /** Sites per path: the recipient and the initiator. */
  function sitesFor(path: PathName): { recipient: LabSite; initiator: LabSite } {
    const l = lab as Lab;
    return path === 'direct' ? { recipient: l.site('b'), initiator: l.site('a') } : { recipient: l.site('d'), initiator: l.site('c') };
  }

  async function transfer(path: PathName, tls: boolean, first: Side): Promise<void> {
    const l = lab as Lab;
    const second: Side = first === 'listener' ? 'connector' : 'listener';
    const uri = `nattrav://pipe-${path}-${tls ? 'tls' : 'plain'}-${first}-first`;
    const { recipient, initiator } = sitesFor(path);
    const dir = await mkdtemp(join(work, 'case-'));
    const out: Record<Side, string> = { listener: join(dir, 'listener.out'), connector: join(dir, 'connector.out') };
    try {
      // TLS is the default; plain TCP needs --no-tls on both sides.
      const listenTls = tls ? ['--tls', '--identity', await identityFor(uri), '--ca', caFile] : ['--no-tls'];
      const connectTls = tls ? ['--tls', '--ca', caFile] : ['--no-tls'];
      // The first side reads its file directly (`< file`); the second gets a pipe we feed.
      const start = async (side: Side, host: LabHost, args: string[]): Promise<CliProcess> => {
        const input = side === first ? await open(data[side].file, 'r') : undefined;
        const output = await open(out[side], 'w');
        try {
          return startCli(host, args, input?.fd ?? 'pipe', output.fd);
        } finally {
          await input?.close();
          await output.close();
        }
      };
      const listener = await start('listener', recipient.host, ['listen', uri, '--broker', brokerAddress, '--key-dir', keyDir, ...listenTls]);
      await listener.waitForEvent('registered', START_WAIT_MS);
      const brokerBefore = await counter();
      const connector = await start('connector', initiator.host, ['connect', uri, '--broker', brokerAddress, ...connectTls]);
      const procs: Record<Side, CliProcess> = { listener, connector };
      const named: Array<[string, CliProcess]> = [['listener', listener], ['connector', connector]];
      const connected = await connector.waitForEvent('connected', CONNECT_WAIT_MS);
      const accepted = await listener.waitForEvent('accepted', START_WAIT_MS);

      // The second side sends half of its data, then waits for all of the first side's data and its FIN.
      const half = SIZE / 2;
      const secondProc = procs[second];
      const firstHalf = feed(secondProc.child, data[second].bytes.subarray(0, half), false);
      // Awaited below; if a wait fails first, a write error at teardown must not go unhandled.
      firstHalf.catch(() => undefined);
      await until(`all ${SIZE} bytes of the ${first} at the ${second}'s stdout`, async () => {
        const size = (await stat(out[second])).size;
        assert.ok(size <= SIZE, `the ${second} received ${size} bytes, more than the ${first} sent`);
        return size === SIZE;
      }, named, TRANSFER_WAIT_MS);
      const secondHost = second === 'listener' ? recipient.host : initiator.host;
      const secondPort = portOf(second === 'listener' ? accepted.local : connected.local);
      await until(`the ${first}'s FIN at the ${second} (CLOSE-WAIT on port ${secondPort})`, async () => {
        const { stdout } = await l.run(secondHost, 'ss', ['-Htn', 'state', 'close-wait', 'sport', '=', `:${secondPort}`]);
        return stdout.trim() !== '';
      }, named, TRANSFER_WAIT_MS);
      await firstHalf;
      // Half-close: the first side ended its direction but still waits for ours.
      assert.ok(running(procs[first].child), `the ${first} must not exit before the ${second} has ended`);
      assert.ok((await stat(out[first])).size <= half, `the ${first} cannot have more than the half the ${second} was given`);
      await feed(secondProc.child, data[second].bytes.subarray(half), true);

      const [listenerExit, connectorExit] = await Promise.all([exitOf('listener', listener, TRANSFER_WAIT_MS), exitOf('connector', connector, TRANSFER_WAIT_MS)]);
      const brokerAfter = await counter();
      assert.equal(listenerExit, 0, `listener exit; stderr: ${listener.stderr.slice(-2000)}`);
      assert.equal(connectorExit, 0, `connector exit; stderr: ${connector.stderr.slice(-2000)}`);
      assert.equal(await sha256(out.listener), data.connector.sha, 'what the listener printed is what the connector read');
      assert.equal(await sha256(out.connector), data.listener.sha, 'what the connector printed is what the listener read');
      for (const [name, proc] of named) {
        const closed = closedEvent(name, proc);
        assert.equal(closed.reason, 'closed', `${name}: ${JSON.stringify(closed)}`);
        assert.equal(closed.bytesIn, SIZE, `${name} bytesIn`);
        assert.equal(closed.bytesOut, SIZE, `${name} bytesOut`);
        assert.equal(closed.message, undefined);
        assert.equal(typeof closed.durationMs, 'number');
      }

      assert.equal(connected.path, path);
      assert.equal(accepted.path, path);
      assert.equal(connected.tls, tls);
      assert.equal(accepted.tls, tls);
      if (tls) assert.equal(connected.peerUri, uri, 'the recipient proved the URI');
      const brokerBytes = brokerAfter.bytesIn + brokerAfter.bytesOut - brokerBefore.bytesIn - brokerBefore.bytesOut;
      if (path === 'direct') {
        // Each side sees the other NAT's public address, exactly the mapping the broker saw.
        assert.equal(hostOf(accepted.remote), initiator.publicAddress);
        assert.equal(hostOf(connected.remote), recipient.publicAddress);
        assert.equal(accepted.remote, connected.public);
        assert.equal(connected.remote, accepted.public);
        assert.ok(brokerBytes < DIRECT_BROKER_BYTES_LIMIT, `the broker host carried ${brokerBytes} bytes during a direct transfer`);
      } else {
        assert.equal(hostOf(connected.remote), l.broker.address);
        assert.equal(hostOf(accepted.remote), l.broker.address);
        // In and out of the broker host, both directions.
        assert.ok(brokerBytes > 4 * SIZE, `the relay carried ${brokerBytes} bytes, less than 2 x 2 x ${SIZE}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  for (const path of ['direct', 'relay'] as const) {
    for (const tls of [false, true]) {
      for (const first of ['listener', 'connector'] as const) {
        test(`${path}, ${tls ? 'TLS' : 'plain'}: the ${first}'s stdin ends first`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
          if (!(await requireLab(t))) return;
          await transfer(path, tls, first);
        });
      }
    }
  }

  let quotaBroker: Promise<string> | undefined;

  /**
   * A relayed transfer of 20 MiB through a broker with a 2 MB quota, plain (--no-tls) or with
   * the default TLS (the listener's kept key, the connector's known_keys in our HOME). The
   * listener's stdin is either left open (it sends nothing and never ends: only the cut can end
   * its connection) or ended at once (as in `nattrav listen URI > file < /dev/null`).
   */
  async function quotaCut(tls: boolean, listenerStdin: 'open' | 'ended'): Promise<void> {
    quotaBroker ??= startBroker(QUOTA_BROKER_PORT, ['--relay-max-bytes', String(QUOTA_BYTES)]);
    const brokerAddr = await quotaBroker;
    const { recipient, initiator } = sitesFor('relay');
    const uri = `nattrav://pipe-relay-quota-${tls ? 'tls' : 'plain'}-stdin-${listenerStdin}`;
    const security = tls ? [] : ['--no-tls'];
    const listener = startCli(recipient.host, ['listen', uri, '--broker', brokerAddr, '--key-dir', keyDir, ...security], 'pipe', 'ignore');
    if (listenerStdin === 'ended') listener.child.stdin?.end();
    await listener.waitForEvent('registered', START_WAIT_MS);
    const input = await open(data.connector.file, 'r');
    let connector: CliProcess;
    try {
      connector = startCli(initiator.host, ['connect', uri, '--broker', brokerAddr, ...security], input.fd, 'ignore');
    } finally {
      await input.close();
    }
    const connected = await connector.waitForEvent('connected', CONNECT_WAIT_MS);
    assert.equal(connected.path, 'relay');
    assert.equal(connected.tls, tls);

    // The sender: its writes meet the reset; it had handed over more than half the quota (the
    // broker counts TLS records and bytes still in flight, so application bytes may be fewer).
    assert.equal(await exitOf('connector', connector, QUOTA_EXIT_WAIT_MS), 9, `connector exit; stderr: ${connector.stderr.slice(-2000)}`);
    const error = connector.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_CONNECTION_BROKEN', connector.stderr);
    assert.match(String(error?.message), /relay cut the connection at its quota \(2000000 bytes/);
    const sent = closedEvent('connector', connector);
    assert.equal(sent.reason, 'relay-quota', JSON.stringify(sent));
    assert.match(String(sent.message), /quota/);
    assert.equal(sent.bytesIn, 0);
    assert.ok(Number(sent.bytesOut) > QUOTA_BYTES / 2 && Number(sent.bytesOut) < SIZE, `connector bytesOut ${String(sent.bytesOut)}: past half the quota, short of the file`);

    // The receiver: it got part of the data, then the reset; it must not take that for a clean end.
    const listenerExit = await exitOf('listener', listener, QUOTA_EXIT_WAIT_MS);
    const received = closedEvent('listener', listener);
    assert.equal(listenerExit, 9, `listener exit after receiving ${String(received.bytesIn)} of ${SIZE} bytes; stderr: ${listener.stderr.slice(-2000)}`);
    assert.ok(received.reason === 'relay-quota' || received.reason === 'reset', JSON.stringify(received));
    assert.match(String(received.message), /quota/);
    assert.equal(received.bytesOut, 0);
    // The relay passes nothing beyond its quota.
    assert.ok(Number(received.bytesIn) > 0 && Number(received.bytesIn) <= QUOTA_BYTES, `listener bytesIn ${String(received.bytesIn)}`);
  }

  for (const tls of [false, true]) {
    for (const listenerStdin of ['open', 'ended'] as const) {
      test(`relay cut by --relay-max-bytes ${QUOTA_BYTES}, ${tls ? 'TLS' : 'plain'}, listener's stdin ${listenerStdin}: both peers exit 9 and name the relay quota`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        if (!(await requireLab(t))) return;
        await quotaCut(tls, listenerStdin);
      });
    }
  }
});
