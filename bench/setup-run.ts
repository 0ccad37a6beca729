/**
 * The lab half of the per-strategy setup benchmark, run by bench/setup.ts as its own process
 * (root, under `flock /tmp/nattrav-lab.lock`): builds one lab whose site links each add
 * `delayMs` one way, with one NAT pair per strategy the lab can force (see {@link PAIRS}), a
 * broker with its rate limits opened wide (a benchmark repeats what the limits are there to
 * stop), recipients with TLS (the default), and runs `count` connects per strategy, one
 * strategy after another. Prints one JSON line (SetupRunResult). Removes the lab on
 * the way out, also on failure and on SIGINT/SIGTERM.
 * Run: `node dist/bench/setup-run.js '{"delayMs":25,"counts":{"direct":100}}'`.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labSupport } from '../src/lab/index.js';
import { startLabBroker } from '../src/lab/scenario.js';
import { WIDE_CLI_LIMITS } from './lib/wide.js';
import type { LabHost } from '../src/lab/types.js';
import { createScriptLab } from './lib/lab-script.js';
import { Child } from './lib/procs.js';
import { PAIRS, SITES, pairText, type SetupRow, type SetupRunConfig, type SetupRunResult } from './lib/setup-pairs.js';
import type { SetupPeerConfig, SetupSample } from './servers/setup-peer.js';

const PEER = fileURLToPath(new URL('./servers/setup-peer.js', import.meta.url));
/** A Node start and a registration in a namespace on a busy machine. */
const START_MS = 30_000;
/** One connect at most (the peer's own limit is 20 s), with slack. */
const CONNECT_MS = 25_000;

const config = JSON.parse(process.argv[2] ?? '{}') as SetupRunConfig;
const support = await labSupport();
if (!support.ok) {
  console.log(JSON.stringify({ skipped: `skipped: ${support.reason}` }));
  process.exit(0);
}

const { lab, dir: keyDir, close } = await createScriptLab({ sites: SITES.map((s) => ({ ...s })), wanDelayMs: config.delayMs }, 'nattrav-bench-setup-');

const peer = (host: LabHost, name: string, peerConfig: SetupPeerConfig): Child =>
  new Child(lab.spawn(host, process.execPath, [PEER, JSON.stringify(peerConfig)], { stdio: ['pipe', 'pipe', 'pipe'] }), name);

try {
  const broker = await startLabBroker(lab, [...WIDE_CLI_LIMITS]);
  const pairs = PAIRS.filter((p) => (config.counts[p.strategy] ?? 0) > 0);
  const recipients = new Map<string, Child>();
  for (const site of new Set(pairs.map((p) => p.recipient))) {
    recipients.set(site, peer(lab.site(site).host, `recipient ${site}`, { mode: 'recipient', broker: broker.address, uri: `nattrav://setup-${site}`, keyDir: join(keyDir, site) }));
  }
  for (const child of recipients.values()) await child.json(START_MS);
  const rows: SetupRow[] = [];
  for (const pair of pairs) {
    const count = config.counts[pair.strategy] ?? 0;
    const [site, index] = pair.initiator;
    const host = lab.site(site).hosts[index] as LabHost;
    process.stderr.write(`  ${pair.strategy}: ${count} connects, ${pairText(pair)}\n`);
    const run = peer(host, `${pair.strategy} initiator`, { mode: 'connect', broker: broker.address, uri: `nattrav://setup-${pair.recipient}`, count });
    const { setups } = await run.json<{ setups: SetupSample[] }>(count * CONNECT_MS);
    rows.push({ strategy: pair.strategy, pair: pairText(pair), setups });
  }
  const result: SetupRunResult = { rows };
  console.log(JSON.stringify(result));
} finally {
  await close();
}
