/**
 * Where to look for a NAT's UDP mapping lifetime (RFC 5780 §4.6), decided without
 * sockets or timers: which silences T the next round of probes tests, and when the
 * search has narrowed the lifetime enough to stop. lifetime.ts runs the probes.
 *
 * The search, for a lifetime between `minMs` and `maxMs`:
 *
 * 1. The first round tests silences spread evenly on a log scale from `minMs` to
 *    `maxMs`, all at once (one mapping each), at most `maxProbes` of them, so that
 *    neighbours differ by a factor of 2 or less where the budget allows.
 * 2. Every probe that ends adds a fact: the mapping survived T (`aliveMs` grows) or
 *    it did not (`deadMs` shrinks). Mappings are assumed to live equally long, so a
 *    death at T makes every pending probe with a longer T pointless.
 * 3. Each later round splits the bracket [aliveMs, deadMs) evenly with
 *    `refineProbes` probes, until `deadMs - aliveMs <= precision × aliveMs`, or the
 *    lifetime is known to be at least `maxMs` or shorter than `minMs`, or
 *    `maxRounds` rounds ran.
 *
 * For a 30 s lifetime with the defaults: round 1 (5 to 120 s, 6 probes) ends when the
 * 34 s probe dies, round 2 (4 probes between 18 and 34 s) when the 30.5 s one does:
 * about 70 s in all, and the lifetime is known to lie in [27.3 s, 30.5 s).
 */
import { ErrorCode, NattravError } from '../errors.js';

/** Bounds and budget of a lifetime search. */
export interface LifetimeSearchOptions {
  /** The shortest silence tested, in ms; a lifetime below it is reported as "below". @default 5000 */
  readonly minMs?: number;
  /** The longest silence tested, in ms; a mapping that survives it is reported as "at least". @default 120000 */
  readonly maxMs?: number;
  /** Probes (mappings, one socket each) running at once. @default 6 */
  readonly maxProbes?: number;
  /** Probes of each refining round (at most maxProbes). @default 4 */
  readonly refineProbes?: number;
  /** Stop once the bracket is at most this fraction of its lower end. @default 0.15 */
  readonly precision?: number;
  /** Rounds at most (the first included). @default 4 */
  readonly maxRounds?: number;
}

/** Defaults of {@link LifetimeSearchOptions}, each with its reason. */
export const LIFETIME_SEARCH_DEFAULTS = {
  /** A keepalive is never shorter than 5 s: a shorter lifetime needs no finer answer. */
  minMs: 5_000,
  /** Two minutes: Linux's assured-UDP timeout; a 60 s keepalive (the default maximum) needs no more than 75 s. */
  maxMs: 120_000,
  /** Six mappings cover 5 s to 120 s with neighbours a factor 1.9 apart. */
  maxProbes: 6,
  /** Four probes cut a factor-2 bracket to about 1.15 in one more round. */
  refineProbes: 4,
  /** 15%: the reported lifetime (the bracket's lower end) is then within 15% of the truth. */
  precision: 0.15,
  /** A bound on time and packets when answers are erratic (loss, a NAT that varies). */
  maxRounds: 4,
} as const;

/** The search's settings, all present. */
export type LifetimeSearchSettings = { readonly [K in keyof LifetimeSearchOptions]-?: NonNullable<LifetimeSearchOptions[K]> };

/** What is known so far. */
export interface LifetimeBracket {
  /** The longest silence a mapping survived, in ms (0: none yet). */
  readonly aliveMs: number;
  /** The shortest silence a mapping did not survive, in ms (undefined: none yet). */
  readonly deadMs: number | undefined;
  /** Rounds run so far. */
  readonly rounds: number;
}

/** The bracket before any probe. */
export const EMPTY_BRACKET: LifetimeBracket = { aliveMs: 0, deadMs: undefined, rounds: 0 };

function positive(value: number, name: string, integer: boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new NattravError(ErrorCode.InvalidArgument, `mapping lifetime option ${name} must be a positive ${integer ? 'integer' : 'number'}, got ${String(value)}`);
  }
  return value;
}

