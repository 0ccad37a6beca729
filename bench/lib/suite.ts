/** What every benchmark of the suite provides, and what the runner gives it. */
import type { Figure } from './results.js';

/** What the runner passes to a benchmark. */
export interface BenchContext {
  /** A short smoke run: the same steps, tiny counts and durations. */
  readonly quick: boolean;
  /** Progress for people, on stderr. */
  log(message: string): void;
}

/** One benchmark (selectable with `--only NAME`). */
export interface Bench {
  /** The `--only` name. */
  readonly name: string;
  /** One line for `--help`. */
  readonly summary: string;
  /** Measures and returns its rows (skipped rows say why). Must clean up what it started, also when it throws. */
  run(ctx: BenchContext): Promise<Figure[]>;
}

/** Core the server under test is pinned to. */
export const SERVER_CORE = 0;
/** Core the load generator is pinned to. */
export const GENERATOR_CORE = 1;
