/**
 * Direct-connection setup time and direct vs plain TCP throughput in the NAT lab (root):
 * bench/lab-run.ts in its own process group under `flock /tmp/nattrav-lab.lock`, stopped
 * (SIGTERM, so it removes its lab) when the run ends or is interrupted.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { minimumSetup } from '../src/lab/matrix-timing.js';
import { Child, onCleanup, sleep } from './lib/procs.js';
import { figure, skipped, type Figure, type Target } from './lib/results.js';
import type { Bench } from './lib/suite.js';
import type { LabRunConfig, LabRunResult } from './lab-run.js';

/** One-way delay on each WAN link, ms (issue 10). */
export const WAN_DELAY_MS = 25;
const RUNS = { full: { count: 100, bytes: 200_000_000 }, quick: { count: 5, bytes: 5_000_000 } };
/** The whole lab run at most (lab build, 100 setups, two transfers, teardown). */
const LAB_TIMEOUT_MS = 600_000;
/** After SIGTERM, how long the lab run may take to remove its namespaces before SIGKILL. */
const TEARDOWN_MS = 30_000;
const SETUP_TARGET: Target = { op: '<=', value: 1.3, text: 'p50 <= 1.3x the protocol minimum' };
const THROUGHPUT_TARGET: Target = { op: '>=', value: 0.99, text: '>= 0.99x plain TCP on the same lab path' };
const LAB_LOCK = '/tmp/nattrav-lab.lock';

/** The `q`-quantile (0..1) of `values`, nearest rank. */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
}

function skippedRows(why: string): Figure[] {
  return [
    skipped('lab', 'lab.setup.p50', 'Direct setup time p50', 'ms', why, SETUP_TARGET),
    skipped('lab', 'lab.setup.p99', 'Direct setup time p99', 'ms', why),
    skipped('lab', 'lab.setup.tls', 'Direct setup with TLS p50/p99', 'ms', why),
    skipped('lab', 'lab.direct', 'Direct connection throughput in the lab (ratio to plain TCP)', 'MB/s', why, THROUGHPUT_TARGET),
    skipped('lab', 'lab.tcp', 'Plain TCP throughput on the same lab path', 'MB/s', why),
  ];
}

/**
 * Runs `script` (a compiled lab run beside this file, e.g. `lab-run.js`) with `config` as its
 * JSON argument in its own process group under the lab lock; resolves with its JSON line.
 */
export async function runLabScript<C, R>(scriptName: string, config: C): Promise<R> {
  const script = fileURLToPath(new URL(`./${scriptName}`, import.meta.url));
  // Its own process group: a stop reaches flock's child too, and Ctrl-C reaches it only through us.
  const child = new Child(spawn('flock', [LAB_LOCK, process.execPath, script, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true }), 'lab run');
  const pid = child.pid;
  const groupAlive = (): boolean => {
    try {
      process.kill(-pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const signalGroup = (signal: NodeJS.Signals): void => {
    if (groupAlive()) process.kill(-pid, signal);
  };
  /** Waits until no process of the group is left (the lab run removes its lab before it exits). */
  const gone = async (ms: number): Promise<boolean> => {
    const deadline = Date.now() + ms;
    while (groupAlive()) {
      if (Date.now() > deadline) return false;
      await sleep(100);
    }
    return true;
  };
  // Asked to stop early (failure, Ctrl-C): SIGTERM makes the lab run remove its lab; SIGKILL only if it hangs.
  const stop = async (): Promise<void> => {
    signalGroup('SIGTERM');
    if (!(await gone(TEARDOWN_MS))) signalGroup('SIGKILL');
  };
  const remove = onCleanup(stop);
  let result: R;
  try {
    result = await child.json<R>(LAB_TIMEOUT_MS);
  } catch (err) {
    remove();
    await stop();
    throw err;
  }
  // Done: the lab run removes its lab and exits by itself.
  if (!(await gone(TEARDOWN_MS))) await stop();
  remove();
  return result;
}

/** The TLS setups' note: p99, the TLS handshake's share (ConnectionInfo.tlsMs) and how many were not direct. */
function tlsNote(result: Extract<LabRunResult, { tlsSetupMs: number[] }>): string {
  const p99 = quantile(result.tlsSetupMs, 0.99).toFixed(0);
  const handshake = quantile(result.tlsHandshakeMs, 0.5).toFixed(0);
  const notDirect = result.tlsPaths.filter((p) => p !== 'direct').length;
  return `p99 ${p99} ms; TLS handshake p50 ${handshake} ms of it; ${result.tlsSetupMs.length} attempts, ${notDirect} not direct`;
}

/** The lab benchmark. */
export const labBench: Bench = {
  name: 'lab',
  summary: `Direct setup p50/p99 (100 attempts, ${WAN_DELAY_MS} ms one-way per WAN link) and direct vs plain TCP throughput, in the lab (root)`,
  async run(ctx) {
    if (process.getuid?.() !== 0) return skippedRows('skipped: needs root');
    const run = RUNS[ctx.quick ? 'quick' : 'full'];
    const result = await runLabScript<LabRunConfig, LabRunResult>('lab-run.js', { ...run, delayMs: WAN_DELAY_MS });
    if ('skipped' in result) return skippedRows(result.skipped);
    const minimum = minimumSetup(WAN_DELAY_MS);
    const p50 = quantile(result.setupMs, 0.5);
    const p99 = quantile(result.setupMs, 0.99);
    const notDirect = result.paths.filter((p) => p !== 'direct').length;
    const over = `${result.setupMs.length} attempts, ${notDirect} not direct; minimum ${minimum.totalMs} ms = ${minimum.totalCrossings} x ${WAN_DELAY_MS} ms (warm recipient; cold ${minimum.cold.totalCrossings} x)`;
    ctx.log(`  setup p50 ${p50.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms (${over}); direct ${result.directMBps.toFixed(1)} MB/s (${result.directPath}), TCP ${result.tcpMBps.toFixed(1)} MB/s`);
    const size = `${(run.bytes / 1e6).toFixed(0)} MB one way, b -> c`;
    return [
      figure({ bench: 'lab', id: 'lab.setup.minimum', label: 'Protocol minimum of a direct setup (see Method)', value: minimum.totalMs, unit: 'ms', note: `${minimum.totalCrossings} one-way crossings x ${WAN_DELAY_MS} ms` }),
      figure({ bench: 'lab', id: 'lab.setup.p50', label: 'Direct setup time p50 (ratio to the minimum)', value: p50, unit: 'ms', compared: p50 / minimum.totalMs, target: SETUP_TARGET, note: over }),
      figure({ bench: 'lab', id: 'lab.setup.p99', label: 'Direct setup time p99 (ratio to the minimum)', value: p99, unit: 'ms', compared: p99 / minimum.totalMs, note: over }),
      figure({ bench: 'lab', id: 'lab.setup.tls', label: 'Direct setup with TLS p50/p99 (value: p50)', value: quantile(result.tlsSetupMs, 0.5), unit: 'ms', note: tlsNote(result) }),
      figure({ bench: 'lab', id: 'lab.direct', label: 'Direct connection throughput in the lab (ratio to plain TCP)', value: result.directMBps, unit: 'MB/s', compared: result.directMBps / result.tcpMBps, target: THROUGHPUT_TARGET, note: `${size}, path ${result.directPath}` }),
      figure({ bench: 'lab', id: 'lab.tcp', label: 'Plain TCP throughput on the same lab path', value: result.tcpMBps, unit: 'MB/s', note: size }),
    ];
  },
};
