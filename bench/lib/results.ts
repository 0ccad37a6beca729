/**
 * The shape of bench/results.json and of one figure (a table row): value, target,
 * ratio to the target and pass/miss. Pure: no I/O.
 */

/** How a figure compares with its target. */
export type Verdict = 'pass' | 'miss' | 'info' | 'skipped';

/** A target: the value must be at least (`>=`) or at most (`<=`) `value`, in the figure's unit. */
export interface Target {
  readonly op: '>=' | '<=';
  /** The bound, in the figure's unit (e.g. 0.9 for a ratio, 500 for bytes). */
  readonly value: number;
  /** How the target reads in the issue, e.g. ">= 0.9x the Node floor". */
  readonly text: string;
}

/** One row of the table. */
export interface Figure {
  /** The benchmark (an `--only` name) that produced it. */
  readonly bench: string;
  /** Stable key, e.g. `stun.broker`. */
  readonly id: string;
  /** What was measured, for people. */
  readonly label: string;
  /** The measured value, or null when the row was skipped. */
  readonly value: number | null;
  readonly unit: string;
  /** The value the target applies to (often a ratio to a baseline); absent: no target, reported only. */
  readonly compared?: number | null;
  readonly target?: Target;
  /** `compared / target.value` (for `<=` targets: `target.value / compared`), so >= 1 means the target is met. */
  readonly ratio?: number | null;
  readonly verdict: Verdict;
  /** Why skipped, or what the number depends on. */
  readonly note?: string;
}

/** The machine the run was made on. */
export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly node: string;
  readonly kernel: string;
  readonly memoryBytes: number;
}

/** Everything bench/results.json holds. */
export interface Results {
  readonly version: 1;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly quick: boolean;
  readonly only: readonly string[];
  readonly machine: Machine;
  readonly figures: readonly Figure[];
}

/** Input of {@link figure}: a measured value, optionally with the value its target applies to. */
export interface FigureInput {
  readonly bench: string;
  readonly id: string;
  readonly label: string;
  readonly value: number;
  readonly unit: string;
  /** The value compared with the target (default: `value`). */
  readonly compared?: number;
  readonly target?: Target;
  readonly note?: string;
}

/** Builds a row: computes the ratio to the target and the verdict. */
export function figure(input: FigureInput): Figure {
  const { target } = input;
  const compared = input.compared ?? input.value;
  const base = { bench: input.bench, id: input.id, label: input.label, value: input.value, unit: input.unit, ...(input.note === undefined ? {} : { note: input.note }) };
  if (target === undefined) return { ...base, ...(input.compared === undefined ? {} : { compared }), verdict: 'info' };
  if (!Number.isFinite(compared)) return { ...base, compared: null, target, ratio: null, verdict: 'miss' };
  const ratio = target.op === '>=' ? compared / target.value : compared === 0 ? Infinity : target.value / compared;
  return { ...base, compared, target, ratio, verdict: ratio >= 1 ? 'pass' : 'miss' };
}

/** A row that could not be measured here (e.g. "skipped: needs root"). */
export function skipped(bench: string, id: string, label: string, unit: string, note: string, target?: Target): Figure {
  return { bench, id, label, value: null, unit, ...(target === undefined ? {} : { target, ratio: null }), verdict: 'skipped', note };
}

/** Checks that `value` parsed from JSON has the shape of {@link Results}; throws naming the first bad field. */
export function checkResults(value: unknown): Results {
  const bad = (what: string): never => {
    throw new Error(`results.json: ${what}`);
  };
  if (typeof value !== 'object' || value === null) bad('not an object');
  const r = value as Record<string, unknown>;
  if (r.version !== 1) bad('version is not 1');
  if (!Array.isArray(r.figures)) bad('figures is not an array');
  const machine = r.machine as Record<string, unknown> | undefined;
  if (typeof machine?.cpu !== 'string' || typeof machine.node !== 'string' || typeof machine.kernel !== 'string') bad('machine lacks cpu/node/kernel');
  for (const [i, f] of (r.figures as Array<Record<string, unknown>>).entries()) {
    if (typeof f.id !== 'string' || typeof f.label !== 'string' || typeof f.unit !== 'string') bad(`figure ${i} lacks id/label/unit`);
    if (f.value !== null && typeof f.value !== 'number') bad(`figure ${String(f.id)}: value is neither a number nor null`);
    if (!['pass', 'miss', 'info', 'skipped'].includes(String(f.verdict))) bad(`figure ${String(f.id)}: bad verdict ${String(f.verdict)}`);
  }
  return value as Results;
}
