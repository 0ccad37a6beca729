/**
 * Runs a lab script of the benchmarks (root, builds and removes its own lab) under
 * `flock /tmp/nattrav-lab.lock` in its own process group, and reads its one JSON result line.
 * When the run ends early (failure, timeout, Ctrl-C through the runner's cleanups) the whole
 * group gets SIGTERM, on which the script removes its lab, and SIGKILL only if it hangs.
 */
import { spawn } from 'node:child_process';
import { Child, onCleanup, sleep } from './procs.js';

/** The lab lock every lab test and lab benchmark takes. */
export const LAB_LOCK = '/tmp/nattrav-lab.lock';
/** After SIGTERM, how long the script may take to remove its namespaces before SIGKILL. */
const TEARDOWN_MS = 30_000;
/** How often the group is checked while it winds down. */
const POLL_MS = 100;

/** A process group, signalled and watched by its leader's PID. */
class Group {
  constructor(readonly pid: number) {}

  get alive(): boolean {
    try {
      process.kill(-this.pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  signal(signal: NodeJS.Signals): void {
    if (this.alive) process.kill(-this.pid, signal);
  }

  /** Resolves true once no process of the group is left, false after `ms`. */
  async gone(ms: number): Promise<boolean> {
    for (const deadline = Date.now() + ms; this.alive; await sleep(POLL_MS)) {
      if (Date.now() > deadline) return false;
    }
    return true;
  }

  /** SIGTERM (the script removes its lab), SIGKILL if it is still there after the teardown time. */
  async stop(): Promise<void> {
    this.signal('SIGTERM');
    if (!(await this.gone(TEARDOWN_MS))) this.signal('SIGKILL');
  }
}

/**
 * Starts `node SCRIPT JSON(config)` under the lab lock and resolves with the first JSON line it
 * prints, within `timeoutMs` (waiting for the lock included); then waits for it to exit.
 */
export async function runLabScript<T>(script: string, config: unknown, name: string, timeoutMs: number): Promise<T> {
  const child = new Child(spawn('flock', [LAB_LOCK, process.execPath, script, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true }), name);
  // Progress lines of the script go on to ours.
  child.process.stderr?.on('data', (chunk: Buffer) => void process.stderr.write(chunk));
  const group = new Group(child.pid);
  const remove = onCleanup(() => group.stop());
  try {
    const result = await child.json<T>(timeoutMs);
    if (!(await group.gone(TEARDOWN_MS))) await group.stop();
    return result;
  } catch (err) {
    await group.stop();
    throw err;
  } finally {
    remove();
  }
}
