/**
 * `nattrav broker --workers 2` as a user runs it (the real CLI, loopback): peers register
 * and connect as with one process, over UDP and over a TCP control connection; the
 * cross-worker paths (a Join, mapping probe, relay connection, ConnectionRequest answer or
 * control-connection request landing on another worker than the attempt's) are exercised,
 * as the primary's count of them says; a rate limit holds at one process's level; signals
 * stop every worker; a worker killed by PID is replaced and the broker keeps serving.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { haveRedis, startRedis } from '../helpers/redis-server.js';
import { CLI_PATH, CliProcess, type CliEvent } from '../../src/lab/cli-process.js';
import { strategyMask } from '../../src/nat/strategy.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { runAttempt } from '../../src/peer/attempt.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { encodeMessage } from '../../src/wire/codec.js';
import { ATTEMPT_ID_LENGTH, AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { startRecipient, until } from '../helpers/loopback.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';
import { RawPeer, register as registerRequest } from '../helpers/raw-peer.js';
import { generateKeyPair, sign } from '../../src/security/keys.js';
import { newEphemeralKey, registrationPayload } from '../../src/security/proof.js';

const children: ChildProcess[] = [];
const closers: Array<() => unknown> = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-workers-'));

after(async () => {
  for (const close of closers.reverse()) await close();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

function cli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  return new CliProcess(child);
}

/** A `--workers 2` broker on a free loopback port; resolves once both workers listen. */
async function startWorkers(extra: string[] = []): Promise<{ proc: CliProcess; address: string; pids: number[] }> {
  const proc = cli(['broker', '--listen', '127.0.0.1:0', '--workers', '2', '--json', ...extra]);
  const workers = await proc.waitForEvent('workers', 20_000);
  const listening = await proc.waitForEvent('listening', 1_000);
  return { proc, address: `127.0.0.1:${String(listening.port)}`, pids: workers.pids as number[] };
}

/** How long a stopped broker and its workers may take to exit (a hang fails the test, with the broker's log, instead of holding the suite). */
const STOP_LIMIT_MS = 30_000;

/** SIGTERM, exit 143, and the primary's count of cross-worker traffic. */
async function stopWorkers(proc: CliProcess): Promise<Record<string, number>> {
  proc.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), STOP_LIMIT_MS)));
  const code = await Promise.race([proc.exited, limit]).finally(() => clearTimeout(timer));
  if (code === 'hung') proc.child.kill('SIGKILL');
  assert.equal(code, 143, `the broker's exit (hung: still running ${STOP_LIMIT_MS} ms after SIGTERM); its stderr ends:\n${proc.stderr.slice(-3000)}`);
  const stopped = proc.events.find((e: CliEvent) => e.event === 'workers-stopped');
  assert.ok(stopped !== undefined, `no workers-stopped event in:\n${proc.stderr}`);
  return stopped.routed as Record<string, number>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Connects to `uri` and checks the echo of a fresh payload. */
async function echoOnce(address: string, uri: string): Promise<NattravSocket> {
  const socket = await connect({ broker: address, uri, tls: false, knownKeysFile: false, timeoutMs: 15_000 });
  const payload = randomBytes(8).toString('hex');
  socket.write(payload);
  let got = '';
  socket.on('data', (chunk: Buffer) => (got += chunk.toString()));
  await until(() => got === payload, 5_000, `the echo of ${payload}`);
  socket.end();
  return socket;
}

/** How long a recipient may take to register with the workers (a CI run once waited here without end; now it fails, with what the recipient saw). */
const REGISTER_LIMIT_MS = 30_000;

