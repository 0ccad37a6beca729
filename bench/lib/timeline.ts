/**
 * One attempt, message by message, from packet captures taken at the initiator's host, the
 * recipient's host and the broker (all namespaces of one lab share the kernel's clock): each
 * message at the time its sender's capture saw it leave and the time the receiver's saw it
 * arrive, from the initiator's `connect()` call. A packet is followed through NAT and the
 * delay lines by its protocol, IPv4 identification and total length, which neither changes.
 * Pure.
 */

import type { NatType } from '../../src/lab/types.js';
import type { StrategyName } from '../../src/nat/strategy.js';
import { PAIRS, SITES } from './setup-pairs.js';

/** Who a capture point is. */
export type Party = 'initiator' | 'recipient' | 'broker';

/** A captured packet, as the lab run passes it on (bench/timeline-run.ts). */
export interface TimelinePacket {
  /** Where it was captured. */
  readonly at: Party;
  readonly timeMs: number;
  readonly protocol: 'tcp' | 'udp';
  readonly src: string;
  readonly dst: string;
  readonly ipId: number;
  readonly ipLength: number;
  /** What it carries (pcap.ts describePacket); undefined for a bare ACK. */
  readonly what?: string;
}

/** The addresses each party's packets leave from, as its own capture sees them. */
export type OwnAddresses = Readonly<Record<Party, readonly string[]>>;

/** One message of the timeline. */
export interface TimelineRow {
  /** Sent, ms from the initiator's connect(). */
  readonly sentMs: number;
  /** Arrived, ms from connect(); undefined when no capture saw it arrive. */
  readonly arrivedMs?: number;
  readonly from: Party;
  /** The receiver; undefined when the packet was seen nowhere else (dropped by a NAT). */
  readonly to?: Party;
  readonly protocol: 'tcp' | 'udp';
  readonly what: string;
  /** Messages this row stands for: consecutive ones alike (same parties and message) are one row. @default 1 */
  readonly count?: number;
  /** With a count: when the last of them was sent. */
  readonly lastSentMs?: number;
}

/** How long after it left a packet may arrive and still count as the same one, ms. */
const MAX_TRANSIT_MS = 1_000;

/**
 * The messages sent between `startMs` and `endMs` (epoch ms) by any party, in the order they
 * left, each with where and when it arrived. Bare ACKs are left out.
 */
export function buildTimeline(packets: readonly TimelinePacket[], own: OwnAddresses, startMs: number, endMs: number): TimelineRow[] {
  const sentBy = (p: TimelinePacket): boolean => own[p.at].includes(p.src);
  const key = (p: TimelinePacket): string => `${p.protocol}/${p.ipId}/${p.ipLength}`;
  const arrivals = new Map<string, TimelinePacket[]>();
  for (const p of packets) {
    if (sentBy(p)) continue;
    const list = arrivals.get(key(p)) ?? [];
    list.push(p);
    arrivals.set(key(p), list);
  }
  const rows: TimelineRow[] = [];
  const sent = packets.filter((p) => sentBy(p) && p.what !== undefined && p.timeMs >= startMs && p.timeMs <= endMs).sort((x, y) => x.timeMs - y.timeMs);
  for (const p of sent) {
    const arrival = (arrivals.get(key(p)) ?? [])
      .filter((a) => a.at !== p.at && a.timeMs >= p.timeMs - 1 && a.timeMs - p.timeMs <= MAX_TRANSIT_MS)
      .sort((x, y) => x.timeMs - y.timeMs)[0];
    rows.push({
      sentMs: p.timeMs - startMs,
      from: p.at,
      protocol: p.protocol,
      what: p.what as string,
      ...(arrival === undefined ? {} : { to: arrival.at, arrivedMs: arrival.timeMs - startMs }),
    });
  }
  return collapse(rows);
}

/** Consecutive rows with the same sender, receiver, transport and message become one (a birthday spray is hundreds of SYNs). */
function collapse(rows: readonly TimelineRow[]): TimelineRow[] {
  const out: TimelineRow[] = [];
  for (const row of rows) {
    const last = out.at(-1);
    if (last !== undefined && last.from === row.from && last.to === row.to && last.protocol === row.protocol && last.what === row.what) {
      out[out.length - 1] = { ...last, count: (last.count ?? 1) + 1, lastSentMs: row.sentMs };
    } else out.push(row);
  }
  return out;
}

