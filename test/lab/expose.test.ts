/**
 * Issue 9 "expose and forward", in the real-kernel lab: an HTTP server behind a
 * port-restricted NAT (site a) made reachable with `nattrav expose`; behind a sequential
 * symmetric NAT (site b), `nattrav forward` and curl.
 *
 * 1. 20 parallel downloads of one 10 MB file arrive intact (SHA-256 of each), a 10 MB
 *    upload arrives intact (the server answers the SHA-256 of what it read), and each
 *    connection is logged on both sides with its byte counts. An exposed port where
 *    nothing listens: curl's connection is reset (exit 56) and both sides log the reason.
 * 2. The broker is stopped and started again while `expose` runs: expose reports the lost
 *    registration, registers again within one keepalive interval (10 s) of the broker being
 *    back, a new download through the running forward works, and expose never exited.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { CLI_PATH, CliProcess, type CliEvent } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import { LAB_BROKER_PORT } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import type { LabHost } from '../../src/lab/types.js';
import { LineReader, requireLab } from './helpers.js';

/** The issue's sizes: 20 downloads of 10 MB, one upload of 10 MB. */
const FILE_BYTES = 10 * 1024 * 1024;
const DOWNLOADS = 20;
/** Ports inside the sites: the HTTP server, a port where nothing listens, the forwards. */
const HTTP_PORT = 8080;
const DEAD_PORT = 8081;
const FORWARD_PORT = 9090;
const DEAD_FORWARD_PORT = 9091;
/** Node start-up in a namespace plus registration, on a loaded 2-core machine. */
const START_WAIT_MS = 30_000;
/** 200 MB through NATs (some of it relayed through the broker) with TLS on a busy machine: generous, never asserted. */
const TRANSFER_WAIT_MS = 180_000;
/** The exposer's keepalive (PEER_DEFAULTS.keepaliveMs): a lost registration is tried at least this often. */
const KEEPALIVE_MS = 10_000;
/** One registration transaction (PEER_DEFAULTS.registerTimeoutMs) and slack for a loaded machine, on top of a keepalive. */
const REREGISTER_SLACK_MS = 8_000;
/** A refresh fails within keepalive + its transaction limit; more slack for a loaded machine. */
const LOSS_WAIT_MS = 30_000;
/** Per test: set-up, transfers and teardown, each bounded above. */
const TEST_TIMEOUT_MS = 6 * 60_000;
/** curl exits 56 on "Recv failure: Connection reset by peer". */
const CURL_RECV_FAILURE = 56;

const httpFixture = fileURLToPath(new URL('./fixtures/http-files.js', import.meta.url));

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** The `closed` events a CLI process logged, one per connection. */
function closedEvents(proc: CliProcess): CliEvent[] {
  return proc.events.filter((e) => e.event === 'closed');
}

