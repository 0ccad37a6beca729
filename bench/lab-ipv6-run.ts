/**
 * The lab half of the IPv6 setup benchmark, run by bench/lab-ipv6.ts as its own process (root,
 * under `flock /tmp/nattrav-lab.lock`): builds a lab with a 25 ms one-way delay on each WAN link
 * and three pairs of sites: IPv4-only behind port-restricted NATs, IPv6-only behind stateful
 * firewalls, and dual-stack (both); a dual-stack broker; and times `count` connect() calls in
 * each pair, one after the other. Prints one JSON line ({@link LabIpv6RunResult}). Removes the
 * lab on the way out, also on failure and on SIGINT/SIGTERM.
 * Run: `node dist/bench/lab-ipv6-run.js '{"count":20,"delayMs":25}'`.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labSupport } from '../src/lab/index.js';
import { startLabBroker } from '../src/lab/scenario.js';
import type { LabHost } from '../src/lab/types.js';
import { createScriptLab } from './lib/lab-script.js';
import { Child } from './lib/procs.js';
import { PAIR_KINDS, type PairKind } from './lab-ipv6.js';
import type { LabPeerConfig } from './servers/lab-peer.js';

/** What the parent passes. */
export interface LabIpv6RunConfig {
  readonly count: number;
  readonly delayMs: number;
}

/** The setups of one pair of sites. */
export interface PairSetups {
  readonly ms: number[];
  readonly paths: string[];
  /** The address family each connection ran in. */
  readonly families: number[];
}

/** What this prints. */
export type LabIpv6RunResult = { readonly skipped: string } | { readonly pairs: Readonly<Record<PairKind, PairSetups>> };

const PEER = fileURLToPath(new URL('./servers/lab-peer.js', import.meta.url));
/** A Node start and a registration in a namespace on a busy machine. */
const START_MS = 30_000;
/** One connect in the lab: its own limit is 30 s. */
const CONNECT_MS = 35_000;

const config = JSON.parse(process.argv[2] ?? '{}') as LabIpv6RunConfig;
const support = await labSupport();
if (!support.ok) {
  console.log(JSON.stringify({ skipped: `skipped: ${support.reason}` }));
  process.exit(0);
}

const { lab, dir: keyDir, close } = await createScriptLab(
  {
    sites: [
      { name: 'r4', nat: 'port-restricted' }, { name: 'i4', nat: 'port-restricted' },
      { name: 'r6', nat: 'none', ipv6: 'only' }, { name: 'i6', nat: 'none', ipv6: 'only' },
      { name: 'rd', nat: 'port-restricted', ipv6: 'dual' }, { name: 'id', nat: 'port-restricted', ipv6: 'dual' },
    ],
    wanDelayMs: config.delayMs,
  },
  'nattrav-bench-lab-ipv6-',
);

const peer = (host: LabHost, name: string, peerConfig: LabPeerConfig): Child =>
  new Child(lab.spawn(host, process.execPath, [PEER, JSON.stringify(peerConfig)], { stdio: ['pipe', 'pipe', 'pipe'] }), name);

try {
  const broker = await startLabBroker(lab, [], { dualStack: true });
  const brokers: Record<PairKind, string[]> = {
    ipv4: [broker.address],
    ipv6: [broker.address6 ?? ''],
    dual: [broker.address, broker.address6 ?? ''],
  };
  const pairs = {} as Record<PairKind, PairSetups>;
  for (const kind of PAIR_KINDS) {
    const suffix = kind === 'ipv4' ? '4' : kind === 'ipv6' ? '6' : 'd';
    const uri = `nattrav://bench-${kind}`;
    const recipient = peer(lab.site(`r${suffix}`).host, `recipient ${kind}`, { mode: 'recipient', broker: brokers[kind], uri, keyDir: join(keyDir, kind) });
    await recipient.json(START_MS);
    pairs[kind] = await peer(lab.site(`i${suffix}`).host, `setup ${kind}`, { mode: 'setup', broker: brokers[kind], uri, count: config.count }).json<PairSetups>(config.count * CONNECT_MS);
  }
  const result: LabIpv6RunResult = { pairs };
  console.log(JSON.stringify(result));
} finally {
  await close();
}
