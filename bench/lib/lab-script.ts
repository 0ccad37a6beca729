/**
 * The script side of bench/lib/lab-group.ts: a lab benchmark script builds its lab and a
 * temporary directory, and removes both on the way out, also when SIGINT/SIGTERM arrives,
 * including while the lab is still being built (the handlers are installed first; a stop
 * during Lab.create aborts it, and Lab.create tears down what it had made).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab } from '../../src/lab/index.js';
import type { LabOptions } from '../../src/lab/types.js';

/** Exit code of a script stopped by SIGINT/SIGTERM (the runner's Ctrl-C or its clean-up). */
const STOPPED_EXIT = 130;

/** A lab script's lab and temporary directory; `close` removes both (idempotent). */
export interface LabScriptSetup {
  readonly lab: Lab;
  /** A temporary directory for the script's files (keys, captures). */
  readonly dir: string;
  close(): Promise<void>;
}

/**
 * Installs the stop handlers, then builds the lab (abortable) and a temporary directory named
 * after `tempPrefix`. A stop at any point removes whatever exists by then and exits with 130.
 */
export async function createScriptLab(options: Omit<LabOptions, 'signal'>, tempPrefix: string): Promise<LabScriptSetup> {
  const stop = new AbortController();
  let lab: Lab | undefined;
  let dir: string | undefined;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (lab?.close() ?? Promise.resolve()).finally(() => (dir === undefined ? undefined : rm(dir, { recursive: true, force: true }))));
  let exiting = false;
  const stopped = (): void => {
    if (exiting) return;
    exiting = true;
    void close().finally(() => process.exit(STOPPED_EXIT));
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      stop.abort(new Error(`stopped by ${signal}`));
      // While Lab.create runs, its own abort tears the lab down (and the catch below exits); after it, we do.
      if (lab !== undefined) stopped();
    });
  }
  try {
    lab = await Lab.create({ ...options, signal: stop.signal });
    dir = await mkdtemp(join(tmpdir(), tempPrefix));
  } catch (err) {
    await close();
    if (stop.signal.aborted) process.exit(STOPPED_EXIT);
    throw err;
  }
  // A stop that came after Lab.create's last check but before it returned.
  if (stop.signal.aborted) stopped();
  return { lab, dir, close };
}
