/**
 * A worker process of `nattrav broker --workers N`: who it is (from the environment the
 * primary forked it with), its channel to the primary, the stores it reaches through it,
 * and its share of the broker's limits.
 */
import cluster from 'node:cluster';
import type { Socket } from 'node:net';
import { ErrorCode, NattravError, isNattravError } from '../../errors.js';
import type { ScheduledBefore } from '../schedule.js';
import { resolveLimits, type BrokerLimits, type BrokerLimitsOptions, type RateSpec } from '../limits.js';
import { IpcPort, unbatch, type IpcMessage } from './ipc.js';
import { IpcRegistry, IpcSessions, StoreClient, WorkerNonces, nonceSecret } from './ipc-stores.js';
import { WORKER_ENV } from './primary.js';
import type { WorkersStatusView } from './status-view.js';
import type { RouteCounts, WorkerLink } from './worker-router.js';

/** Who this worker is. */
export interface WorkerIdentity {
  readonly prefix: string;
  readonly slot: number;
  readonly workers: number;
}

/** How often a worker tells the primary its cross-worker counts (when they changed), in ms. */
const COUNTS_INTERVAL_MS = 500;

/** This process's identity as a broker worker, or undefined when it is not one (not forked by {@link BrokerWorkers}). */
export function workerIdentity(env: NodeJS.ProcessEnv = process.env): WorkerIdentity | undefined {
  const value = env[WORKER_ENV];
  if (!cluster.isWorker || value === undefined) return undefined;
  // PREFIX:SLOT:WORKERS; the prefix may hold colons itself (a join address, [IPv6]:port).
  const fields = value.split(':');
  const workers = fields.pop();
  const slot = fields.pop();
  const identity = { prefix: fields.join(':'), slot: Number(slot), workers: Number(workers) };
  if (identity.prefix === '' || !Number.isInteger(identity.slot) || !Number.isInteger(identity.workers) || identity.slot < 1 || identity.slot > identity.workers) return undefined;
  return identity;
}

/** A worker's connection to its primary. */
export class WorkerConnection {
  readonly identity: WorkerIdentity;
  readonly registry: IpcRegistry;
  readonly sessions: IpcSessions;
  readonly #port: IpcPort;
  readonly #client: StoreClient;
  #handler: ((message: IpcMessage, handle: Socket | undefined) => void) | undefined;
  #countsTimer: NodeJS.Timeout | undefined;
  /** Worker 1 with `--http`: where the other workers' status reports go (status-view.ts). */
  #status: Pick<WorkersStatusView, 'report' | 'forget'> | undefined;
  #counts: (() => RouteCounts | undefined) | undefined;
  #lastCounts = '';
  #link: WorkerLink | undefined;

