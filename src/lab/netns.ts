/**
 * Thin wrappers around `ip`, `nft` and `sysctl`, run with `execFile` (no shell). Every failure
 * becomes a {@link NattravError} with code `ERR_LAB` whose message names the command line and
 * quotes its standard error.
 */
import { execFile } from 'node:child_process';
import { ErrorCode, NattravError } from '../errors.js';

/** Limit for one administrative command (`ip`, `nft`, `sysctl`); they finish in milliseconds, so this only catches a hung tool. */
const commandTimeoutMs = 15_000;

/** Output of a command that exited 0. */
export interface CommandOutput {
  /** Standard output, UTF-8. */
  stdout: string;
  /** Standard error, UTF-8. */
  stderr: string;
}

/** Options of {@link runCommand}. */
export interface RunCommandOptions {
  /** Written to standard input, which is then closed. */
  input?: string;
  /** Aborts the command. */
  signal?: AbortSignal;
  /**
   * Kill the command after this many milliseconds.
   * @default 15000
   */
  timeoutMs?: number;
}

/** Runs `command args...` and resolves with its output; rejects with NattravError(Lab) on failure. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: RunCommandOptions = {},
): Promise<CommandOutput> {
  const line = [command, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      {
        encoding: 'utf8',
        maxBuffer: 16 * 1024 * 1024,
        timeout: options.timeoutMs ?? commandTimeoutMs,
        killSignal: 'SIGKILL',
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ stdout, stderr });
          return;
        }
        reject(commandError(line, error, stderr));
      },
    );
    // A command that exits before reading its input makes the write fail with EPIPE; the
    // exit status reports the real problem.
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input ?? '');
  });
}

function commandError(line: string, error: Error & { code?: unknown; killed?: boolean }, stderr: string): NattravError {
  const shown = line.length > 300 ? `${line.slice(0, 300)}...` : line;
  if (error.name === 'AbortError') {
    return new NattravError(ErrorCode.Aborted, `\`${shown}\` was aborted`, { cause: error });
  }
  let why: string;
  if (error.code === 'ENOENT') why = 'command not found (is it installed and on PATH?)';
  else if (error.killed === true) why = 'killed (time limit or signal)';
  else why = `exit status ${String(error.code)}`;
  const detail = stderr.trim().slice(-2000);
  return new NattravError(ErrorCode.Lab, `\`${shown}\` failed: ${why}${detail === '' ? '' : `: ${detail}`}`, {
    cause: error,
  });
}

/** Runs `ip args...` in the current namespace. */
export function ip(args: readonly string[], options: RunCommandOptions = {}): Promise<CommandOutput> {
  return runCommand('ip', args, options);
}

/** Runs `ip -n <ns> args...` (an `ip` command acting inside namespace `ns`). */
export function ipIn(ns: string, args: readonly string[], options: RunCommandOptions = {}): Promise<CommandOutput> {
  return runCommand('ip', ['-n', ns, ...args], options);
}

/** Runs `command args...` inside namespace `ns` through `ip netns exec`. */
export function execIn(
  ns: string,
  command: string,
  args: readonly string[],
  options: RunCommandOptions = {},
): Promise<CommandOutput> {
  return runCommand('ip', ['netns', 'exec', ns, command, ...args], options);
}

/** Loads an nftables ruleset (the text of an `nft -f` file) atomically into namespace `ns`. */
export async function nftLoad(ns: string, ruleset: string, options: RunCommandOptions = {}): Promise<void> {
  await execIn(ns, 'nft', ['-f', '-'], { ...options, input: ruleset });
}

/** Runs `nft args...` inside namespace `ns` and returns its standard output. */
export async function nft(ns: string, args: readonly string[], options: RunCommandOptions = {}): Promise<string> {
  return (await execIn(ns, 'nft', args, options)).stdout;
}

/** Sets kernel parameters inside namespace `ns` (`sysctl -q -w key=value ...`). */
export async function sysctl(
  ns: string,
  settings: Readonly<Record<string, string | number>>,
  options: RunCommandOptions = {},
): Promise<void> {
  const pairs = Object.entries(settings).map(([key, value]) => `${key}=${String(value)}`);
  if (pairs.length === 0) return;
  await execIn(ns, 'sysctl', ['-q', '-w', ...pairs], options);
}

/** Creates the named network namespace (`ip netns add`). */
export async function addNamespace(name: string, options: RunCommandOptions = {}): Promise<void> {
  await ip(['netns', 'add', name], options);
}

/** Deletes the named network namespace (`ip netns del`). */
export async function deleteNamespace(name: string, options: RunCommandOptions = {}): Promise<void> {
  await ip(['netns', 'del', name], options);
}

/** Names of all named network namespaces (`ip netns list`). */
export async function listNamespaces(options: RunCommandOptions = {}): Promise<string[]> {
  const { stdout } = await ip(['netns', 'list'], options);
  return stdout
    .split('\n')
    .map((row) => row.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '');
}

/** PIDs of the processes running inside namespace `ns` (`ip netns pids`). */
export async function namespacePids(ns: string, options: RunCommandOptions = {}): Promise<number[]> {
  const { stdout } = await ip(['netns', 'pids', ns], options);
  return stdout
    .split(/\s+/)
    .filter((word) => /^\d+$/.test(word))
    .map(Number);
}