/** An echoing recipient registered as `uri` (over UDP, or a TCP control connection). */
async function echoRecipient(address: string, uri: string, registerTransport: 'udp' | 'tcp' = 'udp', brokers?: string[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${uri} did not register with ${address} within ${REGISTER_LIMIT_MS} ms`)), REGISTER_LIMIT_MS)));
  const { server } = await Promise.race([
    startRecipient(address, uri, { tls: false, keyDir: join(home, 'keys'), registerTransport, ...(brokers === undefined ? {} : { broker: brokers }) }),
    limit,
  ]).finally(() => clearTimeout(timer));
  server.on('connection', (socket: NattravSocket) => socket.pipe(socket));
  closers.push(() => server.close());
}

describe('nattrav broker --workers', () => {
  test('bad --workers is a usage error naming the flag and the range (exit 2), before any worker starts', async () => {
    for (const bad of ['0', 'two', '1.5', '100000']) {
      const proc = cli(['broker', '--listen', '127.0.0.1:0', '--workers', bad]);
      assert.equal(await proc.exited, 2, bad);
      assert.match(proc.stderr, /--workers.*whole number from 1 to \d+/, bad);
      assert.doesNotMatch(proc.stderr, /worker-started/);
    }
  });

  test('a port in use: exit 10 naming the port, said once (by the primary), no worker left running', async () => {
    const { proc: holder, address } = await startWorkers();
    const port = address.split(':')[1] as string;
    const second = cli(['broker', '--listen', address, '--workers', '2', '--json']);
    assert.equal(await second.exited, 10);
    assert.equal(second.stderr.split('\n').filter((line) => line.includes(`port ${port} is in use`)).length, 1, second.stderr);
    assert.equal(second.events.filter((e) => e.event === 'worker-started').length, 0);
    await stopWorkers(holder);
  });

  test('without --workers the broker is one process, as before', async () => {
    const proc = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
    const listening = await proc.waitForEvent('listening', 10_000);
    assert.equal(listening.worker, undefined);
    proc.child.kill('SIGINT');
    assert.equal(await proc.exited, 130);
    assert.ok(!proc.events.some((e) => e.event === 'workers' || e.event === 'workers-stopped'));
  });

  test('register over UDP and connect, many times: Joins, probes and answers cross workers and every connect succeeds', async () => {
    const { proc, address } = await startWorkers();
    await echoRecipient(address, 'nattrav://many');
    for (let i = 0; i < 12; i++) {
      // The primary deals connections round robin and an attempt opens four: an extra one now and then moves the next Connect to the other worker.
      if (i % 3 === 0) await tcpBinding(address);
      await echoOnce(address, 'nattrav://many');
    }
    const routed = await stopWorkers(proc);
    const connectWorkers = new Set(proc.events.filter((e) => e.event === 'attempt').map((e) => e.worker));
    assert.deepEqual([...connectWorkers].sort(), [1, 2], 'Connects were taken by both workers');
    // Two workers dealt connections round robin: some Joins and probes surely landed on the other one.
    assert.ok((routed.join ?? 0) > 0, `no Join crossed workers: ${JSON.stringify(routed)}`);
    assert.ok((routed.probe ?? 0) > 0, `no mapping probe crossed workers: ${JSON.stringify(routed)}`);
    assert.ok((routed.ack ?? 0) > 0, `no ConnectionRequest answer crossed workers: ${JSON.stringify(routed)}`);
    assert.equal(proc.events.filter((e) => e.event === 'scheduled').length, 12);
  });

  test('a recipient on a TCP control connection held by one worker is asked by the other', async () => {
    const { proc, address } = await startWorkers();
    await echoRecipient(address, 'nattrav://controlled', 'tcp');
    for (let i = 0; i < 8; i++) await echoOnce(address, 'nattrav://controlled');
    const routed = await stopWorkers(proc);
    assert.ok((routed.control ?? 0) > 0, `no ConnectionRequest went to the worker holding the control connection: ${JSON.stringify(routed)}`);
    assert.ok((routed.ack ?? 0) > 0, `no answer went back to the attempt's worker: ${JSON.stringify(routed)}`);
  });

  for (const brokerTls of [false, true]) {
    const how = brokerTls ? 'over TLS to the broker (the connections stay, their bytes cross)' : 'plain (the connections move)';
    test(`relay, ${how}: both sides meet on the worker that scheduled it, bytes flow both ways`, async () => {
      const tls = brokerTls ? await brokerCertificate() : undefined;
      const { proc, address } = await startWorkers(tls === undefined ? [] : ['--cert', tls.certFile, '--key', tls.keyFile]);
      const brokerCa = tls === undefined ? {} : { brokerCa: tls.caPem };
      const { server, accepted } = await startRecipient(address, 'nattrav://relayed', { tls: false, keyDir: join(home, 'keys'), ...brokerCa });
      closers.push(() => server.close());
      for (let i = 0; i < 6; i++) {
        if (i % 2 === 1) await tcpBinding(address);
        const socket = await relayedAttempt(address, 'nattrav://relayed', tls?.caPem);
        assert.equal(socket.nattrav.path, 'relay');
        await until(() => accepted.length === i + 1, 5_000, 'the relayed recipient');
        const other = accepted[i] as NattravSocket;
        socket.write('x'.repeat(100_000));
        let got = 0;
        other.on('data', (chunk: Buffer) => (got += chunk.length));
        await until(() => got === 100_000, 5_000, 'relayed bytes');
        other.end('bye');
        const [reply] = (await once(socket, 'data')) as [Buffer];
        assert.equal(reply.toString(), 'bye');
        socket.end();
      }
      await until(() => proc.events.filter((e) => e.event === 'relay-ended').length === 6, 5_000, 'every relay to end');
      const routed = await stopWorkers(proc);
      assert.ok((routed.relay ?? 0) > 0, `no relay connection crossed workers: ${JSON.stringify(routed)}`);
      assert.equal(proc.events.filter((e) => e.event === 'relay-started').length, 6);
      assert.ok(proc.events.filter((e) => e.event === 'relay-ended').every((e) => e.reason === 'closed' && (e.bytes as number) >= 100_003));
    });
  }

  test('--http is served by worker 1 for the whole broker: attempts and registrations from both workers count', async () => {
    const { proc, address } = await startWorkers(['--http', '127.0.0.1:0']);
    const http = await proc.waitForEvent('http-listening', 10_000);
    assert.equal(proc.events.filter((e) => e.event === 'http-listening').length, 1, 'one status server');
    await echoRecipient(address, 'nattrav://watched');
    const connects = 6;
    for (let i = 0; i < connects; i++) {
      await tcpBinding(address);
      await echoOnce(address, 'nattrav://watched');
    }
    const connectWorkers = new Set(proc.events.filter((e) => e.event === 'attempt').map((e) => e.worker));
    assert.equal(connectWorkers.size, 2, 'Connects were taken by both workers');
    const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> =>
      sampleValue(parsePrometheusText(await (await fetch(`${String(http.url)}metrics`)).text()), name, labels);
    // The other worker reports to worker 1 four times a second.
    const deadline = Date.now() + 5_000;
    while ((await metric('nattrav_broker_attempts_started_total')) !== connects && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(await metric('nattrav_broker_attempts_started_total'), connects);
    assert.equal(await metric('nattrav_broker_attempts_total', { path: 'public', result: 'scheduled' }), connects);
    assert.equal(await metric('nattrav_broker_registrations_active'), 1);
    await stopWorkers(proc);
  });

  test('--limit maxSessions holds for the whole broker: the primary\'s session table has that size', async () => {
    const { proc, address } = await startWorkers(['--limit', 'maxSessions=1']);
    const port = Number(address.split(':')[1]);
    const peers: Array<() => unknown> = [];
    try {
      const first = await RawPeer.open(port, peers);
      await first.register('nattrav://first', generateKeyPair());
      // Whichever worker the next one reaches, the one table is full.
      for (const uri of ['nattrav://second', 'nattrav://third']) {
        const next = await RawPeer.open(port, peers);
        await assert.rejects(next.register(uri, generateKeyPair()), /"code":500.*broker full/);
      }
    } finally {
      for (const close of peers) await close();
    }
    await stopWorkers(proc);
  });

  test('a registration proof is taken once by the whole broker: replayed to any worker it is refused', async () => {
    const { proc, address } = await startWorkers();
    const port = Number(address.split(':')[1]);
    const peers: Array<() => unknown> = [];
    try {
      const peer = await RawPeer.open(port, peers);
      const key = generateKeyPair();
      const uri = 'nattrav://proved-once';
      const hello = registerRequest(uri, 60_000);
      hello.add(AttrType.PublicKey, key.spki);
      const nonce = (await peer.send(hello)).get(AttrType.Nonce) as Uint8Array;
      const ephemeral = newEphemeralKey();
      const proof = registerRequest(uri, 60_000);
      proof.add(AttrType.PublicKey, key.spki);
      proof.add(AttrType.Nonce, nonce);
      proof.add(AttrType.EphemeralKey, ephemeral.publicKey);
      proof.add(AttrType.Signature, sign(key.privateKeyPem, registrationPayload({ nonce, uri, ephemeralKey: ephemeral.publicKey, lifetimeMs: 60_000, transport: 'udp' })));
      const bytes = encodeMessage(proof);
      // A nonce minted by one worker is good at any worker, once.
      assert.equal((await peer.sendBytes(bytes)).cls, MessageClass.SuccessResponse);
      for (let i = 0; i < 8; i++) {
        const again = await peer.sendBytes(bytes);
        assert.equal(getErrorCode(again)?.code, StunErrorCode.Forbidden, `replay ${i}: ${JSON.stringify(getErrorCode(again))}`);
      }
    } finally {
      for (const close of peers) await close();
    }
    await stopWorkers(proc);
  });

  test('a per-source rate limit holds at one process\'s level, not twice it', async () => {
    // connect=1/6: one broker admits a burst of 6 Connects from one address (then one a second).
    const { proc, address } = await startWorkers(['--limit', 'connect=1/6']);
    const port = Number(address.split(':')[1]);
    const answers: number[] = [];
    for (let i = 0; i < 16; i++) answers.push(await connectAnswer(port));
    const admitted = answers.filter((code) => code === StunErrorCode.NotFound).length;
    const refused = answers.filter((code) => code === StunErrorCode.TooManyRequests).length;
    assert.equal(admitted + refused, 16, `answers: ${answers.join(',')}`);
    // Two workers with the whole limit each would admit 12; their shares admit 6 (+1 refilled while the test ran).
    assert.ok(admitted >= 2 && admitted <= 7, `admitted ${admitted} of 16 (${answers.join(',')})`);
    await stopWorkers(proc);
  });

  test('with --redis each worker is a broker of the cluster: recipients of a one-process broker and of the workers reach each other both ways', async (t) => {
    if (!(await haveRedis(t))) return;
    const redis = await startRedis();
    closers.push(() => redis.stop());
    const { proc, address } = await startWorkers(['--redis', redis.url]);
    assert.equal(proc.events.filter((e) => e.event === 'registry' && e.kind === 'redis').length, 2, 'both workers opened Redis');
    assert.equal(proc.events.filter((e) => e.event === 'cluster').length, 2, 'both workers joined the bus');
    const single = cli(['broker', '--listen', '127.0.0.1:0', '--redis', redis.url, '--json']);
    const listening = await single.waitForEvent('listening', 20_000);
    const other = `127.0.0.1:${String(listening.port)}`;
    // Recipients on the workers (UDP and a TCP control connection) and on the single broker.
    // Each lists both brokers (in its order): a recipient joins attempts only at brokers it knows.
    await echoRecipient(address, 'nattrav://on-workers-udp', 'udp', [address, other]);
    await echoRecipient(address, 'nattrav://on-workers-tcp', 'tcp', [address, other]);
    await echoRecipient(other, 'nattrav://on-single', 'udp', [other, address]);
    for (let i = 0; i < 4; i++) {
      if (i % 2 === 0) await tcpBinding(address);
      for (const uri of ['nattrav://on-workers-udp', 'nattrav://on-workers-tcp']) await echoOnce(other, uri);
      await echoOnce(address, 'nattrav://on-single');
      for (const uri of ['nattrav://on-workers-udp', 'nattrav://on-workers-tcp']) await echoOnce(address, uri);
    }
    single.child.kill('SIGTERM');
    assert.equal(await single.exited, 143);
    await stopWorkers(proc);
  });

  test('SIGINT stops every worker (exit 130); a worker killed by PID is replaced and the broker keeps serving', async () => {
    const { proc, address, pids } = await startWorkers();
    assert.equal(pids.length, 2);
    await echoRecipient(address, 'nattrav://survivor');
    await echoOnce(address, 'nattrav://survivor');
    const victim = pids[0] as number;
    process.kill(victim, 'SIGKILL');
    const exited = await proc.waitForEvent('worker-exited', 10_000);
    assert.equal(exited.pid, victim);
    assert.equal(exited.signal, 'SIGKILL');
    const restarted = await proc.waitForEvent('worker-started', 10_000, (e) => e.slot === exited.slot && e.pid !== victim);
    assert.ok(alive(restarted.pid as number));
    // The registry lives in the primary: the recipient's registration outlived the worker.
    for (let i = 0; i < 6; i++) {
      await tcpBinding(address);
      await echoOnce(address, 'nattrav://survivor');
    }
    proc.child.kill('SIGINT');
    assert.equal(await proc.exited, 130);
    for (const pid of [pids[1] as number, restarted.pid as number]) await until(() => !alive(pid), 5_000, `worker ${pid} to exit`);
  });

  test('a primary killed by PID takes its workers with it (they see the IPC channel close)', async () => {
    const { proc, pids } = await startWorkers();
    proc.child.kill('SIGKILL');
    await proc.exited;
    for (const pid of pids) await until(() => !alive(pid), 10_000, `worker ${pid} to exit after its primary`);
  });
});

