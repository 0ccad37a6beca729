/** `nattrav` CLI processes for a test file that share one temporary HOME (so one key per URI), and their clean-up. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';

/** A temporary HOME and the CLI processes started with it. */
export interface CliHome {
  /** The temporary HOME directory. */
  readonly home: string;
  /** Every process {@link CliHome.cli} started. */
  readonly children: ChildProcess[];
  /** Starts `nattrav ...args` with HOME set to {@link CliHome.home}, its stdin, stdout and stderr piped. */
  cli(args: string[]): CliProcess;
  /** Kills (SIGKILL) every child still running and removes the HOME directory. */
  cleanUp(): void;
}

/** Makes a temporary HOME named from `prefix` (e.g. 'nattrav-cli-listen-'). */
export function cliHome(prefix: string): CliHome {
  const home = mkdtempSync(join(tmpdir(), prefix));
  const children: ChildProcess[] = [];
  return {
    home,
    children,
    cli(args: string[]): CliProcess {
      const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
      children.push(child);
      child.stdin?.on('error', () => undefined);
      return new CliProcess(child);
    },
    cleanUp(): void {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(home, { recursive: true, force: true });
    },
  };
}
