/**
 * The NAT matrix: which NAT type can reach which, by which path, how fast. One lab holds an
 * initiator site `i-<type>` and a recipient site `r-<type>` per type (every LAN 192.168.1.0/24)
 * and a broker; for every ordered pair a real `nattrav listen --echo` runs on the recipient host
 * and `nattrav connect` on the initiator host, `repeats` times, each bounded by `--timeout`.
 * Cells run one after another (the lab shares two cores).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ErrorCode, NattravError } from '../errors.js';
import { startCli, type CliEvent, type CliProcess } from './cli-process.js';
import { Lab } from './lab.js';
import { minimumSetup, type MinimumSetup } from './matrix-timing.js';
import { LAB_BROKER_PORT } from './scenario.js';
import { NAT_TYPES, type LabHost, type NatType } from './types.js';

export { minimumSetup, type MinimumSetup, type SetupStep } from './matrix-timing.js';

/** The paths a `connected` event can name (later strategies add the ones beyond `direct`). */
export type MatrixPath = 'lan' | 'public' | 'reversal' | 'direct' | 'predicted' | 'birthday' | 'relay' | 'portmap' | 'socks5-bind';

/** One `nattrav connect` run of a cell. */
export interface MatrixAttempt {
  /** Whether the connect reported `connected`. */
  readonly outcome: 'connected' | 'failed';
  /** The `connected` event's path (a {@link MatrixPath}, or whatever a newer peer reports). */
  readonly path?: string;
  /**
   * The connection's traversal time (`traversalMs`: from connect() until the direct or relayed
   * connection is proven by the Hello, before end-to-end TLS), which the protocol floor bounds.
   */
  readonly setupMs?: number;
  /** From process start to the `connected` or final event, ms (includes Node start-up). */
  readonly wallMs: number;
  /** Whether a line written through the connection came back from the echoing recipient. */
  readonly echoOk: boolean;
  /** The error code of a failure (`ERR_TIMEOUT`, `ERR_CONNECT_FAILED`, ...). */
  readonly errorCode?: string;
  /** The error message of a failure. */
  readonly message?: string;
}

/** One initiator type x recipient type pair. */
export interface MatrixCell {
  readonly initiator: NatType;
  readonly recipient: NatType;
  /** `connected` if any attempt connected. */
  readonly outcome: 'connected' | 'failed';
  /** The path most attempts took (ties: the first seen). */
  readonly path?: string;
  /** Median `setupMs` over the connected attempts. */
  readonly setupMs?: number;
  /** Connected attempts / all attempts. */
  readonly successes: number;
  /** Whether every connected attempt echoed. */
  readonly echoOk: boolean;
  /** The last failure's code and message (also when the recipient never registered). */
  readonly errorCode?: string;
  readonly message?: string;
  /** Every run, in order. */
  readonly attempts: readonly MatrixAttempt[];
}

/** What {@link runMatrix} returns. */
export interface MatrixResult {
  readonly types: readonly NatType[];
  /** One-way delay on every site's WAN link, ms. */
  readonly delayMs: number;
  readonly repeats: number;
  /** Whether the broker took `--alternate` (RFC 5780's second address). */
  readonly brokerAlternate: boolean;
  /** Row-major: initiator type, then recipient type, in `types` order. */
  readonly cells: readonly MatrixCell[];
  /** The protocol's minimum setup time for a direct connection in this lab. */
  readonly minimum: MinimumSetup;
  /** ISO 8601 start time. */
  readonly startedAt: string;
  readonly durationMs: number;
}

/** Options of {@link runMatrix}. */
export interface MatrixOptions {
  /** The NAT types to cross, at most 12 (two sites each, the lab holds 25). @default every type */
  types?: readonly NatType[];
  /** One-way delay on every site's WAN link, ms. @default 0 */
  delayMs?: number;
  /** Connects per cell. @default 1 */
  repeats?: number;
  /** Each connect's own limit, passed as `--timeout`. @default 30000 */
  connectTimeoutMs?: number;
  /** Stops the run: running processes are killed, the lab torn down, the promise rejects. */
  signal?: AbortSignal;
  /** Called with each cell once it is done. */
  onCell?: (cell: MatrixCell) => void;
}

