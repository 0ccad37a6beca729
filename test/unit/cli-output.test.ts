/**
 * Where the `nattrav` command prints, as tools expect it (loopback, real
 * processes): a command's result on stdout (with --json nothing but JSON
 * lines there), progress and errors on stderr; netcheck's exit 4 when the
 * broker does not answer, its "UDP blocked" only when TCP gets through, and
 * its hint for a broker without an alternate address.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { closedPort, tcpOnlyStunServer } from './stun-responders.js';

/** Bounds a CLI run that should end by itself; loopback netcheck takes about a second. */
const RUN_LIMIT_MS = 30_000;
/** "Quickly" for a netcheck against a closed port: 700 ms of UDP silence, a refused TCP connect, Node's start-up. */
const UNREACHABLE_WITHIN_MS = 5_000;

const children: ChildProcess[] = [];
let home = '';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `nattrav args` to its end, with HOME in a temporary directory. */
function nattrav(args: string[], cwd?: string): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home }, ...(cwd === undefined ? {} : { cwd }) });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const limit = setTimeout(() => child.kill('SIGKILL'), RUN_LIMIT_MS);
  return new Promise((resolve) => child.once('close', (code) => {
    clearTimeout(limit);
    resolve({ code, stdout, stderr, ms: Date.now() - started });
  }));
}

/** Every non-empty line of `text` parsed as JSON; fails the test on a line that is not. */
function jsonLines(text: string, what: string): Array<Record<string, unknown>> {
  return text.split('\n').filter((line) => line !== '').map((line) => {
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      return assert.fail(`${what}: not a JSON line: ${line}`);
    }
  });
}

/** JSON lines of `text` that parse, skipping the rest (stderr may mix human and JSON). */
function eventsIn(text: string): string[] {
  return text.split('\n').flatMap((line) => {
    try {
      const parsed = JSON.parse(line) as { event?: unknown };
      return typeof parsed.event === 'string' ? [parsed.event] : [];
    } catch {
      return [];
    }
  });
}

async function startBroker(args: string[]): Promise<{ proc: CliProcess; address: string }> {
  const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '127.0.0.1:0', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  const proc = new CliProcess(child);
  const listening = await proc.waitForEvent('listening', 10_000);
  return { proc, address: `127.0.0.1:${String(listening.port)}` };
}

async function stop(proc: CliProcess): Promise<void> {
  proc.child.kill('SIGTERM');
  await proc.exited;
}

before(async () => {
  home = await mkdtemp(join(tmpdir(), 'nattrav-cli-output-'));
});

after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await rm(home, { recursive: true, force: true });
});

describe('netcheck prints its result on stdout', () => {
  test('--json against a broker with --alternate: one JSON result on stdout, none on stderr', async () => {
    const { proc, address } = await startBroker(['--alternate', '127.0.0.2']);
    try {
      const run = await nattrav(['netcheck', '--broker', address, '--json']);
      assert.equal(run.code, 0, run.stderr);
      const results = jsonLines(run.stdout, 'stdout');
      assert.equal(results.length, 1, run.stdout);
      assert.equal(results[0].event, 'netcheck');
      assert.equal(results[0].name, 'open internet');
      assert.equal(results[0].mapping, 'endpoint-independent');
      assert.equal(results[0].notes, undefined, 'a broker with an alternate address gives the full answer');
      assert.deepEqual(eventsIn(run.stderr), [], `no JSON on stderr: ${run.stderr}`);
      assert.doesNotMatch(run.stderr, /open internet/);

      const human = await nattrav(['netcheck', '--broker', address]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^NAT type: open internet\n/);
      assert.match(human.stdout, /UDP mapping: endpoint-independent/);
      assert.doesNotMatch(human.stderr, /NAT type/);
    } finally {
      await stop(proc);
    }
  });

  test('a broker without --alternate: the human output and the JSON notes say how to get the full RFC 5780 answer', async () => {
    const { proc, address } = await startBroker([]);
    try {
      const hint = /full RFC 5780 answer.*nattrav broker --listen IP:PORT --alternate IP2/;
      const human = await nattrav(['netcheck', '--broker', address, '--no-tcp']);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /UDP mapping: not measured/);
      assert.match(human.stdout, new RegExp(`^note: .*${hint.source}`, 'm'));
      const json = await nattrav(['netcheck', '--broker', address, '--no-tcp', '--json']);
      assert.equal(json.code, 0, json.stderr);
      const [result] = jsonLines(json.stdout, 'stdout');
      assert.ok(Array.isArray(result.notes), json.stdout);
      assert.ok((result.notes as string[]).some((note) => hint.test(note)), JSON.stringify(result.notes));
    } finally {
      await stop(proc);
    }
  });

  test('nothing listening (UDP or TCP): exit 4 quickly, naming the broker and both transports', async () => {
    const port = await closedPort();
    const human = await nattrav(['netcheck', '--broker', `127.0.0.1:${port}`]);
    assert.equal(human.code, 4, human.stderr);
    assert.ok(human.ms < UNREACHABLE_WITHIN_MS, `took ${human.ms} ms`);
    assert.match(human.stderr, new RegExp(`^nattrav: error: broker unreachable: neither UDP nor TCP to 127\\.0\\.0\\.1:${port} got an answer`));
    assert.doesNotMatch(human.stderr, /UDP blocked/);
    assert.equal(human.stdout, '');

    const json = await nattrav(['netcheck', '--broker', `127.0.0.1:${port}`, '--json']);
    assert.equal(json.code, 4);
    assert.equal(json.stdout, '', 'no result on stdout');
    const [error] = jsonLines(json.stderr, 'stderr');
    assert.equal(error.event, 'error');
    assert.equal(error.code, 'ERR_BROKER_UNREACHABLE');
    assert.equal(error.exitCode, 4);
  });

  test('--no-tcp and no UDP answer: exit 4, cannot tell a UDP block from a broker that is down', async () => {
    const port = await closedPort();
    const run = await nattrav(['netcheck', '--broker', `127.0.0.1:${port}`, '--no-tcp']);
    assert.equal(run.code, 4, run.stderr);
    assert.ok(run.ms < UNREACHABLE_WITHIN_MS, `took ${run.ms} ms`);
    assert.match(run.stderr, new RegExp(`broker unreachable: no UDP answer from 127\\.0\\.0\\.1:${port}`));
    assert.match(run.stderr, /UDP may be blocked on the way, or the broker may be down/);
    assert.match(run.stderr, /drop --no-tcp/);
    assert.equal(run.stdout, '');
  });

  test('UDP silent while TCP answers: "UDP blocked", exit 0', async () => {
    const server = await tcpOnlyStunServer();
    try {
      const human = await nattrav(['netcheck', '--broker', `127.0.0.1:${server.port}`]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^NAT type: UDP blocked\n/);
      assert.match(human.stdout, /UDP: no answer from the server, while TCP reaches it/);
      assert.match(human.stdout, /TCP port allocation: preserving/);
      const json = await nattrav(['netcheck', '--broker', `127.0.0.1:${server.port}`, '--json']);
      assert.equal(json.code, 0, json.stderr);
      const [result] = jsonLines(json.stdout, 'stdout');
      assert.equal(result.udpBlocked, true);
      assert.deepEqual((result.tcp as { blocked: boolean }).blocked, false);
    } finally {
      await server.close();
    }
  });
});