  /** `onPrimaryGone`: the IPC channel closed (the primary died or stopped). */
  constructor(identity: WorkerIdentity, onPrimaryGone: () => void) {
    this.identity = identity;
    this.#port = new IpcPort(process as unknown as ConstructorParameters<typeof IpcPort>[0]);
    this.#client = new StoreClient(this.#port);
    this.registry = new IpcRegistry(this.#client);
    this.sessions = new IpcSessions(this.#client);
    process.on('message', (raw: unknown, handle: unknown) =>
      unbatch(raw, handle, (message, socket) => {
        if (message.nt === 'ret') this.#client.settle(message);
        else if (message.nt === 'status') this.#status?.report(message['from'] as number, message);
        else {
          if (message.nt === 'worker-gone') this.#status?.forget(message['slot'] as number);
          this.#handler?.(message, socket);
        }
      }),
    );
    process.once('disconnect', () => {
      this.#client.close();
      onPrimaryGone();
    });
  }

  /** Fetches what the worker's broker needs from the primary first (the nonce secret); then {@link WorkerConnection.link} is ready. */
  async start(): Promise<void> {
    const secret = await nonceSecret(this.#client);
    this.#link = {
      ...this.identity,
      port: this.#port,
      nonces: new WorkerNonces(secret, this.#client),
      nextSequence: async (uri) => (await this.#client.call('sequences', 'next', [uri])) as number,
      history: {
        recent: async (source, uri, now) => (await this.#client.call('history', 'recent', [source, uri, now])) as ScheduledBefore[],
        record: (source, uri, strategy, at) => void this.#client.call('history', 'record', [source, uri, strategy, at]).catch(() => undefined),
      },
      onMessage: (handler) => {
        this.#handler = handler;
      },
    };
  }

  /** The link the worker's broker takes (`workerLink`); throws before {@link WorkerConnection.start} resolved. */
  get link(): WorkerLink {
    if (this.#link === undefined) throw new NattravError(ErrorCode.Closed, 'the worker connection has not started');
    return this.#link;
  }

  /** Worker 1 with `--http`: the other workers' status reports go to `view`. */
  collectStatus(view: Pick<WorkersStatusView, 'report' | 'forget'>): void {
    this.#status = view;
  }

  /** Tells the primary this worker listens; from now on its cross-worker counts are reported. */
  listening(counts: () => RouteCounts | undefined): void {
    this.#port.post({ nt: 'listening' });
    this.#counts = counts;
    this.#countsTimer = setInterval(() => this.#reportCounts(), COUNTS_INTERVAL_MS);
    this.#countsTimer.unref();
  }

  #reportCounts(): void {
    const now = this.#counts?.();
    const text = JSON.stringify(now);
    if (now === undefined || text === this.#lastCounts) return;
    this.#lastCounts = text;
    this.#port.post({ nt: 'counts', counts: now });
  }

  /** Tells the primary this worker could not start, and why (the primary fails its start with it). */
  failed(err: unknown): void {
    const code = isNattravError(err) ? err.code : ErrorCode.InvalidArgument;
    this.#port.post({ nt: 'failed', failure: { code, message: err instanceof Error ? err.message : String(err) } });
    this.#port.flush();
  }

  /** Stops reporting. */
  close(): void {
    clearInterval(this.#countsTimer);
    this.#reportCounts(); // the last counts, so the primary's summary at stop is complete
    this.#port.flush();
  }
}

/**
 * One worker's share of the broker's limits, so that N workers together enforce what one
 * process does, not N times more: every per-source rate (perSecond and burst) and every
 * cap is divided by N. The kernel spreads datagrams and the primary deals connections
 * round robin, so a busy source's traffic divides evenly and meets the same total limit;
 * a source whose few requests all land on one worker meets its share there, which is
 * stricter, never looser. A burst or cap is never below 1 (a limit of 1 stays usable, at
 * the price of allowing up to N in total). Timeouts are not shares and stay as given.
 */
export function shareLimits(options: BrokerLimitsOptions | undefined, workers: number): BrokerLimits {
  const limits = resolveLimits(options);
  if (workers <= 1) return limits;
  const shared: Record<string, number | RateSpec> = {};
  for (const [key, value] of Object.entries(limits) as Array<[keyof BrokerLimits, number | RateSpec]>) {
    if (typeof value !== 'number') {
      shared[key] = { perSecond: value.perSecond / workers, burst: value.burst === 0 ? 0 : Math.max(1, value.burst / workers) };
    } else if (SHARED_CAPS.has(key)) {
      shared[key] = Math.max(1, Math.floor(value / workers));
    } else {
      shared[key] = value;
    }
  }
  return shared as unknown as BrokerLimits;
}

/** The limits that count things across the broker (divided among workers); the others are timeouts and sizes. */
const SHARED_CAPS: ReadonlySet<keyof BrokerLimits> = new Set<keyof BrokerLimits>([
  'maxPendingPerUri',
  'maxRegistrationsPerSource',
  'maxRegistrations',
  'maxConnections',
  'maxConnectionsPerSource',
  'limitedEventsPerSecond',
]);
