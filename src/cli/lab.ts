/**
 * `nattrav lab matrix`: parse, run the NAT matrix in the network lab, print,
 * write the report. Each cell and the summary are results (stdout); the start is progress (stderr).
 */
import { writeFile } from 'node:fs/promises';
import { ErrorCode, NattravError } from '../index.js';
import { NAT_TYPES, renderMatrixReport, runMatrix, type MatrixCell, type NatType } from '../lab/index.js';
import { ExitCode, type Reporter } from './output.js';

/** Options of `nattrav lab matrix`, as commander parses them. */
export interface LabMatrixOptions {
  types?: string;
  delay?: string;
  repeats?: string;
  report?: string;
}

function parseTypes(text: string | undefined): NatType[] {
  if (text === undefined) return [...NAT_TYPES];
  const types = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  for (const type of types) {
    if (!(NAT_TYPES as readonly string[]).includes(type)) {
      throw new NattravError(ErrorCode.InvalidArgument, `--types: unknown NAT type "${type}"; pass a comma-separated list of ${NAT_TYPES.join(', ')}`);
    }
  }
  return types as NatType[];
}

function parseNumber(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+(\.\d+)?$/.test(text)) throw new NattravError(ErrorCode.InvalidArgument, `${what} "${text}" is not a non-negative number`);
  return Number(text);
}

function cellLine(cell: MatrixCell): string {
  const pair = `${cell.initiator} -> ${cell.recipient}`.padEnd(46);
  if (cell.outcome === 'failed') return `${pair} failed     ${cell.errorCode ?? ''}: ${(cell.message ?? '').slice(0, 100)}`;
  return `${pair} ${(cell.path ?? '?').padEnd(10)} ${String(cell.setupMs ?? '?').padStart(6)} ms  ${cell.successes}/${cell.attempts.length}  echo ${cell.echoOk ? 'ok' : 'FAILED'}`;
}

/** Runs the matrix; SIGINT/SIGTERM abort it (the lab is torn down). */
export async function labMatrixCommand(options: LabMatrixOptions, out: Reporter): Promise<number> {
  const types = parseTypes(options.types);
  const delayMs = parseNumber(options.delay, '--delay', 0);
  const repeats = parseNumber(options.repeats, '--repeats', 1);
  const controller = new AbortController();
  const abort = (): void => controller.abort(new Error('interrupted'));
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);
  try {
    out.event('matrix-start', { types, delayMs, repeats }, `NAT matrix: ${types.length}x${types.length} pairs, delay ${delayMs} ms, ${repeats} connect(s) each`);
    const result = await runMatrix({
      types,
      delayMs,
      repeats,
      signal: controller.signal,
      onCell: (cell) => out.result('cell', { ...cell }, cellLine(cell)),
    });
    if (options.report !== undefined) await writeFile(options.report, renderMatrixReport(result));
    const connected = result.cells.filter((c) => c.outcome === 'connected').length;
    const { cells: _cells, ...summary } = result;
    out.result(
      'matrix',
      { ...summary, connected, total: result.cells.length, ...(options.report === undefined ? {} : { report: options.report }) },
      `${connected}/${result.cells.length} pairs connected in ${(result.durationMs / 1000).toFixed(1)} s; direct-connection floor at this delay: ${result.minimum.totalMs} ms (${result.minimum.totalCrossings} one-way delays)${options.report === undefined ? '' : `; report: ${options.report}`}`,
    );
    return ExitCode.Ok;
  } finally {
    process.off('SIGINT', abort);
    process.off('SIGTERM', abort);
  }
}