/** The timeline as a Markdown table: time sent, time arrived, who to whom, what. */
export function timelineMarkdown(rows: readonly TimelineRow[]): string {
  const ms = (value: number | undefined): string => (value === undefined ? '-' : value.toFixed(1));
  return [
    '| sent (ms) | arrived (ms) | from -> to | transport | message |',
    '|---:|---:|---|---|---|',
    ...rows.map((r) => {
      const many = r.count === undefined ? '' : ` (x${r.count}, the last sent at ${ms(r.lastSentMs)})`;
      return `| ${ms(r.sentMs)} | ${ms(r.arrivedMs)} | ${r.from} -> ${r.to ?? '(not seen arriving)'} | ${r.protocol.toUpperCase()} | ${r.what}${many} |`;
    }),
  ].join('\n');
}

/** Puts `block` between the `<!-- NAME:begin -->` and `<!-- NAME:end -->` lines of `text` (a Markdown file); throws when they are missing. */
export function spliceTimeline(text: string, block: string, name = 'timeline'): string {
  const BEGIN = `<!-- ${name}:begin -->`;
  const END = `<!-- ${name}:end -->`;
  const begin = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`the markers ${BEGIN} and ${END} are missing or out of order`);
  return `${text.slice(0, begin + BEGIN.length)}\n${block}\n${text.slice(end)}`;
}

/** What `node dist/bench/timeline.js` was asked for. */
export interface TimelineArgs {
  /** The strategy whose setup-benchmark NAT pair is built (bench/lib/setup-pairs.ts). @default 'direct' */
  readonly strategy: StrategyName;
  readonly initiatorNat: NatType;
  readonly recipientNat: NatType;
  /** The Markdown file whose markers get the table, if any. */
  readonly markdown?: string;
  /** The markers' name: `timeline` (direct), `timeline-birthday`, `timeline-<strategy>`. */
  readonly marker: string;
}

/** The usage line of bench/timeline.ts. */
export const TIMELINE_USAGE = 'node dist/bench/timeline.js [--strategy NAME | --birthday] [--markdown FILE]';

/**
 * Parses the timeline's arguments: `--strategy NAME` takes the setup benchmark's NAT pair for
 * NAME (lan, which needs two hosts behind one NAT, is not one the two-site timeline lab can
 * build), `--birthday` is `--strategy birthday`. Throws naming what was wrong.
 */
export function parseTimelineArgs(argv: readonly string[]): TimelineArgs {
  let strategy: string | undefined;
  let markdown: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = argv[i + 1];
    if (arg === '--birthday' || arg === '--strategy') {
      if (strategy !== undefined) throw new Error(`the strategy is given twice ('${arg}'); usage: ${TIMELINE_USAGE}`);
      if (arg === '--birthday') strategy = 'birthday';
      else if (value === undefined || value.startsWith('--')) throw new Error(`--strategy needs a strategy name; usage: ${TIMELINE_USAGE}`);
      else {
        strategy = value;
        i++;
      }
    } else if (arg === '--markdown') {
      if (value === undefined || value.startsWith('--')) throw new Error(`--markdown needs a file; usage: ${TIMELINE_USAGE}`);
      markdown = value;
      i++;
    } else throw new Error(`unexpected argument '${arg ?? ''}'; usage: ${TIMELINE_USAGE}`);
  }
  const name = strategy ?? 'direct';
  const pair = PAIRS.find((p) => p.strategy === name && p.strategy !== 'lan');
  if (pair === undefined) {
    const known = PAIRS.filter((p) => p.strategy !== 'lan').map((p) => p.strategy).join(', ');
    throw new Error(`--strategy ${name}: no two-site NAT pair for it; one of ${known}`);
  }
  const nat = (site: string): NatType => {
    const found = SITES.find((s) => s.name === site);
    if (found?.nat === undefined) throw new Error(`setup-pairs names site ${site} without a NAT type`);
    return found.nat;
  };
  const marker = name === 'direct' ? 'timeline' : `timeline-${name}`;
  return { strategy: pair.strategy, initiatorNat: nat(pair.initiator[0]), recipientNat: nat(pair.recipient), marker, ...(markdown === undefined ? {} : { markdown }) };
}