const defaults = { delayMs: 0, repeats: 1, connectTimeoutMs: 30_000 } as const;
/** Node start-up plus UDP registration; a recipient that cannot register (UDP blocked) fails after this. */
const registerTimeoutMs = 12_000;
/** The broker process starting to listen. */
const brokerStartTimeoutMs = 20_000;
/** A connect's report comes at the latest shortly after its own `--timeout`. */
const connectSlackMs = 5_000;
/** An echo through an established connection: a few round trips even with long delays. */
const echoTimeoutMs = 5_000;
const maxTypes = 12;

/** Runs the matrix; always tears its lab down. */
export async function runMatrix(options: MatrixOptions = {}): Promise<MatrixResult> {
  const types = [...(options.types ?? NAT_TYPES)];
  if (types.length === 0 || types.length > maxTypes || new Set(types).size !== types.length || types.some((t) => !NAT_TYPES.includes(t))) {
    throw new NattravError(ErrorCode.InvalidArgument, `types must be 1..${maxTypes} distinct NAT types of: ${NAT_TYPES.join(', ')}`);
  }
  const repeats = options.repeats ?? defaults.repeats;
  const connectTimeoutMs = options.connectTimeoutMs ?? defaults.connectTimeoutMs;
  if (!Number.isInteger(repeats) || repeats < 1 || repeats > 50) throw new NattravError(ErrorCode.InvalidArgument, `repeats ${repeats} is invalid; pass 1..50`);
  if (!Number.isInteger(connectTimeoutMs) || connectTimeoutMs < 1000) throw new NattravError(ErrorCode.InvalidArgument, `connectTimeoutMs ${connectTimeoutMs} is invalid; pass at least 1000`);
  const delayMs = options.delayMs ?? defaults.delayMs;
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const signal = options.signal;
  const sites = types.flatMap((nat) => [{ name: `i-${nat}`, nat }, { name: `r-${nat}`, nat }]);
  const lab = await Lab.create({ sites, wanDelayMs: delayMs, ...(signal === undefined ? {} : { signal }) });
  const onAbort = (): void => void lab.close().catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const { address, alternate } = await startBroker(lab);
    const cells: MatrixCell[] = [];
    for (const initiator of types) {
      for (const recipient of types) {
        throwIfAborted(signal);
        const cell = await runCell(lab, address, lab.site(`i-${initiator}`).host, lab.site(`r-${recipient}`).host, { initiator, recipient, repeats, connectTimeoutMs });
        throwIfAborted(signal);
        cells.push(cell);
        options.onCell?.(cell);
      }
    }
    return { types, delayMs, repeats, brokerAlternate: alternate, cells, minimum: minimumSetup(delayMs), startedAt, durationMs: Math.round(performance.now() - started) };
  } catch (error) {
    throwIfAborted(signal);
    throw error;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await lab.close();
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new NattravError(ErrorCode.Aborted, 'the NAT matrix run was aborted; its lab was torn down', { cause: signal.reason });
}

/** Starts the broker with `--alternate` (RFC 5780); falls back to without if this broker does not know the option. */
async function startBroker(lab: Lab): Promise<{ address: string; alternate: boolean }> {
  const address = `${lab.broker.address}:${LAB_BROKER_PORT}`;
  const alternate = lab.broker.alternateAddress;
  if (alternate !== undefined) {
    const broker = startCli(lab, lab.broker, ['broker', '--listen', address, '--alternate', alternate]);
    try {
      await broker.waitForEvent('listening', brokerStartTimeoutMs);
      return { address, alternate: true };
    } catch {
      broker.child.kill('SIGKILL');
      await broker.exited;
    }
  }
  const broker = startCli(lab, lab.broker, ['broker', '--listen', address]);
  await broker.waitForEvent('listening', brokerStartTimeoutMs);
  return { address, alternate: false };
}

interface CellSpec { initiator: NatType; recipient: NatType; repeats: number; connectTimeoutMs: number }

async function runCell(lab: Lab, broker: string, initiatorHost: LabHost, recipientHost: LabHost, spec: CellSpec): Promise<MatrixCell> {
  const uri = `nattrav://matrix-${spec.initiator}-${spec.recipient}-${randomBytes(3).toString('hex')}`;
  // --once: a recipient that cannot register fails the cell now (the matrix names the blocked traffic) instead of retrying.
  const listener = startCli(lab, recipientHost, ['listen', uri, '--broker', broker, '--echo', '--once']);
  try {
    try {
      await listener.waitForEvent('registered', registerTimeoutMs);
    } catch (error) {
      await closed(listener);
      const failure = failureOf(listener, error, 'the recipient did not register');
      const attempts: MatrixAttempt[] = [{ outcome: 'failed', wallMs: 0, echoOk: false, ...failure }];
      return summarize(spec, attempts);
    }
    const attempts: MatrixAttempt[] = [];
    for (let n = 0; n < spec.repeats; n++) attempts.push(await runConnect(lab, broker, initiatorHost, uri, spec.connectTimeoutMs, n));
    return summarize(spec, attempts);
  } finally {
    await stop(listener);
  }
}

