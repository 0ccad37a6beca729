/**
 * The lab half of the lab benchmark, run by bench/lab.ts as its own process (root, under
 * `flock /tmp/nattrav-lab.lock`): builds a lab of three sites with a 25 ms one-way delay on
 * each WAN link (a, b behind port-restricted NATs; c on the public network), a broker, and
 * measures (1) `count` connection setups b -> a, plain and then with TLS, (2) `bytes` over a direct connection b -> c
 * and over plain TCP b -> c on the same links. Prints one JSON line ({@link LabRunResult}).
 * Removes the lab on the way out, also on failure and on SIGINT/SIGTERM.
 * Run: `node dist/bench/lab-run.js '{"count":100,"bytes":200000000,"delayMs":25}'`.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labSupport } from '../src/lab/index.js';
import { startLabBroker } from '../src/lab/scenario.js';
import type { LabHost } from '../src/lab/types.js';
import { createScriptLab } from './lib/lab-script.js';
import { Child } from './lib/procs.js';
import type { LabPeerConfig } from './servers/lab-peer.js';

/** What the parent passes. */
export interface LabRunConfig {
  readonly count: number;
  readonly bytes: number;
  readonly delayMs: number;
}

/** What this prints. */
export type LabRunResult =
  | { readonly skipped: string }
  | { readonly setupMs: number[]; readonly paths: string[]; readonly tlsSetupMs: number[]; readonly tlsPaths: string[]; readonly tlsHandshakeMs: number[]; readonly directMBps: number; readonly directPath: string; readonly tcpMBps: number };

const PEER = fileURLToPath(new URL('./servers/lab-peer.js', import.meta.url));
/** Plain TCP port of the sink on site c. */
const SINK_PORT = 5001;
/** A Node start and a registration in a namespace on a busy machine. */
const START_MS = 30_000;
/** One connect in the lab: its own limit is 30 s. */
const CONNECT_MS = 35_000;
/** One bulk transfer through the delay lines. */
const TRANSFER_MS = 180_000;

const config = JSON.parse(process.argv[2] ?? '{}') as LabRunConfig;
const support = await labSupport();
if (!support.ok) {
  console.log(JSON.stringify({ skipped: `skipped: ${support.reason}` }));
  process.exit(0);
}

const { lab, dir: keyDir, close } = await createScriptLab({
  sites: [{ name: 'a', nat: 'port-restricted' }, { name: 'b', nat: 'port-restricted' }, { name: 'c', nat: 'none' }],
  wanDelayMs: config.delayMs,
}, 'nattrav-bench-lab-');

const peer = (host: LabHost, name: string, peerConfig: LabPeerConfig): Child =>
  new Child(lab.spawn(host, process.execPath, [PEER, JSON.stringify(peerConfig)], { stdio: ['pipe', 'pipe', 'pipe'] }), name);

try {
  const broker = await startLabBroker(lab);
  const a = lab.site('a').host;
  const b = lab.site('b').host;
  const c = lab.site('c').host;
  const recipientA = peer(a, 'recipient a', { mode: 'recipient', broker: broker.address, uri: 'nattrav://bench-a', keyDir: join(keyDir, 'a') });
  const recipientTls = peer(a, 'recipient a (TLS)', { mode: 'recipient', broker: broker.address, uri: 'nattrav://bench-a-tls', keyDir: join(keyDir, 'a-tls'), tls: true });
  const recipientC = peer(c, 'recipient c', { mode: 'recipient', broker: broker.address, uri: 'nattrav://bench-c', keyDir: join(keyDir, 'c') });
  const sink = peer(c, 'sink c', { mode: 'sink', port: SINK_PORT });
  for (const child of [recipientA, recipientTls, recipientC, sink]) await child.json(START_MS);

  const setups = await peer(b, 'setup b', { mode: 'setup', broker: broker.address, uri: 'nattrav://bench-a', count: config.count }).json<{ ms: number[]; paths: string[] }>(config.count * CONNECT_MS);
  const tlsSetups = await peer(b, 'setup b (TLS)', { mode: 'setup', broker: broker.address, uri: 'nattrav://bench-a-tls', count: config.count, tls: true }).json<{ ms: number[]; paths: string[]; tlsMs: number[] }>(
    config.count * CONNECT_MS,
  );

  const direct = peer(b, 'send b', { mode: 'send', broker: broker.address, uri: 'nattrav://bench-c', bytes: config.bytes });
  const directReceived = await recipientC.json<{ bytes: number; ms: number }>(CONNECT_MS + TRANSFER_MS);
  const directSent = await direct.json<{ path: string }>(TRANSFER_MS);

  peer(b, 'tcp-send b', { mode: 'tcp-send', host: c.address, port: SINK_PORT, bytes: config.bytes });
  const tcpReceived = await sink.json<{ bytes: number; ms: number }>(TRANSFER_MS);

  const rate = (r: { bytes: number; ms: number }): number => r.bytes / 1e6 / (r.ms / 1000);
  const result: LabRunResult = {
    setupMs: setups.ms,
    paths: setups.paths,
    tlsSetupMs: tlsSetups.ms,
    tlsPaths: tlsSetups.paths,
    tlsHandshakeMs: tlsSetups.tlsMs,
    directMBps: rate(directReceived), directPath: directSent.path, tcpMBps: rate(tcpReceived) };
  console.log(JSON.stringify(result));
} finally {
  await close();
}