/** Checks `options` and fills in the defaults; ERR_INVALID_ARGUMENT names a bad field. */
export function searchSettings(options: LifetimeSearchOptions = {}): LifetimeSearchSettings {
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as LifetimeSearchOptions;
  const s = { ...LIFETIME_SEARCH_DEFAULTS, ...given };
  positive(s.minMs, 'minMs', true);
  positive(s.maxMs, 'maxMs', true);
  positive(s.maxProbes, 'maxProbes', true);
  positive(s.refineProbes, 'refineProbes', true);
  positive(s.precision, 'precision', false);
  positive(s.maxRounds, 'maxRounds', true);
  if (s.maxMs <= s.minMs) throw new NattravError(ErrorCode.InvalidArgument, `mapping lifetime option maxMs (${s.maxMs}) must be more than minMs (${s.minMs})`);
  if (s.maxProbes < 2) throw new NattravError(ErrorCode.InvalidArgument, `mapping lifetime option maxProbes must be at least 2 (the shortest and the longest silence), got ${s.maxProbes}`);
  return { ...s, refineProbes: Math.min(s.refineProbes, s.maxProbes) };
}

/** Rounds a silence to 100 ms (timers are not finer than that in practice, and logs read better). */
const round100 = (ms: number): number => Math.round(ms / 100) * 100;

/** Step 1: the silences of the first round, ascending. */
export function firstRound(s: LifetimeSearchSettings): number[] {
  const ratio = s.maxMs / s.minMs;
  const count = Math.min(s.maxProbes, Math.ceil(Math.log2(ratio)) + 1);
  const silences: number[] = [];
  for (let i = 0; i < count; i++) silences.push(round100(s.minMs * ratio ** (i / (count - 1))));
  return [...new Set(silences)];
}

/** Step 2: the bracket after a probe of silence `silenceMs` ended (`alive`: its mapping survived). */
export function recordProbe(bracket: LifetimeBracket, silenceMs: number, alive: boolean): LifetimeBracket {
  if (alive) return { ...bracket, aliveMs: Math.max(bracket.aliveMs, silenceMs) };
  return { ...bracket, deadMs: bracket.deadMs === undefined ? silenceMs : Math.min(bracket.deadMs, silenceMs) };
}

/** True when a pending probe of `silenceMs` can no longer teach anything (step 2). */
export function pointless(bracket: LifetimeBracket, silenceMs: number): boolean {
  return (bracket.deadMs !== undefined && silenceMs >= bracket.deadMs) || silenceMs <= bracket.aliveMs;
}

/** Why the search stopped, or undefined while it goes on. */
export type SearchEnd = 'precise' | 'at-least' | 'below' | 'rounds' | 'inconsistent';

/** Step 3: whether to stop after a round. */
export function searchEnd(bracket: LifetimeBracket, s: LifetimeSearchSettings): SearchEnd | undefined {
  const { aliveMs, deadMs } = bracket;
  if (deadMs === undefined) return bracket.rounds > 0 ? 'at-least' : undefined;
  if (aliveMs === 0 && deadMs <= s.minMs) return 'below';
  // A mapping that died sooner than another survived: the NAT is not consistent (or a probe was lost).
  if (deadMs <= aliveMs) return 'inconsistent';
  if (aliveMs > 0 && deadMs - aliveMs <= s.precision * aliveMs) return 'precise';
  if (bracket.rounds >= s.maxRounds) return 'rounds';
  return undefined;
}

/** Step 3: the silences of the next round, ascending (the bracket split evenly). */
export function nextRound(bracket: LifetimeBracket, s: LifetimeSearchSettings): number[] {
  if (bracket.rounds === 0) return firstRound(s);
  const low = bracket.aliveMs === 0 ? s.minMs : bracket.aliveMs;
  const high = bracket.deadMs ?? s.maxMs;
  const silences: number[] = [];
  for (let i = 1; i <= s.refineProbes; i++) silences.push(round100(low + ((high - low) * i) / (s.refineProbes + 1)));
  return [...new Set(silences)].filter((t) => t > low && t < high);
}
