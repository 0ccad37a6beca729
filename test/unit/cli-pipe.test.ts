/**
 * `nattrav listen` / `connect` as a pipe users can trust, on loopback with real
 * processes: every byte both ways whatever order the inputs end in, plain and TLS;
 * a broken connection exits 9 with the cause; signals exit 130/143 promptly with
 * stdout flushed; bad input exits 2 before any traffic.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { createCa, issueCertificate, saveIdentity, writeCaDir } from '../../src/security/index.js';
import { until } from '../helpers/loopback.js';

const MB = 1_000_000;
const dir = mkdtempSync(join(tmpdir(), 'nattrav-pipe-'));
const children: ChildProcess[] = [];
const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

interface Spawned {
  proc: CliProcess;
  /** The file stdout goes to. */
  stdoutFile: string;
}

/** Runs the CLI with stdin from a file (or a pipe we feed) and stdout into a file, HOME in our temp dir. */
function cli(args: string[], io: { stdinFile?: string; stdoutFile?: string } = {}): Spawned {
  const stdoutFile = io.stdoutFile ?? join(dir, `out-${randomBytes(4).toString('hex')}`);
  const outFd = openSync(stdoutFile, 'w');
  const inFd = io.stdinFile === undefined ? 'pipe' : openSync(io.stdinFile, 'r');
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: [inFd, outFd, 'pipe'], env: { ...process.env, HOME: join(dir, 'home') } });
  closeSync(outFd);
  if (typeof inFd === 'number') closeSync(inFd);
  children.push(child);
  // A write after the process exited (a test feeding a connection that broke) is not the test's failure.
  child.stdin?.on('error', () => undefined);
  return { proc: new CliProcess(child), stdoutFile };
}

const size = (file: string): number => statSync(file).size;

async function broker(extra: string[] = []): Promise<{ proc: CliProcess; address: string }> {
  const { proc } = cli(['broker', '--listen', '127.0.0.1:0', '--json', ...extra]);
  const listening = await proc.waitForEvent('listening', 10_000);
  return { proc, address: `127.0.0.1:${String(listening.port)}` };
}

async function listener(uri: string, address: string, extra: string[] = [], io: { stdinFile?: string } = {}): Promise<Spawned> {
  const spawned = cli(['listen', uri, '--broker', address, '--json', ...extra], io);
  await spawned.proc.waitForEvent('registered', 10_000);
  return spawned;
}

/** A CA and an identity for `uri`, as `nattrav ca init` / `ca issue` write them. */
async function tlsFiles(uri: string): Promise<{ identity: string; caPem: string }> {
  const ca = await createCa({ name: 'pipe test CA' });
  const caDir = join(dir, `ca-${randomBytes(4).toString('hex')}`);
  await writeCaDir(caDir, ca);
  const issued = await issueCertificate({ ca, uri });
  const identity = join(dir, `id-${randomBytes(4).toString('hex')}`);
  await saveIdentity(identity, { uri, keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] });
  return { identity, caPem: join(caDir, 'ca.pem') };
}

function lastEvent(proc: CliProcess): Record<string, unknown> | undefined {
  return proc.events[proc.events.length - 1];
}