async function runConnect(lab: Lab, broker: string, host: LabHost, uri: string, timeoutMs: number, n: number): Promise<MatrixAttempt> {
  const start = performance.now();
  const connect = startCli(lab, host, ['connect', uri, '--broker', broker, '--timeout', String(timeoutMs)]);
  // A write after the process exited must not crash the runner (EPIPE on its stdin).
  connect.child.stdin?.on('error', () => {});
  try {
    let connected: CliEvent;
    try {
      connected = await connect.waitForEvent('connected', timeoutMs + connectSlackMs);
    } catch (error) {
      await closed(connect);
      // A connection that closed at once: its `connected` line may have been read only after the exit.
      const late = connect.events.find((e) => e.event === 'connected');
      if (late === undefined) {
        return { outcome: 'failed', wallMs: Math.round(performance.now() - start), echoOk: false, ...failureOf(connect, error, 'connect failed') };
      }
      connected = late;
    }
    const wallMs = Math.round(performance.now() - start);
    const line = `matrix-echo-${n}-${randomBytes(4).toString('hex')}\n`;
    connect.write(line);
    const echoOk = await connect.waitForStdout(line, echoTimeoutMs).then(() => true, () => false);
    return {
      outcome: 'connected',
      wallMs,
      echoOk,
      ...(typeof connected.path === 'string' ? { path: connected.path } : {}),
      ...(typeof connected.traversalMs === 'number' ? { setupMs: connected.traversalMs } : typeof connected.setupMs === 'number' ? { setupMs: connected.setupMs } : {}),
    };
  } finally {
    await stop(connect);
  }
}

/** Waits (at most 2 s) until the process's output streams have closed, so its last event is read. */
function closed(process: CliProcess): Promise<void> {
  const { child } = process;
  if (child.exitCode === null && child.signalCode === null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 2_000);
    if (child.stderr === null || child.stderr.closed) {
      clearTimeout(timer);
      resolve();
      return;
    }
    child.stderr.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The CLI's own `error` event if it printed one, else the waiting error. */
function failureOf(process: CliProcess, error: unknown, fallback: string): { errorCode: string; message: string } {
  const reported = process.events.find((e) => e.event === 'error');
  if (reported !== undefined) {
    return { errorCode: String(reported.code ?? 'ERR_UNEXPECTED'), message: String(reported.message ?? fallback) };
  }
  const code = error instanceof NattravError ? error.code : 'ERR_UNEXPECTED';
  const message = error instanceof Error ? error.message.replace(/; stderr:[\s\S]*$/, '') : String(error);
  return { errorCode: code, message: `${fallback}: ${message}` };
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the process has exited. */
async function stop(process: CliProcess): Promise<void> {
  const { child } = process;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.stdin?.end();
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
  await process.exited;
  clearTimeout(timer);
}

function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : Math.round(((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2);
}

function summarize(spec: CellSpec, attempts: MatrixAttempt[]): MatrixCell {
  const connected = attempts.filter((a) => a.outcome === 'connected');
  const counts = new Map<string, number>();
  for (const a of connected) if (a.path !== undefined) counts.set(a.path, (counts.get(a.path) ?? 0) + 1);
  let path: string | undefined;
  for (const [p, count] of counts) if (path === undefined || count > (counts.get(path) ?? 0)) path = p;
  const setupMs = median(connected.flatMap((a) => (a.setupMs === undefined ? [] : [a.setupMs])));
  const lastFailure = [...attempts].reverse().find((a) => a.outcome === 'failed');
  return {
    initiator: spec.initiator,
    recipient: spec.recipient,
    outcome: connected.length > 0 ? 'connected' : 'failed',
    ...(path === undefined ? {} : { path }),
    ...(setupMs === undefined ? {} : { setupMs }),
    successes: connected.length,
    echoOk: connected.length > 0 && connected.every((a) => a.echoOk),
    ...(lastFailure?.errorCode === undefined ? {} : { errorCode: lastFailure.errorCode }),
    ...(lastFailure?.message === undefined ? {} : { message: lastFailure.message }),
    attempts,
  };
}
