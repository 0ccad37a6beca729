/**
 * `node dist/bench/timeline.js [--strategy NAME | --birthday] [--markdown FILE]` (root): one
 * attempt with 25 ms one way on each WAN link, message by message, from packet captures in the
 * lab (bench/timeline-run.ts, under the lab lock in its own process group), between the NAT
 * pair the setup benchmark uses for the strategy (bench/lib/setup-pairs.ts): by default a
 * direct one between two port-restricted NATs; `--birthday` is `--strategy birthday`. Prints
 * the Markdown table on stdout; with `--markdown FILE` also puts it between the
 * `<!-- timeline:begin -->` and `<!-- timeline:end -->` lines of FILE (`timeline-birthday:`,
 * `timeline-relay:`, ... for another strategy; BENCHMARKS.md, "Where the time goes"). Needs
 * tcpdump. Exit codes: 0 done, 1 failed, 2 bad command line,
 * 130 interrupted. Run it under `flock /tmp/nattrav-bench.lock`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WAN_DELAY_MS } from './lab.js';
import { setupFloor } from './lib/floors.js';
import { runLabScript } from './lib/lab-group.js';
import { finish, onInterrupt } from './lib/procs.js';
import { buildTimeline, parseTimelineArgs, spliceTimeline, timelineMarkdown, type TimelineArgs } from './lib/timeline.js';
import type { TimelineRunConfig, TimelineRunResult } from './timeline-run.js';

/** Connects in the initiator's process; the last is shown (the first also loads the TLS modules). */
const COUNT = 3;
const RUN_TIMEOUT_MS = 300_000;
let args: TimelineArgs;
try {
  args = parseTimelineArgs(process.argv.slice(2));
} catch (err) {
  console.error(`timeline: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(2);
}
const { markdown } = args;
if (process.getuid?.() !== 0) {
  console.error('timeline: needs root (it builds a network-namespace lab)');
  process.exit(1);
}

onInterrupt();
try {
  const script = fileURLToPath(new URL('./timeline-run.js', import.meta.url));
  const config: TimelineRunConfig = { delayMs: WAN_DELAY_MS, initiatorNat: args.initiatorNat, recipientNat: args.recipientNat, count: COUNT };
  const result = await runLabScript<TimelineRunResult>(script, config, 'timeline run', RUN_TIMEOUT_MS);
  if ('skipped' in result) throw new Error(result.skipped);
  const { sample, own, packets } = result;
  const rows = buildTimeline(packets, own, sample.startedAt, sample.startedAt + (sample.wallMs ?? 0));
  const floor = setupFloor(args.strategy, WAN_DELAY_MS);
  const summary = [
    `One attempt (the last of ${COUNT} connects in one process), ${config.initiatorNat} -> ${config.recipientNat} (the ${args.strategy} pair), ${WAN_DELAY_MS} ms one way on each WAN link, TLS on,`,
    `captured ${new Date(sample.startedAt).toISOString()}: path ${sample.path ?? '?'}, traversal ${sample.traversalMs?.toFixed(0) ?? '?'} ms,`,
    `setup with TLS ${sample.setupMs?.toFixed(0) ?? '?'} ms (floor ${floor.ms} ms and ${floor.tlsMs} ms). Times from the initiator's connect() call; bare ACKs left out;\nconsecutive messages alike are one row (xN). The benchmark's recipient closes what it accepts (its FIN).`,
  ].join('\n');
  const block = `${summary}\n\n${timelineMarkdown(rows)}`;
  console.log(block);
  if (markdown !== undefined) {
    writeFileSync(markdown, spliceTimeline(readFileSync(markdown, 'utf8'), block, args.marker));
    console.error(`timeline written to ${markdown}`);
  }
} catch (err) {
  console.error(`timeline failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  await finish();
}
