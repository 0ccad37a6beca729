/**
 * The lab half of bench/timeline.ts, run as its own process (root, under
 * `flock /tmp/nattrav-lab.lock`): a lab of two sites, a behind `recipientNat` and b behind
 * `initiatorNat` (the pair of the setup benchmark that makes the broker plan a strategy:
 * bench/lib/setup-pairs.ts), with `delayMs` one way on each WAN link, a broker with its
 * rate limits opened wide (as in the setup benchmark), a recipient (TLS on, the default) on site a, tcpdump in
 * the broker's and both hosts' namespaces, and `count` connects from site b; prints one JSON
 * line ({@link TimelineRunResult}) with the last connect and every packet captured during it.
 * Removes the lab (and stops tcpdump) on the way out, also on failure and on SIGINT/SIGTERM.
 * Run: `node dist/bench/timeline-run.js '{"delayMs":25,"initiatorNat":"port-restricted","recipientNat":"port-restricted","count":3}'`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { labSupport } from '../src/lab/index.js';
import { startLabBroker } from '../src/lab/scenario.js';
import type { LabHost, NatType } from '../src/lab/types.js';
import { WIDE_CLI_LIMITS } from './lib/wide.js';
import { describePacket, readPcap } from './lib/pcap.js';
import { createScriptLab } from './lib/lab-script.js';
import { Child } from './lib/procs.js';
import type { OwnAddresses, Party, TimelinePacket } from './lib/timeline.js';
import type { SetupPeerConfig, SetupSample } from './servers/setup-peer.js';

/** What the parent passes. */
export interface TimelineRunConfig {
  readonly delayMs: number;
  /** The initiator's NAT (site b). */
  readonly initiatorNat: NatType;
  /** The recipient's NAT (site a). */
  readonly recipientNat: NatType;
  /** Connects in one process; the last one is the timeline's (the first loads the TLS modules). */
  readonly count: number;
}

/** What this prints. */
export type TimelineRunResult =
  | { readonly skipped: string }
  | { readonly sample: SetupSample; readonly own: OwnAddresses; readonly packets: readonly TimelinePacket[] };

const PEER = fileURLToPath(new URL('./servers/setup-peer.js', import.meta.url));
/** A Node start and a registration in a namespace on a busy machine. */
const START_MS = 30_000;
/** One connect at most (the peer's own limit is 20 s), with slack. */
const CONNECT_MS = 25_000;
/** Headers and the first bytes of a payload: enough for a STUN header or a TLS record header. */
const SNAPLEN = 160;
/** tcpdump says "listening on ..." once its capture is open. */
const CAPTURE_READY_MS = 10_000;
/** Packets captured after the connect returned that still belong to it (its last ACKs). */
const TAIL_MS = 100;
/** After the connects, before tcpdump is stopped: its last packets reach the file (immediate mode, no block timeout). */
const DRAIN_MS = 500;

const config = JSON.parse(process.argv[2] ?? '{}') as TimelineRunConfig;
const support = await labSupport();
if (!support.ok) {
  console.log(JSON.stringify({ skipped: `skipped: ${support.reason}` }));
  process.exit(0);
}

const { lab, dir, close } = await createScriptLab({ sites: [{ name: 'a', nat: config.recipientNat }, { name: 'b', nat: config.initiatorNat }], wanDelayMs: config.delayMs }, 'nattrav-bench-timeline-');

/** Starts tcpdump in `host`'s namespace, writing `file`; resolves once its capture is open. */
async function capture(host: LabHost, file: string): Promise<ChildProcess> {
  const child = lab.spawn(host, 'tcpdump', ['-i', 'any', '-n', '-U', '--immediate-mode', '-s', String(SNAPLEN), '-w', file, 'ip'], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let said = '';
    const timer = setTimeout(() => reject(new Error(`tcpdump in ${host.name} did not start: ${said}`)), CAPTURE_READY_MS);
    child.once('error', (err) => reject(new Error(`tcpdump could not be started (install it: apt-get install tcpdump): ${err.message}`)));
    child.stderr?.on('data', (chunk: Buffer) => {
      said += chunk.toString();
      if (said.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

/** Stops a tcpdump by PID and waits until it has written its file. */
async function stopCapture(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

const peer = (host: LabHost, name: string, peerConfig: SetupPeerConfig): Child =>
  new Child(lab.spawn(host, process.execPath, [PEER, JSON.stringify(peerConfig)], { stdio: ['pipe', 'pipe', 'pipe'] }), name);

try {
  const broker = await startLabBroker(lab, [...WIDE_CLI_LIMITS]);
  const a = lab.site('a');
  const b = lab.site('b');
  const recipient = peer(a.host, 'recipient a', { mode: 'recipient', broker: broker.address, uri: 'nattrav://timeline-a', keyDir: join(dir, 'keys') });
  await recipient.json(START_MS);
  const points: ReadonlyArray<readonly [Party, LabHost]> = [['initiator', b.host], ['recipient', a.host], ['broker', lab.broker]];
  const captures = await Promise.all(points.map(([party, host]) => capture(host, join(dir, `${party}.pcap`))));
  const run = peer(b.host, 'initiator b', { mode: 'connect', broker: broker.address, uri: 'nattrav://timeline-a', count: config.count });
  const { setups } = await run.json<{ setups: SetupSample[] }>(config.count * CONNECT_MS);
  await new Promise((resolve) => setTimeout(resolve, DRAIN_MS));
  for (const child of captures) await stopCapture(child);
  const sample = setups.at(-1) as SetupSample;
  if (sample.wallMs === undefined) throw new Error(`the timed connect failed: ${sample.error ?? 'no reason'}`);
  const endMs = sample.startedAt + sample.wallMs + TAIL_MS;
  const packets: TimelinePacket[] = [];
  for (const [party] of points) {
    for (const p of readPcap(await readFile(join(dir, `${party}.pcap`)))) {
      if (p.timeMs < sample.startedAt - TAIL_MS || p.timeMs > endMs) continue;
      const what = describePacket(p);
      packets.push({ at: party, timeMs: p.timeMs, protocol: p.protocol, src: p.src, dst: p.dst, ipId: p.ipId, ipLength: p.ipLength, ...(what === undefined ? {} : { what }) });
    }
  }
  const brokerAddresses = [lab.broker.address, ...(lab.broker.alternateAddress === undefined ? [] : [lab.broker.alternateAddress])];
  const own: OwnAddresses = { initiator: [b.host.address], recipient: [a.host.address], broker: brokerAddresses };
  const result: TimelineRunResult = { sample, own, packets };
  console.log(JSON.stringify(result));
} finally {
  await close();
}
