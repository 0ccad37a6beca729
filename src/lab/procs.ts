/**
 * Processes a lab runs inside its namespaces: started through `ip netns exec` (which execs the
 * command in place, so the child's PID is the command's PID), tracked, and killed by PID.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { constants } from 'node:os';
import { ErrorCode, NattravError } from '../errors.js';
import type { LabRunOptions, LabRunResult } from './types.js';

/** Time a tracked process gets between SIGTERM and SIGKILL at close: enough for a Node program to flush and exit. */
const termGraceMs = 2_000;
/** Time to wait for the exit of a SIGKILLed process before giving up on it (the namespace sweep follows). */
const killWaitMs = 1_000;
/** Default limit of {@link ProcessTracker.run}: lab commands are short; a hung one must not hang a test run. */
const defaultRunTimeoutMs = 30_000;
/** How much of a failed command's stderr goes into the error message. */
const stderrInMessageChars = 2_000;

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null && child.pid !== undefined;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (!alive(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Starts processes inside namespaces and kills the ones still running when asked. */
export class ProcessTracker {
  readonly #children = new Set<ChildProcess>();
  #closed = false;

  /** Spawns `ip netns exec <ns> command ...args` and tracks the process until it exits. */
  spawn(ns: string, command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    if (this.#closed) {
      throw new NattravError(ErrorCode.Closed, `cannot start "${command}" in ${ns}: the lab is closed`);
    }
    const child = spawn('ip', ['netns', 'exec', ns, command, ...args], options);
    this.#children.add(child);
    // A child whose spawn failed has no PID, so killAll() skips it even if it stays listed.
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** Runs a command to completion inside `ns`; see {@link LabRunOptions}. */
  run(ns: string, command: string, args: readonly string[], options: LabRunOptions = {}): Promise<LabRunResult> {
    const line = `ip netns exec ${ns} ${[command, ...args].join(' ')}`;
    const shown = line.length > 300 ? `${line.slice(0, 300)}...` : line;
    if (options.signal?.aborted === true) {
      return Promise.reject(new NattravError(ErrorCode.Aborted, `\`${shown}\` was aborted before it started`, { cause: options.signal.reason }));
    }
    const timeoutMs = options.timeoutMs ?? defaultRunTimeoutMs;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
      return Promise.reject(new NattravError(ErrorCode.InvalidArgument, `timeoutMs ${timeoutMs} is invalid; pass a positive number of milliseconds`));
    }
    return new Promise((resolve, reject) => {
      const child = this.spawn(ns, command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      let failure: NattravError | undefined;
      const stop = (error: NattravError): void => {
        failure ??= error;
        if (alive(child)) child.kill('SIGKILL');
      };
      const timer = setTimeout(
        () => stop(new NattravError(ErrorCode.Timeout, `lab run timeoutMs (${timeoutMs} ms) fired: \`${shown}\` was killed`)),
        timeoutMs,
      );
      const onAbort = (): void =>
        stop(new NattravError(ErrorCode.Aborted, `\`${shown}\` was aborted`, { cause: options.signal?.reason }));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
      child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
      child.stdin?.on('error', () => {});
      child.stdin?.end(options.input ?? '');
      child.once('error', (error) => {
        cleanup();
        reject(new NattravError(ErrorCode.Lab, `\`${shown}\` could not start: ${error.message}`, { cause: error }));
      });
      child.once('close', (code, signal) => {
        cleanup();
        const result: LabRunResult = {
          code: code ?? 128 + signalNumber(signal),
          stdout: Buffer.concat(stdout).toString('utf8'),
          stderr: Buffer.concat(stderr).toString('utf8'),
        };
        if (failure !== undefined) reject(failure);
        else if (result.code !== 0 && options.allowFailure !== true) {
          const detail = result.stderr.trim().slice(-stderrInMessageChars);
          reject(new NattravError(ErrorCode.Lab, `\`${shown}\` failed: exit status ${result.code}${detail === '' ? '' : `: ${detail}`}`));
        } else resolve(result);
      });
    });
  }

  /** Refuses new processes, then SIGTERMs every tracked process by PID, SIGKILLs stragglers after 2 s. */
  async killAll(): Promise<void> {
    this.#closed = true;
    const running = [...this.#children].filter(alive);
    for (const child of running) child.kill('SIGTERM');
    const exited = await Promise.all(running.map((child) => waitExit(child, termGraceMs)));
    const stragglers = running.filter((child, i) => exited[i] !== true && alive(child));
    for (const child of stragglers) child.kill('SIGKILL');
    await Promise.all(stragglers.map((child) => waitExit(child, killWaitMs)));
  }

  /** Synchronous last resort for process exit: SIGKILLs every tracked process by PID. */
  killAllSync(): void {
    this.#closed = true;
    for (const child of this.#children) {
      if (alive(child)) child.kill('SIGKILL');
    }
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 0 : (constants.signals[signal] ?? 0);
}
