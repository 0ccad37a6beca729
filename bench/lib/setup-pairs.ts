/**
 * The NAT pairs of the per-strategy setup benchmark (bench/setup.ts, bench/setup-run.ts): one
 * per strategy the lab can force, and the shapes the lab run passes back. No I/O.
 */
import type { SiteOptions } from '../../src/lab/types.js';
import type { StrategyName } from '../../src/nat/strategy.js';
import type { SetupSample } from '../servers/setup-peer.js';

/** What the parent passes: connects per strategy (strategies not named are not run). */
export interface SetupRunConfig {
  readonly delayMs: number;
  readonly counts: Readonly<Partial<Record<StrategyName, number>>>;
}

/** One strategy's samples. */
export interface SetupRow {
  readonly strategy: StrategyName;
  /** The NAT pair, initiator x recipient, for the table's notes. */
  readonly pair: string;
  readonly setups: readonly SetupSample[];
}

/** What this prints. */
export type SetupRunResult = { readonly skipped: string } | { readonly rows: readonly SetupRow[] };

/** The NAT pair that makes the broker plan each strategy first (nat/plan.ts), and the recipient it dials. */
export interface Pair {
  readonly strategy: StrategyName;
  /** Initiator site and LAN host index. */
  readonly initiator: readonly [string, number];
  /** Recipient site (its first host). */
  readonly recipient: string;
}

/** The lab's sites: name and NAT type; `lan` has two hosts behind one NAT. */
export const SITES: readonly SiteOptions[] = [
  { name: 'lan', nat: 'port-restricted', hosts: 2 },
  { name: 'pr-a', nat: 'port-restricted' },
  { name: 'pr-b', nat: 'port-restricted' },
  { name: 'open-c', nat: 'none' },
  { name: 'open-d', nat: 'none' },
  { name: 'seq-s', nat: 'symmetric-sequential' },
  { name: 'rand-x', nat: 'symmetric' },
  { name: 'rand-y', nat: 'symmetric' },
];

/**
 * lan: one NAT; public: port-restricted -> no NAT; reversal: no NAT -> port-restricted; direct:
 * port-restricted x port-restricted; predicted: sequential symmetric -> port-restricted;
 * birthday: random symmetric -> port-restricted (cone); relay: random x random symmetric.
 */
export const PAIRS: readonly Pair[] = [
  { strategy: 'lan', initiator: ['lan', 1], recipient: 'lan' },
  { strategy: 'public', initiator: ['pr-b', 0], recipient: 'open-c' },
  { strategy: 'reversal', initiator: ['open-d', 0], recipient: 'pr-a' },
  { strategy: 'direct', initiator: ['pr-b', 0], recipient: 'pr-a' },
  { strategy: 'predicted', initiator: ['seq-s', 0], recipient: 'pr-a' },
  { strategy: 'birthday', initiator: ['rand-x', 0], recipient: 'pr-a' },
  { strategy: 'relay', initiator: ['rand-x', 0], recipient: 'rand-y' },
];

/** The NAT types of a pair, e.g. "symmetric -> port-restricted". */
export function pairText(pair: Pair): string {
  const nat = (site: string): string => SITES.find((s) => s.name === site)?.nat ?? site;
  return pair.strategy === 'lan' ? 'two hosts behind one port-restricted NAT' : `${nat(pair.initiator[0])} -> ${nat(pair.recipient)}`;
}

