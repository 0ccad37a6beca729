#!/usr/bin/env node
/**
 * The `nattrav` bin: runs the CLI's bundle from its code cache when the build made one and
 * it is current (bundle.cts), else the CLI's ES modules (main.js), which behave the same.
 * NATTRAV_START_MODE=1 prints which of the two started, on stderr (tests use it).
 */
import { runBundle, type StartMode } from './bundle.cjs';

let mode: StartMode | undefined = runBundle(__dirname);
if (mode === undefined) {
  mode = 'modules';
  import('./main.js').catch((err: unknown) => {
    process.stderr.write(`nattrav: could not load the CLI: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
if (process.env.NATTRAV_START_MODE === '1') process.stderr.write(`nattrav: start mode ${mode}\n`);
