/**
 * Setup time per strategy in the NAT lab (root), issue 13 item 5: for every strategy the lab
 * can force with a NAT pair, N connects with a 25 ms one-way delay on each WAN link, TLS on;
 * p50 and p99 of the traversal (until the Hello proved the path) and of the whole setup
 * (TLS done), each next to its floor (bench/lib/floors.ts) and the target.
 * bench/setup-run.ts does the lab work in its own process group (bench/lib/lab-group.ts).
 */
import { fileURLToPath } from 'node:url';
import type { StrategyName } from '../src/nat/strategy.js';
import { quantile, WAN_DELAY_MS } from './lab.js';
import { setupFloor } from './lib/floors.js';
import { runLabScript } from './lib/lab-group.js';
import { figure, skipped, type Figure, type Target } from './lib/results.js';
import type { Bench } from './lib/suite.js';
import { PAIRS, type SetupRow, type SetupRunConfig, type SetupRunResult } from './lib/setup-pairs.js';

/**
 * Connects per strategy: 100 (the issue), birthday 30 (each runs up to seconds and hundreds
 * of sockets; 100 would take the run past ten minutes).
 */
const FULL_COUNTS: Readonly<Partial<Record<StrategyName, number>>> = { lan: 100, public: 100, reversal: 100, direct: 100, predicted: 100, birthday: 30, relay: 100 };
const QUICK_COUNT = 3;
/** The whole run at most: lab build, every connect (20 s limit each, most take under 1 s), teardown. */
const RUN_TIMEOUT_MS = 1_800_000;
const P50_TARGET: Target = { op: '<=', value: 1.2, text: 'p50 <= 1.2x the floor' };
const P99_TARGET: Target = { op: '<=', value: 1.5, text: 'p99 <= 1.5x the floor' };
const BIRTHDAY_TARGET: Target = { op: '<=', value: 1000, text: 'p50 <= 1.0 s' };

function rowsSkipped(why: string): Figure[] {
  return PAIRS.flatMap(({ strategy }) => [
    skipped('setup', `setup.${strategy}.traversal.p50`, `${strategy}: traversal (Hello done, before TLS) p50`, 'ms', why, strategy === 'birthday' ? BIRTHDAY_TARGET : P50_TARGET),
    skipped('setup', `setup.${strategy}.setup.p50`, `${strategy}: setup (TLS done) p50`, 'ms', why, strategy === 'birthday' ? undefined : P50_TARGET),
  ]);
}

/** The four rows of one strategy: traversal and TLS-done, p50 and p99, each against its floor. */
export function strategyFigures(row: SetupRow, delayMs: number): Figure[] {
  const { strategy } = row;
  const floor = setupFloor(strategy, delayMs);
  const ok = row.setups.filter((s) => s.setupMs !== undefined && s.traversalMs !== undefined);
  const offPlan = row.setups.filter((s) => s.path !== strategy).length;
  const failed = row.setups.length - ok.length;
  // Connected on the planned path, but only after an earlier strategy of the plan failed.
  const retried = row.setups.filter((s) => s.path === strategy && (s.attempts ?? 1) > 1).length;
  const traversal = ok.map((s) => s.traversalMs as number);
  const setup = ok.map((s) => s.setupMs as number);
  const note = (floorMs: number, crossings: number): string =>
    `N=${row.setups.length} (${row.pair}); ${offPlan} not on the planned path (${failed} failed), ${retried} after a failed first strategy; floor ${floorMs} ms = ${crossings} crossings, ${floor.formula}`;
  const birthday = strategy === 'birthday';
  const rows: Figure[] = [];
  for (const [what, values, floorMs, crossings] of [['traversal', traversal, floor.ms, floor.crossings], ['setup', setup, floor.tlsMs, floor.tlsCrossings]] as const) {
    const label = what === 'traversal' ? 'traversal (Hello done, before TLS)' : 'setup (TLS done)';
    const p50 = quantile(values, 0.5);
    const p99 = quantile(values, 0.99);
    // Birthday's target is its probing (the traversal) within 1 s, whatever TLS adds after it.
    const p50Target = birthday ? (what === 'traversal' ? BIRTHDAY_TARGET : undefined) : P50_TARGET;
    rows.push(
      figure({
        bench: 'setup', id: `setup.${strategy}.${what}.p50`, label: `${strategy}: ${label} p50${birthday ? '' : ' (ratio to the floor)'}`, value: p50, unit: 'ms',
        ...(birthday ? {} : { compared: p50 / floorMs }), ...(p50Target === undefined ? {} : { target: p50Target }), note: note(floorMs, crossings),
      }),
      figure({
        bench: 'setup', id: `setup.${strategy}.${what}.p99`, label: `${strategy}: ${label} p99 (ratio to the floor)`, value: p99, unit: 'ms', compared: p99 / floorMs,
        ...(birthday ? {} : { target: P99_TARGET }), note: note(floorMs, crossings),
      }),
    );
  }
  return rows;
}

/** The per-strategy setup benchmark. */
export const setupBench: Bench = {
  name: 'setup',
  summary: `Setup p50/p99 per strategy (lan, public, reversal, direct, predicted, birthday, relay; ${WAN_DELAY_MS} ms one-way per WAN link, TLS on) next to each floor, in the lab (root)`,
  async run(ctx) {
    if (process.getuid?.() !== 0) return rowsSkipped('skipped: needs root');
    const counts = ctx.quick ? Object.fromEntries(PAIRS.map((p) => [p.strategy, QUICK_COUNT])) : FULL_COUNTS;
    const config: SetupRunConfig = { delayMs: WAN_DELAY_MS, counts };
    const script = fileURLToPath(new URL('./setup-run.js', import.meta.url));
    const result = await runLabScript<SetupRunResult>(script, config, 'setup run', RUN_TIMEOUT_MS);
    if ('skipped' in result) return rowsSkipped(result.skipped);
    const figures = result.rows.flatMap((row) => strategyFigures(row, WAN_DELAY_MS));
    for (const f of figures) if (f.id.endsWith('.p50')) ctx.log(`  ${f.label}: ${f.value?.toFixed(0)} ms (${f.note ?? ''})`);
    return figures;
  },
};