describe('ca and demo print their results on stdout', () => {
  test('ca init, ca issue, ca show: results on stdout (human and --json), nothing on stderr', async () => {
    const work = await mkdtemp(join(tmpdir(), 'nattrav-cli-output-ca-'));
    try {
      const init = await nattrav(['ca', 'init', 'ca'], work);
      assert.equal(init.code, 0, init.stderr);
      assert.match(init.stdout, /^created CA "CN=.*" .* in ca: ca\.pem, ca-key\.pem\n$/);
      assert.equal(init.stderr, '');
      const issue = await nattrav(['ca', 'issue', '--ca', 'ca', '--uri', 'nattrav://alice', '--out', 'alice', '--json'], work);
      assert.equal(issue.code, 0, issue.stderr);
      assert.deepEqual(jsonLines(issue.stdout, 'stdout').map((r) => [r.event, r.uri]), [['certificate-issued', 'nattrav://alice']]);
      assert.equal(issue.stderr, '');
      const show = await nattrav(['ca', 'show', join('alice', 'cert.pem')], work);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, /^subject: .*\nissuer: .*\nURI: nattrav:\/\/alice\n/);
      assert.equal(show.stderr, '');
      const showJson = await nattrav(['ca', 'show', join('alice', 'cert.pem'), '--json'], work);
      assert.deepEqual(jsonLines(showJson.stdout, 'stdout').map((r) => [r.event, r.uris]), [['certificate', ['nattrav://alice']]]);
      assert.equal(showJson.stderr, '');

      const missing = await nattrav(['ca', 'show', 'no-such.pem', '--json'], work);
      assert.equal(missing.code, 2);
      assert.equal(missing.stdout, '', 'an error is no result');
      assert.match(String(jsonLines(missing.stderr, 'stderr')[0]?.message), /could not read no-such\.pem/);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  test('a reader that goes away (`nattrav listen --help | head -1`): exit 0, no crash', async () => {
    const child = spawn(process.execPath, [CLI_PATH, 'listen', '--help'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
    children.push(child);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    // Our end closes before the help is written, as `head -1` does once it has its line.
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
    assert.equal(stderr, '', 'no stack trace');
    assert.equal(code, 0);
  });

  test('demo --loopback --json: the result on stdout, the steps on stderr', async () => {
    const run = await nattrav(['demo', '--loopback', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const results = jsonLines(run.stdout, 'stdout');
    assert.deepEqual(results.map((r) => [r.event, r.mode, r.path]), [['result', 'loopback', 'public']]);
    const progress = eventsIn(run.stderr);
    assert.ok(progress.includes('step'), run.stderr);
    assert.ok(!progress.includes('result'), run.stderr);
  });
});
