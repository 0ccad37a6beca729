/**
 * `npm run bench`: runs the suite (or `--only` some of it), prints the table on stdout
 * (progress on stderr), writes bench/results.json and regenerates BENCHMARKS.md's figure
 * tables from it. Exit codes: 0 done (whatever the verdicts), 1 a benchmark failed, 2 bad
 * command line, 130 interrupted. Run it under `flock /tmp/nattrav-bench.lock`.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { describeMachine } from './lib/machine.js';
import { BenchUsageError, parseBenchArgs, usage } from './lib/args.js';
import { finish, onInterrupt, pinSelf, stopAll } from './lib/procs.js';
import { profileBrokersInto } from './lib/servers.js';
import { checkResults, type Figure, type Results } from './lib/results.js';
import { GENERATOR_CORE } from './lib/suite.js';
import { textTable } from './lib/table.js';
import { DEFAULT_MARKDOWN, DEFAULT_RESULTS, writeReport } from './report.js';
import { SUITE } from './suite.js';

const names = SUITE.map((b) => b.name);
let args;
try {
  args = parseBenchArgs(process.argv.slice(2), names, { out: DEFAULT_RESULTS, markdown: DEFAULT_MARKDOWN });
} catch (err) {
  if (!(err instanceof BenchUsageError)) throw err;
  console.error(`bench: ${err.message}`);
  process.exit(2);
}
if (args.help) {
  console.log(usage(names, SUITE.map((b) => b.summary)));
  process.exit(0);
}

onInterrupt();
if (args.profile !== undefined) {
  mkdirSync(args.profile, { recursive: true });
  profileBrokersInto(args.profile);
}
// The runner is the generator of the in-process load (registrations, lookups): its core.
pinSelf(GENERATOR_CORE);
const selected = args.only.length === 0 ? SUITE : SUITE.filter((b) => args.only.includes(b.name));
const startedAt = new Date().toISOString();
const log = (message: string): void => void process.stderr.write(`${message}\n`);
const figures: Figure[] = [];
let failed = false;
for (const bench of selected) {
  log(`== ${bench.name}: ${bench.summary}${args.quick ? ' (quick)' : ''}`);
  const began = Date.now();
  try {
    figures.push(...(await bench.run({ quick: args.quick, log })));
  } catch (err) {
    failed = true;
    log(`${bench.name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    await stopAll();
  }
  log(`   ${bench.name} took ${((Date.now() - began) / 1000).toFixed(1)} s`);
}

await finish();

// With --only, the other benchmarks keep their rows from the previous results.
let kept: readonly Figure[] = [];
if (args.only.length > 0 && existsSync(args.out)) {
  try {
    kept = checkResults(JSON.parse(readFileSync(args.out, 'utf8'))).figures.filter((f) => !args.only.includes(f.bench));
  } catch (err) {
    log(`not keeping the rows of ${args.out}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
const order = (f: Figure): number => names.indexOf(f.bench);
const results: Results = {
  version: 1,
  startedAt,
  finishedAt: new Date().toISOString(),
  quick: args.quick,
  only: args.only,
  machine: describeMachine(),
  figures: [...kept, ...figures].sort((a, b) => order(a) - order(b)),
};
writeFileSync(args.out, `${JSON.stringify(results, null, 2)}\n`);
console.log(textTable(figures));
log(`results written to ${args.out}`);
if (!args.quick) {
  try {
    writeReport(args.out, args.markdown, new Map(SUITE.map((b) => [b.name, b.summary])));
    log(`tables regenerated in ${args.markdown}`);
  } catch (err) {
    log(`${args.markdown} not updated: ${err instanceof Error ? err.message : String(err)}`);
  }
}
process.exitCode = failed ? 1 : 0;
