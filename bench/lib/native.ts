/**
 * The native load generator (stun-flood.c beside this file's source): compiled with gcc at
 * bench time into a temporary directory of this run, removed when the run ends (not after each benchmark).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { onRunEnd } from './procs.js';

const run = promisify(execFile);
/** gcc on a busy machine. */
const COMPILE_TIMEOUT_MS = 60_000;
/** dist/bench/lib/native.js -> bench/lib/stun-flood.c (the C source is not copied into dist). */
const SOURCE = fileURLToPath(new URL('../../../bench/lib/stun-flood.c', import.meta.url));

let built: Promise<string> | undefined;

/** Path of the compiled stun-flood (built once per run). Throws naming gcc when it cannot be built. */
export function stunFlood(): Promise<string> {
  built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nattrav-bench-'));
    onRunEnd(() => rm(dir, { recursive: true, force: true }));
    const binary = join(dir, 'stun-flood');
    try {
      await run('gcc', ['-O2', '-Wall', '-o', binary, SOURCE], { timeout: COMPILE_TIMEOUT_MS });
    } catch (err) {
      throw new Error(`cannot build the load generator ${SOURCE} with gcc (apt-get install gcc libc6-dev): ${err instanceof Error ? err.message : String(err)}`);
    }
    return binary;
  })();
  return built;
}