/** One attempt whose initiator claims lan, public and direct failed: on loopback the broker then relays. */
async function relayedAttempt(address: string, uri: string, brokerCa?: string): Promise<NattravSocket> {
  const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
  const request = StunMessage.request(Method.Connect);
  addUri(request, uri);
  addAttemptId(request, attemptId);
  addU32(request, AttrType.FailedStrategies, strategyMask(['lan', 'public', 'direct']));
  const [host, port] = address.split(':');
  return runAttempt({
    broker: { host: host as string, port: Number(port) },
    request,
    attemptId,
    role: 'initiator',
    ...(brokerCa === undefined ? {} : { brokerCa }),
    tls: false,
    uri,
    signal: AbortSignal.timeout(10_000),
    exchangeTimeoutMs: 5_000,
    punchTimeoutMs: 3_000,
    started: performance.now(),
    attempt: 1,
    trace: [],
  });
}

/** A broker certificate from a new CA, in files for --cert/--key, and the CA for the peers' brokerCa. */
async function brokerCertificate(): Promise<{ certFile: string; keyFile: string; caPem: string }> {
  const ca = await createCa({ name: 'workers test broker CA' });
  const issued = await issueCertificate({ ca, uri: 'nattrav-broker://workers-test' });
  const certFile = join(home, 'broker-cert.pem');
  const keyFile = join(home, 'broker-key.pem');
  await writeFile(certFile, issued.certPem);
  await writeFile(keyFile, issued.keyPem);
  return { certFile, keyFile, caPem: ca.certPem };
}