describe('expose and forward: HTTP behind a port-restricted NAT, curl behind a sequential symmetric NAT', () => {
  let lab: Lab | undefined;
  let work: string;
  let home: string;
  let file: string;
  let fileSha: string;
  let upload: string;
  let uploadSha: string;
  let broker: CliProcess | undefined;
  let brokerAddress: string;

  /** Runs `nattrav ARGS --json` on `host` with HOME in our temp dir (killed by PID when the lab closes). */
  function startCli(host: LabHost, args: string[]): CliProcess {
    const child = (lab as Lab).spawn(host, process.execPath, [CLI_PATH, ...args, '--json'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
    child.stdin?.on('error', () => undefined);
    return new CliProcess(child);
  }

  async function startBroker(): Promise<CliProcess> {
    const l = lab as Lab;
    const proc = startCli(l.broker, ['broker', '--listen', brokerAddress]);
    await proc.waitForEvent('listening', START_WAIT_MS);
    return proc;
  }

  /** `nattrav expose PORT` on site a; resolves with the process and the URI it printed on stdout. */
  async function startExpose(port: number): Promise<{ proc: CliProcess; uri: string }> {
    const proc = startCli((lab as Lab).site('a').host, ['expose', String(port), '--broker', brokerAddress]);
    const stdout = await proc.waitForStdout('\n', START_WAIT_MS);
    const result = JSON.parse(stdout.split('\n')[0] as string) as { event: string; uri: string };
    assert.equal(result.event, 'exposed');
    assert.match(result.uri, /^nattrav:\/\/k-[a-z2-7]{52}$/);
    return { proc, uri: result.uri };
  }

  /** `nattrav forward URI --listen 127.0.0.1:PORT` on site b, once it listens. */
  async function startForward(uri: string, port: number): Promise<CliProcess> {
    const proc = startCli((lab as Lab).site('b').host, ['forward', uri, '--listen', `127.0.0.1:${port}`, '--broker', brokerAddress]);
    await proc.waitForEvent('forwarding', START_WAIT_MS);
    return proc;
  }

  /** Runs curl on site b; resolves with its exit code and stderr. */
  async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const l = lab as Lab;
    return l.run(l.site('b').host, 'curl', ['-sS', '--max-time', String(TRANSFER_WAIT_MS / 1000), ...args], { timeoutMs: TRANSFER_WAIT_MS + 10_000, allowFailure: true });
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'nattrav-lab-expose-'));
    home = join(work, 'home');
    await mkdir(home);
    if (!(await labSupport()).ok) return;
    const bytes = randomBytes(FILE_BYTES);
    file = join(work, 'served.bin');
    await writeFile(file, bytes);
    fileSha = createHash('sha256').update(bytes).digest('hex');
    const uploadBytes = randomBytes(FILE_BYTES);
    upload = join(work, 'upload.bin');
    await writeFile(upload, uploadBytes);
    uploadSha = createHash('sha256').update(uploadBytes).digest('hex');
    lab = await Lab.create({ sites: [{ name: 'a', nat: 'port-restricted' }, { name: 'b', nat: 'symmetric-sequential' }] });
    brokerAddress = `${lab.broker.address}:${LAB_BROKER_PORT}`;
    broker = await startBroker();
    const server = lab.spawn(lab.site('a').host, process.execPath, [httpFixture, 'serve', String(HTTP_PORT), file], { stdio: ['pipe', 'pipe', 'inherit'] });
    const ready = JSON.parse((await new LineReader(server).next(START_WAIT_MS)) ?? '{}') as { event?: string };
    assert.equal(ready.event, 'ready');
  });
  after(async () => {
    try {
      await lab?.close();
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  test('20 parallel 10 MB downloads and a 10 MB upload arrive intact; a refused service resets curl and both sides log why', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t))) return;
    const { proc: exposer, uri } = await startExpose(HTTP_PORT);
    const forwarder = await startForward(uri, FORWARD_PORT);
    const url = `http://127.0.0.1:${FORWARD_PORT}`;

    const downloads = join(work, 'downloads');
    await mkdir(downloads);
    const outputs = Array.from({ length: DOWNLOADS }, (_, i) => join(downloads, `${i}.bin`));
    const got = await curl(['--fail', '--parallel', '--parallel-immediate', '--parallel-max', String(DOWNLOADS), ...outputs.flatMap((out) => ['-o', out, `${url}/file`])]);
    assert.equal(got.code, 0, `curl downloads: ${got.stderr}; forward: ${forwarder.stderr.slice(-3000)}`);
    for (const [i, out] of outputs.entries()) assert.equal(await sha256(out), fileSha, `download ${i} is the served file`);

    const sent = await curl(['--fail', '-H', 'Content-Type: application/octet-stream', '--data-binary', `@${upload}`, `${url}/upload`]);
    assert.equal(sent.code, 0, `curl upload: ${sent.stderr}`);
    assert.equal(sent.stdout.trim(), `${uploadSha} ${FILE_BYTES}`, 'the server read exactly the uploaded bytes');

    // Every connection is logged on both sides: the downloads carried the file to the client, the upload carried it to the server.
    const connections = DOWNLOADS + 1;
    for (const [name, proc] of [['forward', forwarder], ['expose', exposer]] as const) {
      const deadline = Date.now() + START_WAIT_MS;
      while (closedEvents(proc).length < connections && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      const closed = closedEvents(proc);
      assert.equal(closed.length, connections, `${name} logged every connection: ${proc.stderr.slice(-3000)}`);
      for (const event of closed) assert.equal(event.reason, 'closed', `${name}: ${JSON.stringify(event)}`);
      // The client's side of the files: what forward received (bytesIn), what expose sent (bytesOut).
      const toClient = closed.map((e) => Number(name === 'forward' ? e.bytesIn : e.bytesOut));
      const toServer = closed.map((e) => Number(name === 'forward' ? e.bytesOut : e.bytesIn));
      assert.equal(toClient.filter((n) => n > FILE_BYTES).length, DOWNLOADS, `${name}: ${DOWNLOADS} connections carried more than the file to the client`);
      assert.equal(toServer.filter((n) => n > FILE_BYTES).length, 1, `${name}: one connection carried the upload to the server`);
    }
    const paths = forwarder.events.filter((e) => e.event === 'connected').map((e) => String(e.path));
    t.diagnostic(`paths of the ${paths.length} connections: ${[...new Set(paths)].map((p) => `${p} x${paths.filter((q) => q === p).length}`).join(', ')}`);

    // Nothing listens on DEAD_PORT: curl's connection is reset, and both sides say why.
    const { proc: deadExposer, uri: deadUri } = await startExpose(DEAD_PORT);
    const deadForwarder = await startForward(deadUri, DEAD_FORWARD_PORT);
    const refused = await curl([`http://127.0.0.1:${DEAD_FORWARD_PORT}/file`]);
    assert.equal(refused.code, CURL_RECV_FAILURE, `curl to a refused service: ${refused.stderr}`);
    assert.match(refused.stderr, /Connection reset by peer/);
    const atForwarder = await deadForwarder.waitForEvent('closed', START_WAIT_MS);
    assert.equal(atForwarder.reason, 'refused');
    assert.match(String(atForwarder.message), /the exposed service refused the connection \(ECONNREFUSED\)/);
    const atExposer = await deadExposer.waitForEvent('closed', START_WAIT_MS);
    assert.equal(atExposer.reason, 'refused');
    assert.match(String(atExposer.message), new RegExp(`the service at 127\\.0\\.0\\.1:${DEAD_PORT} refused the connection`));

    for (const proc of [deadForwarder, deadExposer, forwarder, exposer]) {
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exited, 143, proc.stderr.slice(-2000));
    }
  });

  test('the broker restarts while expose runs: it registers again within a keepalive, a new connection works, expose never exits', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!(await requireLab(t))) return;
    const { proc: exposer, uri } = await startExpose(HTTP_PORT);
    const forwarder = await startForward(uri, FORWARD_PORT + 10);
    const url = `http://127.0.0.1:${FORWARD_PORT + 10}/file`;
    const previous = await curl(['--fail', '-o', join(work, 'before.bin'), url]);
    assert.equal(previous.code, 0, `curl before the restart: ${previous.stderr}`);

    const old = broker as CliProcess;
    old.child.kill('SIGTERM');
    assert.equal(await old.exited, 143);
    await exposer.waitForEvent('registration-lost', LOSS_WAIT_MS);
    broker = await startBroker();
    const back = Date.now();
    await exposer.waitForEvent('registered', KEEPALIVE_MS + REREGISTER_SLACK_MS, (e) => e.again === true);
    const reregisteredMs = Date.now() - back;
    t.diagnostic(`registered again ${reregisteredMs} ms after the broker was back`);

    const next = await curl(['--fail', '-o', join(work, 'after.bin'), url]);
    assert.equal(next.code, 0, `curl after the restart: ${next.stderr}; forward: ${forwarder.stderr.slice(-2000)}`);
    assert.equal(await sha256(join(work, 'after.bin')), fileSha);
    assert.ok(running(exposer.child), 'expose is still running');
    assert.ok(running(forwarder.child), 'forward is still running');
    for (const proc of [forwarder, exposer]) {
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exited, 143, proc.stderr.slice(-2000));
    }
  });
});
