/** The command line of `npm run bench` (`node dist/bench/run.js`), parsed and checked. */

/** What the command line asks for. */
export interface BenchArgs {
  /** Benchmarks to run (all when empty), in the suite's order. */
  readonly only: readonly string[];
  readonly quick: boolean;
  /** Where the results go. */
  readonly out: string;
  /** The Markdown file whose figure tables are regenerated (not on --quick runs). */
  readonly markdown: string;
  /** Directory for the brokers' CPU profiles (`--profile DIR`); none when absent. */
  readonly profile?: string;
  readonly help: boolean;
}

/** A command line that cannot be run; the message names what was wrong. */
export class BenchUsageError extends Error {}

/** The usage text. */
export function usage(names: readonly string[], summaries: readonly string[]): string {
  return [
    'usage: npm run bench -- [--only NAME[,NAME...]] [--quick] [--out FILE] [--markdown FILE] [--profile DIR]',
    '',
    '  --only NAME     run only these benchmarks (repeatable, comma-separated); others keep their rows in --out',
    '  --quick         a short smoke run (tiny counts and durations; BENCHMARKS.md is left alone)',
    '  --out FILE      results file (default bench/results.json)',
    '  --markdown FILE Markdown file whose figure tables are regenerated (default BENCHMARKS.md)',
    '  --profile DIR   every broker writes a CPU profile into DIR (summary: node dist/bench/profile.js FILE)',
    '',
    'benchmarks:',
    ...names.map((n, i) => `  ${n.padEnd(14)}${summaries[i] ?? ''}`),
  ].join('\n');
}

/** Parses `argv` (after the script); throws {@link BenchUsageError} naming the bad option or name. */
export function parseBenchArgs(argv: readonly string[], known: readonly string[], defaults: { out: string; markdown: string }): BenchArgs {
  const only: string[] = [];
  let quick = false;
  let help = false;
  let { out, markdown } = defaults;
  let profile: string | undefined;
  const value = (i: number, flag: string): string => {
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new BenchUsageError(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const take = (): string => inline ?? value(i++, flag);
    switch (flag) {
      case '--only':
        for (const name of take().split(',').map((n) => n.trim())) {
          if (!known.includes(name)) throw new BenchUsageError(`--only: unknown benchmark '${name}' (known: ${known.join(', ')})`);
          if (!only.includes(name)) only.push(name);
        }
        break;
      case '--quick':
        quick = true;
        break;
      case '--out':
        out = take();
        break;
      case '--markdown':
        markdown = take();
        break;
      case '--profile':
        profile = take();
        break;
      case '--help':
      case '-h':
        help = true;
        break;
      default:
        throw new BenchUsageError(`unknown option '${arg}' (see --help)`);
    }
  }
  return { only: known.filter((n) => only.includes(n)), quick, out, markdown, help, ...(profile === undefined ? {} : { profile }) };
}
