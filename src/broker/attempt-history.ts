/**
 * What the broker scheduled recently, per initiator source address and URI: the
 * evidence it plans retries from (schedule.ts), instead of trusting the
 * initiator's FAILED-STRATEGIES. A short-lived, bounded table: at most
 * `maxPairs` pairs (the least recently used is forgotten first), one entry per
 * strategy, entries older than {@link ATTEMPT_HISTORY_MS} dropped. A forgotten
 * pair only makes a retry cheaper (the relay instead of an expensive strategy).
 */
import type { StrategyName } from '../nat/strategy.js';
import { LruMap } from './limits.js';
import { ATTEMPT_HISTORY_MS, type ScheduledBefore } from './schedule.js';

/** (initiator source, URI) pairs remembered at most: ~200 bytes each, about 3 MB. */
export const MAX_HISTORY_PAIRS = 16_384;

/** Strategies scheduled per (initiator source address, URI). */
export class AttemptHistory {
  readonly #pairs: LruMap<string, Map<StrategyName, number>>;

  constructor(maxPairs: number = MAX_HISTORY_PAIRS) {
    this.#pairs = new LruMap(maxPairs);
  }

  /** Pairs held (bounded by `maxPairs`). */
  get size(): number {
    return this.#pairs.size;
  }

  /** What was scheduled for `source` and `uri` within {@link ATTEMPT_HISTORY_MS} before `now`. */
  recent(source: string, uri: string, now: number): ScheduledBefore[] {
    const entries = this.#pairs.get(pairKey(source, uri));
    if (entries === undefined) return [];
    const recent: ScheduledBefore[] = [];
    for (const [strategy, at] of entries) {
      if (now - at <= ATTEMPT_HISTORY_MS) recent.push({ strategy, at });
      else entries.delete(strategy);
    }
    return recent;
  }

  /** Notes that `strategy` was scheduled for `source` and `uri` at `at`. */
  record(source: string, uri: string, strategy: StrategyName, at: number): void {
    const key = pairKey(source, uri);
    const entries = this.#pairs.get(key) ?? new Map<StrategyName, number>();
    entries.set(strategy, at);
    this.#pairs.set(key, entries);
  }
}

function pairKey(source: string, uri: string): string {
  return `${source}\n${uri}`;
}
