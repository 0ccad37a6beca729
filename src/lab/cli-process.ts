/**
 * Runs the `nattrav` CLI inside a lab host and follows its JSON events (one
 * object per line on stderr) and its stdout, so the demo and the lab tests
 * drive real processes in real namespaces.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ErrorCode, NattravError } from '../errors.js';
import type { Lab } from './lab.js';
import type { LabHost } from './types.js';

/** Path of the built `nattrav` bin (the package's `bin`): the CLI's bundle when the build made one, else its ES modules. */
export const CLI_PATH = fileURLToPath(new URL('../cli/nattrav.cjs', import.meta.url));

/** One JSON event printed by the CLI. */
export type CliEvent = Record<string, unknown> & { event: string };

/** A CLI process running in a lab host. */
export class CliProcess {
  readonly child: ChildProcess;
  readonly events: CliEvent[] = [];
  #stdout = '';
  #stderrText = '';
  #waiters: Array<() => void> = [];
  readonly exited: Promise<number | null>;

  constructor(child: ChildProcess) {
    this.child = child;
    let partial = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderrText += chunk;
      partial += chunk;
      let newline: number;
      while ((newline = partial.indexOf('\n')) !== -1) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        try {
          const parsed: unknown = JSON.parse(line);
          if (parsed !== null && typeof parsed === 'object' && typeof (parsed as CliEvent).event === 'string') {
            this.events.push(parsed as CliEvent);
          }
        } catch {
          // not an event line
        }
      }
      this.#wake();
    });
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stdout += chunk;
      this.#wake();
    });
    this.exited = new Promise((resolve) => child.once('exit', (code) => {
      resolve(code);
      this.#wake();
    }));
  }

  /** Everything the process wrote to stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }

  /** Everything the process wrote to stderr so far (for failure messages). */
  get stderr(): string {
    return this.#stderrText;
  }

  /** Writes to the process's stdin. */
  write(text: string): void {
    this.child.stdin?.write(text);
  }

  /** Resolves with the first event named `name` (matching `predicate`), or rejects after `timeoutMs`. */
  waitForEvent(name: string, timeoutMs: number, predicate: (e: CliEvent) => boolean = () => true): Promise<CliEvent> {
    return this.#waitUntil(() => this.events.find((e) => e.event === name && predicate(e)), timeoutMs, `event "${name}"`);
  }

  /** Resolves once stdout contains `text`, or rejects after `timeoutMs`. */
  waitForStdout(text: string, timeoutMs: number): Promise<string> {
    return this.#waitUntil(() => (this.#stdout.includes(text) ? this.#stdout : undefined), timeoutMs, `"${text}" on stdout`);
  }

  #waitUntil<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const attempt = (): boolean => {
        const found = check();
        if (found !== undefined) {
          clearTimeout(timer);
          resolve(found);
          return true;
        }
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          clearTimeout(timer);
          reject(new NattravError(ErrorCode.Lab, `process exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; stderr: ${this.#stderrText.slice(-2000)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new NattravError(ErrorCode.Timeout, `timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.#stderrText.slice(-2000)}`));
      }, timeoutMs);
      const waiter = (): void => {
        if (attempt()) this.#waiters = this.#waiters.filter((w) => w !== waiter);
      };
      if (!attempt()) this.#waiters.push(waiter);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/**
 * Starts `nattrav <args> --json` in `host` (tracked by the lab: killed by PID at close), with
 * HOME set to `options.home` when given (a test's own temporary home: keys and known keys),
 * else to the lab's temporary home ({@link Lab.home}), never the real one.
 * A write to its stdin after it exited is ignored.
 */
export function startCli(lab: Lab, host: LabHost, args: string[], options: { home?: string } = {}): CliProcess {
  // Keys and known keys of lab peers are throwaway: the lab's own home unless the caller gives one.
  const env = { env: { ...process.env, HOME: options.home ?? lab.home } };
  const child = lab.spawn(host, process.execPath, [CLI_PATH, ...args, '--json'], { stdio: ['pipe', 'pipe', 'pipe'], ...env });
  child.stdin?.on('error', () => undefined);
  return new CliProcess(child);
}
