/**
 * STUN Binding requests answered per second, on loopback: the broker (limits opened wide), a
 * bare Node dgram responder (the floor) and coturn's turnserver (when installed), one after
 * the other in the same run, each pinned to core 0 while the same native generator
 * (lib/stun-flood.c) runs on core 1 with the same 68-byte request.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { encodeMessage } from '../src/wire/codec.js';
import { AttrType, Method } from '../src/wire/constants.js';
import { StunMessage } from '../src/wire/message.js';
import { stunFlood } from './lib/native.js';
import { withCpu } from './lib/cpu.js';
import { pinned } from './lib/procs.js';
import { figure, skipped, type Figure, type Target } from './lib/results.js';
import { findTurnserver, startBenchBroker, startCoturn, startFloor, type RunningServer } from './lib/servers.js';
import { GENERATOR_CORE, SERVER_CORE, type Bench, type BenchContext } from './lib/suite.js';

const run = promisify(execFile);

/** The request size of the targets: 20-byte header, SOFTWARE, FINGERPRINT. */
export const BINDING_REQUEST_BYTES = 68;
/** SOFTWARE value length that makes the request {@link BINDING_REQUEST_BYTES} long (20 + 4 + 36 + 8). */
const SOFTWARE_BYTES = 36;
/** Generator sockets and requests in flight on each: enough to keep a server's socket buffer non-empty. */
const SOCKETS = 32;
const WINDOW = 16;
/**
 * Interleaved rounds (floor, broker, coturn, floor, ...). Each server's best rate is its figure; the
 * ratios compare answers per second of the server's own CPU time (from /proc), per round, and take
 * the median round: other work on the machine takes a server's core away for a while, which lowers
 * its rate but not what each answer costs it.
 */
const ROUNDS = { full: 3, quick: 1 };
/** Seconds of warm-up (JIT, caches) before counting, and of counting, per server. */
const WARMUP_S = { full: 1, quick: 0.2 };
const MEASURE_S = { full: 5, quick: 0.5 };
/** Issue 10: the broker answers at least 0.9x what the bare Node responder does. */
const BROKER_TARGET: Target = { op: '>=', value: 0.9, text: '>= 0.9x the Node dgram floor' };

/** The 68-byte Binding request all three servers get. */
export function bindingRequest(): Buffer {
  const request = StunMessage.request(Method.Binding);
  request.add(AttrType.Software, new Uint8Array(Buffer.alloc(SOFTWARE_BYTES, 'nattrav-bench ')));
  const bytes = encodeMessage(request, { fingerprint: true });
  if (bytes.length !== BINDING_REQUEST_BYTES) throw new Error(`the Binding request is ${bytes.length} bytes, not ${BINDING_REQUEST_BYTES}`);
  return bytes;
}

/** What the generator reports. */
export interface FloodResult {
  readonly sent: number;
  readonly answered: number;
  readonly succeeded: number;
  readonly seconds: number;
}

/** Runs the native generator against 127.0.0.1:`port`, pinned to the generator core. */
export async function flood(port: number, request: Buffer, quick: boolean): Promise<FloodResult> {
  const binary = await stunFlood();
  const mode = quick ? 'quick' : 'full';
  const [cmd, args] = pinned(GENERATOR_CORE, binary, [String(port), String(SOCKETS), String(WINDOW), String(WARMUP_S[mode]), String(MEASURE_S[mode]), request.toString('hex')]);
  const { stdout } = await run(cmd, args, { timeout: (WARMUP_S[mode] + MEASURE_S[mode]) * 1000 + 30_000 });
  return JSON.parse(stdout) as FloodResult;
}

/** A server's rate, and its answers per second of its own CPU time (the rate over its CPU share). */
interface Measured {
  readonly rate: number;
  readonly perCpuSecond: number;
}

async function measureCpu(ctx: BenchContext, name: string, server: RunningServer, request: Buffer): Promise<Measured> {
  try {
    const pid = server.child.pid;
    const { result, busy } = await withCpu(pid === undefined ? [] : [pid], () => flood(server.port, request, ctx.quick));
    const rate = result.succeeded / result.seconds;
    const perCpuSecond = busy > 0 ? rate / Math.min(1, busy) : rate;
    ctx.log(`  ${name}: ${Math.round(rate)} answers/s (sent ${Math.round(result.sent / result.seconds)}/s), server CPU ${Math.round(busy * 100)}%, ${Math.round(perCpuSecond)} answers per CPU-second`);
    return { rate, perCpuSecond };
  } finally {
    await server.stop();
  }
}

