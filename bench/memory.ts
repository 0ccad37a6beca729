/**
 * Resident memory per registration: one broker (open mode, limits wide, caps raised to hold
 * them all) takes registrations through its real UDP path until it holds 100,000, then
 * 1,000,000; the RSS it reports after a full GC, minus its RSS before the first, divided by
 * the count. Bounded in time: a fill that does not finish reports what it reached.
 */
import { openRegistration } from './lib/register.js';
import { figure, type Figure, type Target } from './lib/results.js';
import { brokerRss, startBenchBroker } from './lib/servers.js';
import { SERVER_CORE, type Bench, type BenchContext } from './lib/suite.js';
import { closeSockets, openSockets, udpLoad } from './lib/udp-load.js';

/** Registration counts measured at (quick runs use small ones: they only show the path works). */
const COUNTS = { full: [100_000, 1_000_000], quick: [2_000, 5_000] } as const;
/** Longest a fill may take, ms (1,000,000 at some 10,000/s is 100 s). */
const FILL_MS = { full: 240_000, quick: 20_000 };
const SOCKETS = 8;
const WINDOW = 32;
/** Issue 10: at most 500 bytes per registration at 1,000,000. */
const TARGET: Target = { op: '<=', value: 500, text: '<= 500 B per registration at 1,000,000' };

async function fill(ctx: BenchContext, port: number, from: number, to: number, ms: number): Promise<number> {
  const sockets = await openSockets(SOCKETS);
  try {
    let next = from;
    const result = await udpLoad({ ports: [port], sockets, window: WINDOW, durationMs: ms, next: () => (next < to ? openRegistration(`nattrav://bench-mem-${next++}`) : undefined) });
    ctx.log(`  registered ${from + result.succeeded} (${Math.round(result.succeeded / result.seconds)}/s, ${result.failed} refused, ${result.lost} lost)`);
    return from + result.succeeded;
  } finally {
    await closeSockets(sockets);
  }
}

/** The memory benchmark. */
export const memoryBench: Bench = {
  name: 'memory',
  summary: 'Resident memory per registration at 100,000 and 1,000,000 registrations',
  async run(ctx) {
    const mode = ctx.quick ? 'quick' : 'full';
    const counts = COUNTS[mode];
    const top = counts[counts.length - 1]!;
    const broker = await startBenchBroker({ open: true, max: top + 1_000 }, SERVER_CORE);
    const figures: Figure[] = [];
    try {
      const base = await brokerRss(broker);
      ctx.log(`  RSS with no registration: ${(base / 2 ** 20).toFixed(1)} MiB`);
      let held = 0;
      const started = Date.now();
      for (const count of counts) {
        held = await fill(ctx, broker.port, held, count, Math.max(1_000, FILL_MS[mode] - (Date.now() - started)));
        const rss = await brokerRss(broker);
        const perRegistration = (rss - base) / held;
        const note = held < count ? `the fill reached only ${held.toLocaleString('en-US')} in time` : `RSS ${(rss / 2 ** 20).toFixed(0)} MiB`;
        const label = `Resident memory per registration at ${count.toLocaleString('en-US')}`;
        const input = { bench: 'memory', id: `memory.${count}`, label, value: perRegistration, unit: 'B', note };
        figures.push(figure(count === top && !ctx.quick ? { ...input, target: TARGET } : input));
      }
    } finally {
      await broker.stop();
    }
    return figures;
  },
};