/** One Binding on a fresh TCP connection (it moves the primary's round robin on by one). */
async function tcpBinding(address: string): Promise<void> {
  const socket = netConnect({ host: '127.0.0.1', port: Number(address.split(':')[1]) });
  socket.on('error', () => undefined);
  try {
    await once(socket, 'connect');
    const request = StunMessage.request(Method.Binding);
    socket.write(encodeMessage(request));
    const decoder = new StunStreamDecoder();
    for await (const chunk of socket) if (decoder.push(chunk as Buffer).length > 0) return;
  } finally {
    socket.destroy();
  }
}

/** Sends one Connect for an unregistered URI on a fresh connection; resolves with the answer's error code. */
async function connectAnswer(port: number): Promise<number> {
  const socket = netConnect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  try {
    await once(socket, 'connect');
    const request = StunMessage.request(Method.Connect);
    addUri(request, 'nattrav://nobody-here');
    socket.write(encodeMessage(request, { fingerprint: true }));
    const decoder = new StunStreamDecoder();
    for await (const chunk of socket) {
      const answer = decoder.push(chunk as Buffer).find((m) => m.cls === MessageClass.ErrorResponse);
      if (answer !== undefined) return getErrorCode(answer)?.code ?? 0;
    }
    return 0;
  } finally {
    socket.destroy();
  }
}
