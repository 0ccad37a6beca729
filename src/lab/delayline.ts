/**
 * One-way delay on a lab WAN link, without `sch_netem` (this kernel has none).
 *
 * A delayed link looks like this inside the namespace that owns the public interface (the
 * router, the CGN, or a `nat: 'none'` host):
 *
 * ```
 *   bridge port v-sN ==veth== wraw  <- delayline (AF_PACKET, both directions) ->  wdly ==veth== wan0 (the address)
 * ```
 *
 * `wraw` and `wdly` carry no address; the C program {@link DELAYLINE_SOURCE} copies each frame
 * from one to the other after the delay. The binary is compiled with gcc at first use into a
 * cache directory under `os.tmpdir()`, keyed by a hash of the source, so a changed source is
 * rebuilt and concurrent builders never see a half-written file (compile, then rename).
 */
import { createHash } from 'node:crypto';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { DELAYLINE_SOURCE } from './delayline-source.js';
import { runCommand } from './netns.js';

/** Longest one-way delay a link accepts: more is surely a unit mistake (seconds for ms). */
export const MAX_DELAY_MS = 5_000;
/** gcc needs well under a second here; a hung compiler must still not hang a lab build. */
const compileTimeoutMs = 60_000;

/** Interface names of a delayed link inside the namespace that owns it. */
export const DELAY_IFACES = { raw: 'wraw', inner: 'wdly' } as const;

let building: Promise<string> | undefined;

/** Checks a delay option: a finite number of milliseconds in 0..{@link MAX_DELAY_MS}. */
export function validateDelayMs(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_DELAY_MS) {
    throw new NattravError(ErrorCode.InvalidArgument, `${what} ${String(value)} is invalid; pass a number of milliseconds in 0..${MAX_DELAY_MS}`);
  }
  return value;
}

/** The compiled delay line's path; compiles it (once per process, cached on disk by source hash). */
export function ensureDelayLine(): Promise<string> {
  building ??= compile().catch((error: unknown) => {
    building = undefined;
    throw error;
  });
  return building;
}

async function compile(): Promise<string> {
  const hash = createHash('sha256').update(DELAYLINE_SOURCE).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'nattrav-delayline');
  const binary = join(dir, `delayline-${hash}`);
  if (await exists(binary)) return binary;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const unique = `${process.pid}-${Date.now()}`;
  const source = join(dir, `delayline-${hash}-${unique}.c`);
  const output = `${binary}.${unique}.tmp`;
  try {
    await writeFile(source, DELAYLINE_SOURCE);
    await runCommand('gcc', ['-O2', '-Wall', '-o', output, source], { timeoutMs: compileTimeoutMs });
    await rename(output, binary);
  } catch (error) {
    throw new NattravError(ErrorCode.Lab, `cannot build the lab's delay line with gcc (is gcc installed?): ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  } finally {
    await rm(source, { force: true });
    await rm(output, { force: true });
  }
  return binary;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