after(() => {
  for (const child of children) if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('nattrav listen/connect: a pipe users can trust', () => {

  // no-tls: both sides opt out; default: no flag at all (TLS, the plain name's key from the broker); ca: identities from a CA.
  for (const mode of ['no-tls', 'default', 'ca'] as const) {
    for (const first of ['listener', 'connector'] as const) {
      test(`20 MB each way (${mode}), the ${first}'s stdin ends first: every byte arrives, both exit 0`, async () => {
        const { proc: brokerProc, address } = await broker();
        const uri = `nattrav://pipe-${first}-${mode}`;
        const files = mode === 'ca' ? await tlsFiles(uri) : undefined;
        const data = { listener: randomBytes(20 * MB), connector: randomBytes(20 * MB) };
        const inputs = { listener: join(dir, `${uri.slice(10)}-l.in`), connector: join(dir, `${uri.slice(10)}-c.in`) };
        writeFileSync(inputs.listener, data.listener);
        writeFileSync(inputs.connector, data.connector);
        const tlsListen = mode === 'no-tls' ? ['--no-tls'] : files === undefined ? [] : ['--identity', files.identity, '--ca', files.caPem];
        const tlsConnect = mode === 'no-tls' ? ['--no-tls'] : files === undefined ? [] : ['--ca', files.caPem];
        // The first side's stdin is a file (it ends as soon as it is sent); the second side's is a
        // pipe we end only after the first side's whole input has arrived on the second's stdout.
        const listen = await listener(uri, address, tlsListen, first === 'listener' ? { stdinFile: inputs.listener } : {});
        const connect = cli(['connect', uri, '--broker', address, '--json', ...tlsConnect], first === 'connector' ? { stdinFile: inputs.connector } : {});
        const second = first === 'listener' ? connect : listen;
        const secondData = first === 'listener' ? data.connector : data.listener;
        second.proc.child.stdin?.write(secondData);
        await until(() => size(second.stdoutFile) === 20 * MB, 60_000, `the ${first}'s 20 MB to arrive`);
        assert.equal(second.proc.child.exitCode, null, 'the second side is still running: its direction is still open');
        second.proc.child.stdin?.end();
        assert.equal(await connect.proc.exited, 0, connect.proc.stderr);
        assert.equal(await listen.proc.exited, 0, listen.proc.stderr);
        assert.equal(sha(readFileSync(listen.stdoutFile)), sha(data.connector));
        assert.equal(sha(readFileSync(connect.stdoutFile)), sha(data.listener));
        for (const side of [connect, listen]) {
          const closed = lastEvent(side.proc);
          assert.equal(closed?.event, 'closed');
          assert.equal(closed?.reason, 'closed');
          assert.equal(closed?.bytesIn, 20 * MB);
          assert.equal(closed?.bytesOut, 20 * MB);
          assert.equal(typeof closed?.durationMs, 'number');
        }
        const connected = await connect.proc.waitForEvent('connected', 1_000);
        assert.equal(connected.tls, mode !== 'no-tls');
        // The TLS handshake's share of the setup, only with TLS.
        assert.equal(typeof connected.tlsMs, mode === 'no-tls' ? 'undefined' : 'number');
        if (mode !== 'no-tls') {
          // The connector checked the listener's key: the one the listener printed.
          const registered = await listen.proc.waitForEvent('registered', 1_000);
          assert.equal(connected.peerKey, registered.key);
          assert.equal(connected.peerVouchedBy, mode === 'ca' ? 'ca' : 'key');
        }
        brokerProc.child.kill('SIGTERM');
        await brokerProc.exited;
      });
    }
  }

  test('the listener killed mid-transfer (SIGKILL): connect exits 9 naming the reset, with the byte counts', async () => {
    const { proc: brokerProc, address } = await broker();
    const listen = await listener('nattrav://killed', address);
    const connect = cli(['connect', 'nattrav://killed', '--broker', address, '--json']);
    await connect.proc.waitForEvent('connected', 15_000);
    connect.proc.child.stdin?.write(randomBytes(4 * MB));
    await until(() => size(listen.stdoutFile) > 0, 10_000, 'data to reach the listener');
    listen.proc.child.kill('SIGKILL');
    // Keep writing: the dead side answers with a reset.
    const writer = setInterval(() => connect.proc.child.stdin?.write(randomBytes(256 * 1024)), 20);
    try {
      assert.equal(await connect.proc.exited, 9, connect.proc.stderr);
    } finally {
      clearInterval(writer);
    }
    const error = connect.proc.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_CONNECTION_BROKEN');
    assert.match(String(error?.message), /reset \((ECONNRESET|EPIPE)\): the other peer died or aborted/);
    const closed = lastEvent(connect.proc);
    assert.equal(closed?.event, 'closed');
    assert.equal(closed?.reason, 'reset');
    // What the connector handed to the connection before it broke (not all of it reached the listener).
    assert.ok(Number(closed?.bytesOut) >= size(listen.stdoutFile), `bytesOut ${String(closed?.bytesOut)}`);
    brokerProc.child.kill('SIGTERM');
    await brokerProc.exited;
  });

  test('the connector killed while the listener sends: the listener exits 9 (human message names the cause)', async () => {
    const { proc: brokerProc, address } = await broker();
    const spawned = cli(['listen', 'nattrav://killed-2', '--broker', address]);
    await until(() => /registered nattrav:\/\/killed-2/.test(spawned.proc.stderr), 10_000, 'registration');
    const connect = cli(['connect', 'nattrav://killed-2', '--broker', address, '--json']);
    await connect.proc.waitForEvent('connected', 15_000);
    // The connector never reads its stdout fast enough to matter; kill it with data in flight.
    const writer = setInterval(() => spawned.proc.child.stdin?.write(randomBytes(256 * 1024)), 20);
    try {
      await until(() => size(connect.stdoutFile) > 0, 10_000, 'data to reach the connector');
      connect.proc.child.kill('SIGKILL');
      assert.equal(await spawned.proc.exited, 9, spawned.proc.stderr);
    } finally {
      clearInterval(writer);
    }
    assert.match(spawned.proc.stderr, /nattrav: error: the connection was reset/);
    assert.match(spawned.proc.stderr, /closed \(reset\): \d+ bytes in, \d+ bytes out/);
    brokerProc.child.kill('SIGTERM');
    await brokerProc.exited;
  });

  test('a --no-tls connect to a default (TLS) listener fails on both sides, naming what the other side wants', async () => {
    const { proc: brokerProc, address } = await broker();
    const listen = await listener('nattrav://tls-only', address);
    const connect = cli(['connect', 'nattrav://tls-only', '--broker', address, '--json', '--no-tls']);
    assert.equal(await connect.proc.exited, 8, connect.proc.stderr);
    const error = connect.proc.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_TLS_REQUIRED');
    assert.match(String(error?.message), /the recipient requires TLS/);
    const failed = await listen.proc.waitForEvent('attempt-failed', 10_000);
    assert.equal(failed.code, 'ERR_PLAIN_REQUIRED');
    assert.match(String(failed.message), /the initiator runs without TLS/);
    listen.proc.child.kill('SIGTERM');
    assert.equal(await listen.proc.exited, 143);
    brokerProc.child.kill('SIGTERM');
    await brokerProc.exited;
  });
});

describe('signals: one SIGINT stops a command within 2 s with exit 130 (SIGTERM: 143)', () => {
  /** Sends `signal` and checks the exit code and that it came within 2 s. */
  async function stops(proc: CliProcess, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
    const sent = Date.now();
    proc.child.kill(signal);
    assert.equal(await proc.exited, signal === 'SIGINT' ? 130 : 143, proc.stderr);
    assert.ok(Date.now() - sent < 2_000, `exited ${Date.now() - sent} ms after ${signal}`);
  }

  test('broker, idle and while relaying nothing; listen while registered; connect while connected and idle', async () => {
    const { proc: brokerProc, address } = await broker();
    const listen = await listener('nattrav://sig-idle', address);
    const connect = cli(['connect', 'nattrav://sig-idle', '--broker', address, '--json']);
    await connect.proc.waitForEvent('connected', 15_000);
    await stops(connect.proc);
    assert.equal(lastEvent(connect.proc)?.reason, 'interrupted');
    // The listener sees the connector end its side and ends too once its own stdin ends.
    listen.proc.child.stdin?.end();
    assert.equal(await listen.proc.exited, 0, listen.proc.stderr);
    const idle = await listener('nattrav://sig-registered', address);
    await stops(idle.proc, 'SIGTERM');
    assert.equal(lastEvent(idle.proc)?.reason, 'interrupted');
    await stops(brokerProc);
  });

  test('connect and listen while connecting (a broker that never answers)', async () => {
    // A broker that takes every exchange and registration and never answers; counting what
    // arrives tells us the command is under way (and so is watching for signals).
    let seen = 0;
    const silent: Server = createServer((socket) => {
      seen++;
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const udp = createSocket('udp4');
    udp.on('message', () => seen++);
    const port = (silent.address() as { port: number }).port;
    await new Promise<void>((resolve) => udp.bind(port, '127.0.0.1', resolve));
    try {
      const connect = cli(['connect', 'nattrav://x', '--broker', `127.0.0.1:${port}`, '--json']);
      await until(() => seen > 0, 10_000, 'the connect to reach the broker');
      await stops(connect.proc);
      assert.ok(connect.proc.events.some((e) => e.event === 'interrupted'));
      seen = 0;
      const listen = cli(['listen', 'nattrav://x', '--broker', `127.0.0.1:${port}`, '--json']);
      await until(() => seen > 0, 10_000, 'the listen to reach the broker');
      await stops(listen.proc);
    } finally {
      silent.close();
      udp.close();
    }
  });

  test('while transferring: both sides stop, and what was received is on stdout', async () => {
    const { proc: brokerProc, address } = await broker();
    const listen = await listener('nattrav://sig-busy', address);
    const connect = cli(['connect', 'nattrav://sig-busy', '--broker', address, '--json']);
    await connect.proc.waitForEvent('connected', 15_000);
    const sent: Buffer[] = [];
    const writer = setInterval(() => {
      const chunk = randomBytes(64 * 1024);
      sent.push(chunk);
      connect.proc.child.stdin?.write(chunk);
    }, 10);
    try {
      await until(() => size(listen.stdoutFile) > MB, 20_000, 'a megabyte to arrive');
      // The sender first: it ends its direction and exits; the listener's direction stays open.
      await stops(connect.proc);
      assert.equal(lastEvent(connect.proc)?.reason, 'interrupted');
    } finally {
      clearInterval(writer);
    }
    await until(() => listen.proc.events.length > 0 && size(listen.stdoutFile) > 0, 5_000, 'the listener');
    assert.equal(listen.proc.child.exitCode, null, 'the listener keeps its own direction open');
    await stops(listen.proc);
    // Flushed: the listener's stdout is exactly a prefix of what was sent, not cut mid-write.
    const got = readFileSync(listen.stdoutFile);
    assert.ok(got.length > MB);
    assert.equal(sha(got), sha(Buffer.concat(sent).subarray(0, got.length)));
    assert.equal(lastEvent(listen.proc)?.event, 'closed');
    assert.equal(lastEvent(listen.proc)?.bytesIn, got.length);
    await stops(brokerProc, 'SIGTERM');
  });

  test('a second signal exits at once', async () => {
    let seen = 0;
    const silent: Server = createServer((socket) => {
      seen++;
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      // A connect whose broker never answers, stuck in setup and told to stop twice.
      const connect = cli(['connect', 'nattrav://x', '--broker', `127.0.0.1:${(silent.address() as { port: number }).port}`]);
      await until(() => seen > 0, 10_000, 'the connect to reach the broker');
      connect.proc.child.kill('SIGTERM');
      connect.proc.child.kill('SIGTERM');
      assert.equal(await connect.proc.exited, 143);
    } finally {
      silent.close();
    }
  });

});

describe('bad input: exit 2 and a message naming what was wrong, before any traffic', () => {
  test('connect and listen reject the same bad URIs, and no packet reaches the broker address', async () => {
    const tcp = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const port = (tcp.address() as { port: number }).port;
    const udp = createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(port, '127.0.0.1', resolve));
    let traffic = 0;
    tcp.on('connection', () => traffic++);
    udp.on('message', () => traffic++);
    try {
      const cases: Array<[string, RegExp]> = [
        ['alice', /URI "alice": no scheme; expected nattrav:\/\/NAME/],
        ['http://x', /URI "http:\/\/x": scheme "http:" is not nattrav:/],
        ['nattrav://', /URI "nattrav:\/\/": no name after nattrav:\/\//],
        ['nattrav://al ice', /" " at position 12 is not allowed/],
        [`nattrav://${'a'.repeat(600)}`, /610 bytes long, at most 512/],
      ];
      for (const command of ['connect', 'listen']) {
        for (const [uri, message] of cases) {
          const { proc } = cli([command, uri, '--broker', `127.0.0.1:${port}`]);
          assert.equal(await proc.exited, 2, `${command} ${uri}: ${proc.stderr}`);
          assert.match(proc.stderr, message);
        }
      }
      assert.equal(traffic, 0);
    } finally {
      tcp.close();
      udp.close();
    }
  });

  test('broker: --alternate errors name --alternate; a port in use names the port (ERR_ADDRESS_IN_USE, exit 10)', async () => {
    const sameAsListen = cli(['broker', '--listen', '127.0.0.1:3478', '--alternate', '127.0.0.2:3478']).proc;
    assert.equal(await sameAsListen.exited, 2);
    assert.match(sameAsListen.stderr, /--alternate: port 3478 cannot be the alternate port/);
    const notIp = cli(['broker', '--listen', '127.0.0.1:3478', '--alternate', 'no-such-host.invalid']).proc;
    assert.equal(await notIp.exited, 2);
    assert.match(notIp.stderr, /--alternate: "no-such-host.invalid" is not an IP address/);
    // 203.0.113.9 is no address of this host: the bind fails and the message says so, naming --alternate.
    const foreign = cli(['broker', '--listen', '127.0.0.1:0', '--alternate', '203.0.113.9', '--json']).proc;
    assert.equal(await foreign.exited, 2);
    assert.match(foreign.stderr, /--alternate 203\.0\.113\.9: cannot listen on the alternate address 203\.0\.113\.9:\d+: not an address of this host/);
    const first = await broker();
    const busyPort = first.address.split(':')[1];
    const second = cli(['broker', '--listen', first.address, '--json']).proc;
    assert.equal(await second.exited, 10);
    const error = second.events.find((e) => e.event === 'error');
    assert.equal(error?.code, 'ERR_ADDRESS_IN_USE');
    assert.match(String(error?.message), new RegExp(`port ${String(busyPort)} is in use`));
    first.proc.child.kill('SIGTERM');
    await first.proc.exited;
  });

  test('--version, and every command\'s --help shows examples and marks required options', async () => {
    const version = cli(['--version']);
    assert.equal(await version.proc.exited, 0);
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(readFileSync(version.stdoutFile, 'utf8').trim(), pkg.version);
    for (const command of [['broker'], ['listen'], ['connect'], ['expose'], ['forward'], ['netcheck'], ['demo'], ['lab', 'matrix'], ['ca', 'init'], ['ca', 'issue'], ['ca', 'show']]) {
      const help = cli([...command, '--help']);
      assert.equal(await help.proc.exited, 0);
      const text = readFileSync(help.stdoutFile, 'utf8');
      assert.match(text, /Examples:\n {2}\$ nattrav /, `${command.join(' ')} --help has examples`);
      const required = [...text.matchAll(/^ {2}(--[a-z-]+) <[^>]+> +\(required\)/gm)].map((m) => m[1]);
      const expected = { listen: ['--broker'], connect: ['--broker'], expose: ['--broker'], forward: ['--listen', '--broker'], netcheck: ['--broker'], issue: ['--ca', '--uri', '--out'] }[command[command.length - 1] as string] ?? [];
      assert.deepEqual(required, expected, `${command.join(' ')} --help marks required options`);
    }
  });
});
