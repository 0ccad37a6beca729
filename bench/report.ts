/**
 * Regenerates the generated parts of BENCHMARKS.md from bench/results.json: the machine
 * block and the figure tables, between their `<!-- ...:begin -->` / `<!-- ...:end -->`
 * markers; the hand-written method and analysis around them is kept as it is.
 * Run: `node dist/bench/report.js [RESULTS_JSON] [MARKDOWN]` (the last step of `npm run bench`).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkResults, type Results } from './lib/results.js';
import { machineText, markdownTables } from './lib/table.js';

/** Default paths, relative to the repository (dist/bench/report.js -> ../../). */
export const DEFAULT_RESULTS = fileURLToPath(new URL('../../bench/results.json', import.meta.url));
export const DEFAULT_MARKDOWN = fileURLToPath(new URL('../../BENCHMARKS.md', import.meta.url));

/** Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`; throws when the markers are missing. */
export function replaceBlock(markdown: string, name: string, body: string): string {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const from = markdown.indexOf(begin);
  const to = markdown.indexOf(end);
  if (from < 0 || to < from) throw new Error(`the Markdown file has no ${begin} ... ${end} block`);
  return `${markdown.slice(0, from + begin.length)}\n${body}\n${markdown.slice(to)}`;
}

/** The Markdown with its generated blocks made from `results`. */
export function renderReport(markdown: string, results: Results, titles: ReadonlyMap<string, string>): string {
  return replaceBlock(replaceBlock(markdown, 'machine', machineText(results)), 'figures', markdownTables(results, titles));
}

/** Reads `resultsPath`, rewrites `markdownPath` in place. */
export function writeReport(resultsPath: string, markdownPath: string, titles: ReadonlyMap<string, string>): void {
  const results = checkResults(JSON.parse(readFileSync(resultsPath, 'utf8')));
  writeFileSync(markdownPath, renderReport(readFileSync(markdownPath, 'utf8'), results, titles));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { SUITE } = await import('./suite.js');
  try {
    writeReport(process.argv[2] ?? DEFAULT_RESULTS, process.argv[3] ?? DEFAULT_MARKDOWN, new Map(SUITE.map((b) => [b.name, b.summary])));
  } catch (err) {
    console.error(`report: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
