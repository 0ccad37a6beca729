/**
 * Setup time over IPv4, over IPv6 and dual-stack, in the NAT lab (root; issue 12 item 2: the
 * dual-stack setup stays within 300 ms of the single-family case): bench/lab-ipv6-run.ts in
 * its own process group under the lab lock (bench/lab.ts runLabScript), 25 ms one-way per WAN
 * link as in the lab benchmark.
 */
import { quantile, runLabScript, WAN_DELAY_MS } from './lab.js';
import { figure, skipped, type Figure, type Target } from './lib/results.js';
import type { Bench } from './lib/suite.js';
import type { LabIpv6RunConfig, LabIpv6RunResult, PairSetups } from './lab-ipv6-run.js';

/** The kinds of site pairs timed (bench/lab-ipv6-run.ts builds one pair of sites of each). */
export const PAIR_KINDS = ['ipv4', 'ipv6', 'dual'] as const;
/** One of {@link PAIR_KINDS}. */
export type PairKind = (typeof PAIR_KINDS)[number];

/** Connects per pair of sites. */
const COUNTS = { full: 20, quick: 3 };
/** Issue 12: dual-stack setup within 300 ms of the single-family case (the dual p50 over the IPv6-only p50 + 300 ms). */
const OVERHEAD_MS = 300;
const OVERHEAD_TARGET: Target = { op: '<=', value: 1, text: `<= 1x (IPv6-only p50 + ${OVERHEAD_MS} ms)` };

const LABELS: Record<PairKind, string> = {
  ipv4: 'Setup p50, IPv4-only sites (port-restricted NATs)',
  ipv6: 'Setup p50, IPv6-only sites (stateful firewalls, no NAT)',
  dual: `Setup p50, dual-stack sites (port-restricted NATs + IPv6 firewalls; ratio to IPv6-only p50 + ${OVERHEAD_MS} ms)`,
};

function skippedRows(why: string): Figure[] {
  return PAIR_KINDS.map((kind) => skipped('lab-ipv6', `lab-ipv6.setup.${kind}`, LABELS[kind], 'ms', why, kind === 'dual' ? OVERHEAD_TARGET : undefined));
}

/** "20 connects: direct x20, IPv6 x20". */
function describe(setups: PairSetups): string {
  const count = (values: ReadonlyArray<string | number>): string =>
    [...new Set(values)].map((value) => `${String(value)} x${values.filter((v) => v === value).length}`).join(', ');
  return `${setups.ms.length} connects: ${count(setups.paths)}; ${count(setups.families.map((f) => `IPv${f}`))}`;
}

/** The IPv6 setup benchmark. */
export const labIpv6Bench: Bench = {
  name: 'lab-ipv6',
  summary: `Setup p50 over IPv4-only, IPv6-only and dual-stack sites (${COUNTS.full} connects each, ${WAN_DELAY_MS} ms one-way per WAN link), in the lab (root)`,
  async run(ctx) {
    if (process.getuid?.() !== 0) return skippedRows('skipped: needs root');
    const count = COUNTS[ctx.quick ? 'quick' : 'full'];
    const result = await runLabScript<LabIpv6RunConfig, LabIpv6RunResult>('lab-ipv6-run.js', { count, delayMs: WAN_DELAY_MS });
    if ('skipped' in result) return skippedRows(result.skipped);
    const p50 = (kind: PairKind): number => quantile(result.pairs[kind].ms, 0.5);
    for (const kind of PAIR_KINDS) ctx.log(`  ${kind}: p50 ${p50(kind).toFixed(0)} ms (${describe(result.pairs[kind])})`);
    const difference = (single: PairKind): string => `${(p50('dual') - p50(single)).toFixed(0)} ms`;
    const single = PAIR_KINDS.filter((kind) => kind !== 'dual').map((kind) =>
      figure({ bench: 'lab-ipv6', id: `lab-ipv6.setup.${kind}`, label: LABELS[kind], value: p50(kind), unit: 'ms', note: describe(result.pairs[kind]) }));
    return [
      ...single,
      figure({
        bench: 'lab-ipv6',
        id: 'lab-ipv6.setup.dual',
        label: LABELS.dual,
        value: p50('dual'),
        unit: 'ms',
        compared: p50('dual') / (p50('ipv6') + OVERHEAD_MS),
        target: OVERHEAD_TARGET,
        note: `${describe(result.pairs.dual)}; dual minus IPv6-only ${difference('ipv6')}, minus IPv4-only ${difference('ipv4')}`,
      }),
    ];
  },
};
