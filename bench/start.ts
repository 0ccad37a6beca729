/**
 * How soon the CLI is on the wire (issue 13 item 4): the time from spawning `nattrav connect`
 * to its first packet (the TCP SYN of its exchange with the broker), and of `nattrav listen`
 * to its first (its UDP registration), each next to a bare `node -e` that sends the same
 * packet: the floor, Node's own start on this machine. Runs alternate between the CLI and
 * its floor, so load from elsewhere falls on both. The stand-in brokers never answer.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StandIn, floorScript, type Transport } from './lib/first-packet.js';
import { figure, type Figure, type Target } from './lib/results.js';
import type { Bench } from './lib/suite.js';
import { quantile } from './lab.js';

/** Starts of each kind (CLI and floor, for connect and for listen). */
const RUNS = { full: 30, quick: 3 };
/** The `nattrav` bin as built (dist/bench/start.js -> dist/src/cli/nattrav.cjs): the CLI's bundle when the build made one. */
const CLI = fileURLToPath(new URL('../src/cli/nattrav.cjs', import.meta.url));
/** Issue 13: `nattrav connect` reaches its first packet within 150 ms of process start. */
const TARGET: Target = { op: '<=', value: 150, text: '<= 150 ms from process start' };

/** A command whose first packet is timed: its transport and its arguments for a stand-in on `port`. */
export interface Timed {
  readonly name: 'connect' | 'listen';
  readonly transport: Transport;
  args(cli: string, port: number, home: string): string[];
}

/** The commands timed, in order. */
export const COMMANDS: readonly Timed[] = [
  // Default options: TLS on, the web fallback ready, known keys under HOME.
  { name: 'connect', transport: 'tcp', args: (cli, port) => [cli, 'connect', 'nattrav://bench-start', '--broker', `127.0.0.1:${port}`] },
  // --no-portmap: no gateway is asked first (a broker on loopback asks none anyway).
  { name: 'listen', transport: 'udp', args: (cli, port, home) => [cli, 'listen', 'nattrav://bench-start', '--broker', `127.0.0.1:${port}`, '--no-portmap', '--key-dir', join(home, 'keys')] },
];

/** Median and p90 of one series, ms. */
export interface StartTimes {
  readonly median: number;
  readonly p90: number;
  readonly runs: number;
}

function summary(ms: readonly number[]): StartTimes {
  return { median: quantile(ms, 0.5), p90: quantile(ms, 0.9), runs: ms.length };
}

/** The environment of a timed start: a fresh HOME, and none of the caller's NATTRAV_* settings or proxies. */
function cleanEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(NATTRAV_|SOCKS_PROXY$|ALL_PROXY$|HTTPS?_PROXY$|NO_PROXY$|NODE_OPTIONS$)/i.test(key)) env[key] = value;
  }
  return { ...env, HOME: home, XDG_CONFIG_HOME: join(home, '.config') };
}

/**
 * Times `runs` starts of `command` and as many of the floor, alternating, against one stand-in
 * broker. `cli` is the compiled main.js to run (another build's, to compare).
 */
export async function timeStarts(command: Timed, cliPath: string, runs: number, home: string, log: (message: string) => void): Promise<{ cli: StartTimes; floor: StartTimes }> {
  const standIn = await StandIn.open(command.transport);
  const env = cleanEnv(home);
  const cli: number[] = [];
  const floor: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      floor.push(await standIn.time(process.execPath, ['-e', floorScript(command.transport, standIn.port)], env));
      cli.push(await standIn.time(process.execPath, command.args(cliPath, standIn.port, home), env));
    }
  } finally {
    await standIn.close();
  }
  const result = { cli: summary(cli), floor: summary(floor) };
  log(`  ${command.name}: median ${result.cli.median.toFixed(0)} ms, p90 ${result.cli.p90.toFixed(0)} ms; floor median ${result.floor.median.toFixed(0)} ms, p90 ${result.floor.p90.toFixed(0)} ms`);
  return result;
}

function rows(command: Timed, times: { cli: StartTimes; floor: StartTimes }): Figure[] {
  const { cli, floor } = times;
  const packet = command.transport === 'tcp' ? 'TCP SYN to the broker' : 'UDP registration';
  const over = `${(cli.median - floor.median).toFixed(0)} ms over the floor, ${(cli.median / floor.median).toFixed(2)}x it`;
  return [
    figure({
      bench: 'start', id: `start.${command.name}.floor`, label: `Bare node -e to the same first packet (${command.transport.toUpperCase()}), median (floor)`, value: floor.median, unit: 'ms',
      note: `p90 ${floor.p90.toFixed(0)} ms over ${floor.runs} starts`,
    }),
    figure({
      bench: 'start', id: `start.${command.name}`, label: `nattrav ${command.name}: process start to first packet (${packet}), median`, value: cli.median, unit: 'ms',
      ...(command.name === 'connect' ? { target: TARGET } : {}),
      note: `p90 ${cli.p90.toFixed(0)} ms over ${cli.runs} starts; ${over}`,
    }),
  ];
}

/** The start-to-first-packet benchmark. */
export const startBench: Bench = {
  name: 'start',
  summary: 'CLI start to first packet: nattrav connect and listen next to a bare node -e',
  async run(ctx) {
    const runs = RUNS[ctx.quick ? 'quick' : 'full'];
    const home = await mkdtemp(join(tmpdir(), 'nattrav-bench-start-'));
    try {
      const figures: Figure[] = [];
      for (const command of COMMANDS) figures.push(...rows(command, await timeStarts(command, CLI, runs, home, ctx.log)));
      return figures;
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  },
};

// `node dist/bench/start.js [CLI_JS] [RUNS]`: the same timing for another build's CLI (e.g. an
// older commit's dist/src/cli/main.js, or this one's main.js: the ES modules without the bundle), printed only. Run it under the bench lock too.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const cli = process.argv[2] ?? CLI;
  const runs = Number(process.argv[3] ?? RUNS.full);
  const home = await mkdtemp(join(tmpdir(), 'nattrav-bench-start-'));
  try {
    for (const command of COMMANDS) await timeStarts(command, cli, runs, home, (line) => console.log(line));
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