async function measure(ctx: BenchContext, name: string, server: RunningServer, request: Buffer): Promise<number> {
  return (await measureCpu(ctx, name, server, request)).rate;
}

/** The middle value (of an even count, the mean of the two middle ones). */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

let floorOfRun: number | undefined;

/**
 * The Node dgram floor of this run, in Binding answers/s: the stun benchmark's figure when it
 * ran before, else one measurement now (the other benchmarks' targets are ratios to it).
 */
export async function nodeFloor(ctx: BenchContext): Promise<number> {
  floorOfRun ??= await measure(ctx, 'floor', await startFloor(SERVER_CORE), bindingRequest());
  return floorOfRun;
}

/** The Binding benchmark. */
export const stunBench: Bench = {
  name: 'stun',
  summary: 'STUN Binding answers/s: broker, bare Node dgram floor, coturn (pinned, same generator)',
  async run(ctx) {
    const request = bindingRequest();
    const turnserver = findTurnserver();
    let floor = 0;
    let broker = 0;
    let coturn = 0;
    let coturnFailed: string | undefined;
    const brokerRatios: number[] = [];
    const coturnRatios: number[] = [];
    for (let round = 0; round < ROUNDS[ctx.quick ? 'quick' : 'full']; round++) {
      const floorRound = await measureCpu(ctx, 'floor', await startFloor(SERVER_CORE), request);
      floor = Math.max(floor, floorRound.rate);
      const brokerRound = await measureCpu(ctx, 'broker', await startBenchBroker({ open: false, max: 100_000 }, SERVER_CORE), request);
      broker = Math.max(broker, brokerRound.rate);
      brokerRatios.push(brokerRound.perCpuSecond / floorRound.perCpuSecond);
      if (turnserver === undefined) continue;
      try {
        const coturnRound = await measureCpu(ctx, 'coturn', await startCoturn(turnserver, request, SERVER_CORE), request);
        coturn = Math.max(coturn, coturnRound.rate);
        coturnRatios.push(coturnRound.perCpuSecond / floorRound.perCpuSecond);
      } catch (err) {
        coturnFailed = err instanceof Error ? err.message : String(err);
        ctx.log(`  coturn: ${coturnFailed}`);
      }
    }
    const figures: Figure[] = [
      figure({ bench: 'stun', id: 'stun.floor', label: 'Binding answers/s, bare Node dgram responder (floor)', value: floor, unit: '/s' }),
      figure({
        bench: 'stun',
        id: 'stun.broker',
        label: 'Binding answers/s, broker (ratio to the floor per CPU-second, median round)',
        value: broker,
        unit: '/s',
        compared: median(brokerRatios),
        target: BROKER_TARGET,
        note: `per-round ratios of answers per CPU-second: ${brokerRatios.map((r) => r.toFixed(2)).join(', ')}; best rates ratio ${(broker / floor).toFixed(2)}`,
      }),
    ];
    floorOfRun = floor;
    if (turnserver === undefined) {
      figures.push(skipped('stun', 'stun.coturn', 'Binding answers/s, coturn turnserver (ratio to the floor)', '/s', 'skipped: coturn is not installed (apt-get install coturn)'));
    } else if (coturn === 0) {
      figures.push(skipped('stun', 'stun.coturn', 'Binding answers/s, coturn turnserver (ratio to the floor)', '/s', `skipped: ${coturnFailed ?? 'coturn answered nothing'}`));
    } else {
      const coturnRatio = median(coturnRatios);
      figures.push(
        figure({
          bench: 'stun',
          id: 'stun.coturn',
          label: `Binding answers/s, coturn turnserver (floor/coturn = ${(1 / coturnRatio).toFixed(2)} per CPU-second)`,
          value: coturn,
          unit: '/s',
          compared: coturnRatio,
          note: `coturn/floor per CPU-second, median round (${coturnRatios.map((r) => r.toFixed(2)).join(', ')}), reported beside the broker's`,
        }),
      );
    }
    return figures;
  },
};
