/**
 * Shared helpers of the lab tests: skip (or fail in CI) without root, build-and-always-close a
 * lab, and drive the natprobe fixture inside namespaces.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CliProcess } from '../../src/lab/cli-process.js';
import type { TestContext } from 'node:test';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Lab, labSupport, type LabHost, type LabOptions, type LabSupport } from '../../src/lab/index.js';

let support: Promise<LabSupport> | undefined;

/**
 * True when labs can be built here. Otherwise: in CI (process.env.CI set) throws, because lab
 * tests are required there; elsewhere skips the test with the reason and returns false.
 */
export async function requireLab(t: TestContext): Promise<boolean> {
  support ??= labSupport();
  const result = await support;
  if (result.ok) return true;
  if (process.env.CI !== undefined && process.env.CI !== '') {
    throw new Error(`lab tests are required in CI but cannot run: ${result.reason}`);
  }
  t.skip(result.reason);
  return false;
}

/** Builds a lab, runs `fn` with it, and always closes the lab, also when `fn` throws. */
export async function withLab<T>(options: LabOptions, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = await Lab.create(options);
  try {
    return await fn(lab);
  } finally {
    await lab.close();
  }
}

/** Absolute path of the compiled natprobe fixture (runs with `node` inside namespaces). */
export const natprobe = fileURLToPath(new URL('./fixtures/natprobe.js', import.meta.url));

/** Reads a child's stdout line by line, each read bounded in time. */
export class LineReader {
  readonly #lines: string[] = [];
  readonly #waiters: Array<(line: string | null) => void> = [];
  #ended = false;

  constructor(child: ChildProcess) {
    if (child.stdout === null) throw new Error('LineReader needs a child with piped stdout');
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const waiter = this.#waiters.shift();
      if (waiter === undefined) this.#lines.push(line);
      else waiter(line);
    });
    rl.on('close', () => {
      this.#ended = true;
      for (const waiter of this.#waiters.splice(0)) waiter(null);
    });
  }

  /** The next line, or null at end of output; rejects after `timeoutMs`. */
  next(timeoutMs: number): Promise<string | null> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new Error(`no output line within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (value: string | null): void => {
        clearTimeout(timer);
        resolve(value);
      };
      this.#waiters.push(waiter);
    });
  }

  /** The next line parsed as JSON; rejects on end of output or after `timeoutMs`. */
  async nextJson(timeoutMs: number): Promise<Record<string, unknown>> {
    const line = await this.next(timeoutMs);
    if (line === null) throw new Error('output ended before the expected JSON line');
    return JSON.parse(line) as Record<string, unknown>;
  }

  /** Every remaining line until the output ends (bounded by `timeoutMs`). */
  async rest(timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const lines: string[] = [];
    for (;;) {
      const line = await this.next(Math.max(1, deadline - Date.now()));
      if (line === null) return lines;
      lines.push(line);
    }
  }
}

/** A natprobe process running in the lab, with its stdout as lines. */
export interface Probe {
  /** The process (tracked by the lab, killed at close). */
  readonly child: ChildProcess;
  /** Its stdout, line by line. */
  readonly lines: LineReader;
}

/** Starts `node natprobe.js ...args` on `host`. */
export function startProbe(lab: Lab, host: LabHost, args: string[]): Probe {
  const child = lab.spawn(host, process.execPath, [natprobe, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  return { child, lines: new LineReader(child) };
}

/** Runs `node natprobe.js ...args` on `host` to completion and parses its one JSON line. */
export async function runProbe(lab: Lab, host: LabHost, args: string[], timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const { stdout } = await lab.run(host, process.execPath, [natprobe, ...args], { timeoutMs });
  return JSON.parse(stdout.trim()) as Record<string, unknown>;
}

/** A temporary work directory with an empty HOME inside it, for a test's CLI processes (keys, known keys). */
export async function workWithHome(prefix: string): Promise<{ work: string; home: string }> {
  const work = await mkdtemp(join(tmpdir(), prefix));
  const home = join(work, 'home');
  await mkdir(home);
  return { work, home };
}

/** Closes the lab (if it was built) and removes the work directory, also when closing fails. */
export async function closeLabAndWork(lab: Lab | undefined, work: string): Promise<void> {
  try {
    await lab?.close();
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Drives a started `nattrav connect` to an echoing listener: waits for `connected`, sends
 * `line`, reads it back, ends stdin, and requires exit 0. Resolves with the `connected` event.
 */
export async function echoLine(client: CliProcess, line: string, waitMs: number): Promise<Record<string, unknown>> {
  const connected = await client.waitForEvent('connected', waitMs);
  client.write(`${line}\n`);
  await client.waitForStdout(`${line}\n`, waitMs);
  client.child.stdin?.end();
  assert.equal(await client.exited, 0, client.stderr.slice(-2000));
  return connected;
}

/** The address of an `ip:port` or `[ip]:port` field of a CLI event (IPv6 without brackets). */
export function endpointHost(endpoint: unknown): string {
  return String(endpoint).replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
}
