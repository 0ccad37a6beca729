/**
 * Child processes of a benchmark run (servers, generators): started pinned to a core
 * with `taskset` when the machine has two, tracked, and killed by PID when the run ends,
 * also on failure and on Ctrl-C (see {@link onInterrupt}).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';

/** How long a child may take to print its first line (a Node start on a busy 2-core machine). */
const READY_TIMEOUT_MS = 20_000;
/** After SIGTERM, how long before SIGKILL. */
const TERM_GRACE_MS = 3_000;

const running = new Set<ChildProcess>();
/** Cleanups of the current benchmark (run by stopAll after each). */
const cleanups = new Set<() => Promise<void>>();
/** Cleanups of the whole run (e.g. the compiled generator's directory), run by {@link finish}. */
const runCleanups = new Set<() => Promise<void>>();

let tasksetOk: boolean | undefined;
/** True when `taskset` runs here and there are at least two cores to pin to. */
export function canPin(): boolean {
  tasksetOk ??= spawnSync('taskset', ['-c', '0', 'true']).status === 0 && spawnSync('nproc').stdout?.toString().trim() !== '1';
  return tasksetOk;
}

/** The command prefix that pins to `core` (empty when pinning is not possible). */
export function pinned(core: number | undefined, command: string, args: readonly string[]): [string, string[]] {
  if (core === undefined || !canPin()) return [command, [...args]];
  return ['taskset', ['-c', String(core), command, ...args]];
}

/** Pins this process (all its threads) to `core`, when possible; returns whether it did. */
export function pinSelf(core: number): boolean {
  if (!canPin()) return false;
  return spawnSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)]).status === 0;
}

/** A child with line-wise stdout. */
export class Child {
  readonly #lines: string[] = [];
  readonly #waiters: Array<(line: string | null) => void> = [];
  readonly #rl: Interface;
  stderr = '';
  readonly exited: Promise<void>;

  constructor(readonly process: ChildProcess, readonly name: string) {
    if (process.stdout === null) throw new Error(`${name}: stdout must be piped`);
    this.#rl = createInterface({ input: process.stdout });
    this.#rl.on('line', (line) => {
      const waiter = this.#waiters.shift();
      if (waiter === undefined) this.#lines.push(line);
      else waiter(line);
    });
    this.#rl.on('close', () => {
      for (const w of this.#waiters.splice(0)) w(null);
    });
    process.stderr?.on('data', (chunk: Buffer) => {
      if (this.stderr.length < 16_384) this.stderr += chunk.toString();
    });
    this.exited = new Promise((resolve) => {
      if (process.exitCode !== null || process.signalCode !== null) resolve();
      else process.once('exit', () => resolve());
      process.once('error', () => resolve());
    });
  }

  /** PID (throws when the program could not be started). */
  get pid(): number {
    if (this.process.pid === undefined) throw new Error(`${this.name} did not start`);
    return this.process.pid;
  }

  /** The next stdout line, within `timeoutMs`; throws with the child's stderr when it ends first. */
  async line(timeoutMs = READY_TIMEOUT_MS): Promise<string> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return queued;
    let timer: NodeJS.Timeout | undefined;
    const line = await new Promise<string | null>((resolve, reject) => {
      this.#waiters.push(resolve);
      timer = setTimeout(() => reject(new Error(`${this.name}: no output within ${timeoutMs} ms; stderr: ${this.stderr.slice(-600)}`)), timeoutMs);
    }).finally(() => clearTimeout(timer));
    if (line === null) throw new Error(`${this.name} ended (code ${String(this.process.exitCode)}); stderr: ${this.stderr.slice(-600)}`);
    return line;
  }

  /** The next stdout line that parses as a JSON object. */
  async json<T>(timeoutMs = READY_TIMEOUT_MS): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = await this.line(Math.max(1, deadline - Date.now()));
      if (line.startsWith('{')) return JSON.parse(line) as T;
    }
  }

  /** Writes one line to the child's stdin. */
  send(line: string): void {
    this.process.stdin?.write(`${line}\n`);
  }

  /** SIGTERM, then SIGKILL after a grace period; by PID. Idempotent. */
  async stop(): Promise<void> {
    running.delete(this.process);
    if (this.process.exitCode === null && this.process.signalCode === null && this.process.pid !== undefined) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), TERM_GRACE_MS);
      await this.exited;
      clearTimeout(timer);
    }
    this.#rl.close();
  }
}

/** Starts `command args`, pinned to `core` when given and possible, and tracks it for {@link stopAll}. */
export function start(name: string, command: string, args: readonly string[], core?: number, env?: NodeJS.ProcessEnv): Child {
  const [cmd, argv] = pinned(core, command, args);
  const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return new Child(child, name);
}

/** Starts a compiled bench script (`dist/bench/...js`) with node, pinned to `core`. */
export function startNode(name: string, script: string, args: readonly string[], core?: number, nodeFlags: readonly string[] = []): Child {
  return start(name, process.execPath, [...nodeFlags, script, ...args], core);
}

/** Registers a cleanup (e.g. a lab's close) that {@link stopAll} runs; returns its remover. */
export function onCleanup(fn: () => Promise<void>): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Registers a cleanup for the end of the whole run (or its interruption): see {@link finish}. */
export function onRunEnd(fn: () => Promise<void>): void {
  runCleanups.add(fn);
}

/** The end of the run: {@link stopAll}, then the run's own cleanups. */
export async function finish(): Promise<void> {
  await stopAll();
  for (const fn of [...runCleanups]) {
    runCleanups.delete(fn);
    await fn().catch((err: unknown) => process.stderr.write(`cleanup failed: ${String(err)}\n`));
  }
}

/** Kills every tracked child by PID and runs the current benchmark's cleanups. */
export async function stopAll(): Promise<void> {
  for (const child of [...running]) {
    running.delete(child);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  for (const fn of [...cleanups]) {
    cleanups.delete(fn);
    await fn().catch((err: unknown) => process.stderr.write(`cleanup failed: ${String(err)}\n`));
  }
}

/** On SIGINT/SIGTERM: clean up everything, then exit 130. */
export function onInterrupt(): void {
  const handler = (signal: NodeJS.Signals): void => {
    process.stderr.write(`\n${signal}: stopping servers and removing what the bench made\n`);
    void finish().finally(() => process.exit(130));
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

/** Waits for `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

