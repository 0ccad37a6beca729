/** The figures as a plain-text table (terminal) and as Markdown tables (BENCHMARKS.md). Pure. */
import type { Figure, Results } from './results.js';

/** A value with its unit, rounded for reading. */
export function formatValue(value: number | null | undefined, unit: string): string {
  if (value === null || value === undefined) return '-';
  if (!Number.isFinite(value)) return String(value);
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return `${value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 })} ${unit}`.trim();
}

function cells(f: Figure): string[] {
  const target = f.target === undefined ? '-' : f.target.text;
  const compared = f.compared === undefined || f.compared === null || f.compared === f.value ? '' : ` (${formatValue(f.compared, 'x')})`;
  const ratio = f.ratio === undefined || f.ratio === null ? '-' : `${f.ratio.toFixed(2)}`;
  return [f.label, `${formatValue(f.value, f.unit)}${compared}`, target, ratio, f.verdict === 'skipped' ? (f.note ?? 'skipped') : f.verdict];
}

const HEADER = ['figure', 'value', 'target', 'ratio to target', 'verdict'];

/** The whole run as an aligned text table. */
export function textTable(figures: readonly Figure[]): string {
  const rows = [HEADER, ...figures.map(cells)];
  const widths = HEADER.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** One Markdown table per benchmark, in run order, each under a `####` heading, with the rows' notes. */
export function markdownTables(results: Results, titles: ReadonlyMap<string, string>): string {
  const benches = [...new Set(results.figures.map((f) => f.bench))];
  const escape = (s: string): string => s.replaceAll('|', '\\|');
  return benches.map((bench) => {
    const header = [...HEADER, 'notes'];
    const notes = (f: Figure): string => (f.verdict === 'skipped' ? '' : (f.note ?? ''));
    const rows = results.figures.filter((f) => f.bench === bench).map((f) => `| ${[...cells(f), notes(f)].map(escape).join(' | ')} |`);
    return [`#### ${titles.get(bench) ?? bench} (\`--only ${bench}\`)`, '', `| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows].join('\n');
  }).join('\n\n');
}

/** The machine and run line for BENCHMARKS.md. */
export function machineText(results: Results): string {
  const m = results.machine;
  return [
    `- CPU: ${m.cpu}, ${m.cores} cores (from /proc/cpuinfo); memory ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB`,
    `- Node ${m.node}, Linux kernel ${m.kernel}`,
    `- Run: ${results.startedAt} to ${results.finishedAt}${results.quick ? ' (--quick: smoke run, not representative)' : ''}`,
  ].join('\n');
}
