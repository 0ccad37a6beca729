/**
 * The primary process of `nattrav broker --workers N`: it forks N workers (Node
 * `cluster`; each runs a whole broker on the shared UDP and TCP sockets), holds the
 * state they share when there is no Redis (the registry and sessions: ipc-stores.ts;
 * workers given a Redis URL use Redis instead and never call these),
 * routes what lands on the wrong worker (worker-router.ts) through its attempt
 * directory, restarts a worker that dies, and stops them all when it stops.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import type { Socket } from 'node:net';
import { ErrorCode, NattravError, isNattravError, type ErrorCodeValue } from '../../errors.js';
import { MemoryRegistry } from '../registry/memory.js';
import type { Registry } from '../registry/registry.js';
import { NonceBook } from '../../security/proof.js';
import { AttemptHistory } from '../attempt-history.js';
import { SequenceCounter } from '../sequences.js';
import { SessionTable, type SessionStore } from '../sessions.js';
import { BROKER_DEFAULTS } from '../options.js';
import { IpcPort, unbatch, type IpcMessage } from './ipc.js';
import { serveStoreCall } from './ipc-stores.js';
import type { RouteCounts } from './worker-router.js';
import { AttemptDirectory } from './directory.js';

/** The environment variable that tells a forked process it is worker SLOT of primary PREFIX (`PREFIX:SLOT:N`). */
export const WORKER_ENV = 'NATTRAV__WORKER';

/** Options of {@link startBrokerWorkers}. */
export interface BrokerWorkersOptions {
  /** How many workers (processes) to run: an integer from 1. */
  readonly workers: number;
  /** Most sessions the primary's table holds. @default BROKER_DEFAULTS.maxSessions */
  readonly maxSessions?: number;
  /** How long a worker may take to start listening, in ms. @default 20000 */
  readonly startTimeoutMs?: number;
  /**
   * The workers listen on port 0 (any free port): when the port their shared sockets got
   * turns out half taken (UDP free, TCP or the alternate port not), start again on new
   * ones, up to {@link ANY_PORT_TRIES} times. @default false
   */
  readonly anyPort?: boolean;
  /**
   * What the workers' IDs start with (`NAME/w1`, `NAME/w2`, ...: registrations name the worker
   * that took them). On Redis, the broker's join address: a broker started again on the same
   * address has the same worker IDs, so its recipients stay reachable through the restart.
   * @default random
   */
  readonly name?: string;
}

/** What the primary reports (its 'event' events). */
export type WorkersEvent =
  | { type: 'worker-started'; slot: number; pid: number }
  | { type: 'worker-exited'; slot: number; pid: number; code: number | null; signal: string | null; restartInMs: number }
  | { type: 'workers-stopped'; routed: RouteCounts };

/** A worker that could not start: its error code and message (the CLI turns it into the exit code). */
interface StartFailure {
  readonly code: ErrorCodeValue;
  readonly message: string;
}

/** One worker slot, whose process is replaced when it dies. */
interface Slot {
  readonly slot: number;
  worker: Worker | undefined;
  port: IpcPort | undefined;
  counts: RouteCounts;
  /** Counts of the processes that ran in this slot before, added up. */
  previous: RouteCounts;
  restartDelayMs: number;
}

/** A worker process that dies is started again after this delay, doubled up to {@link MAX_RESTART_DELAY_MS} while it keeps dying at once. */
const FIRST_RESTART_DELAY_MS = 100;
const MAX_RESTART_DELAY_MS = 5_000;
/** A worker that lived this long is healthy: its next death restarts it after the first delay again. */
const HEALTHY_AFTER_MS = 10_000;
/** Starts on port 0 tried at most (see {@link BrokerWorkersOptions.anyPort}). */
export const ANY_PORT_TRIES = 5;
/** How long stop() waits for workers to close before it kills them (SIGKILL by PID). */
const STOP_GRACE_MS = 5_000;

/** The primary of a multi-process broker. Emits 'event' ({@link WorkersEvent}). */
export class BrokerWorkers extends EventEmitter {
  readonly #options: Required<Omit<BrokerWorkersOptions, 'name'>>;
  readonly #prefix: string;
  readonly #slots: Slot[] = [];
  readonly #registry: Registry;
  readonly #sessions: SessionStore;
  /** One ConnectionRequest SEQUENCE per URI for every worker: a recipient acts on each number once. */
  readonly #sequences = new SequenceCounter();
  /** The registration nonces' secret, shared by every worker, and the one record of nonces used. */
  readonly #nonceSecret = randomBytes(32);
  readonly #nonces = new NonceBook({ secret: this.#nonceSecret });
  /** What was scheduled per initiator and URI, for the whole broker: retries are planned from it. */
  readonly #history = new AttemptHistory();
  readonly #directory: AttemptDirectory;
  #state: 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' = 'idle';
  /** Restarts waiting for their delay (cleared by stop()). */
  readonly #restarts = new Set<NodeJS.Timeout>();

  constructor(options: BrokerWorkersOptions) {
    super();
    const { name, ...rest } = options;
    this.#options = { maxSessions: BROKER_DEFAULTS.maxSessions, startTimeoutMs: 20_000, anyPort: false, ...rest };
    this.#prefix = name ?? randomBytes(6).toString('hex');
    if (!Number.isSafeInteger(options.workers) || options.workers < 1) {
      throw new NattravError(ErrorCode.InvalidArgument, `workers must be a whole number from 1, got ${String(options.workers)}`);
    }
    this.#registry = new MemoryRegistry();
    this.#sessions = new SessionTable(this.#options.maxSessions);
    this.#directory = new AttemptDirectory((to, message) => this.#post(to, message));
  }

  /** The workers' process IDs, by slot (0 where a worker is being replaced). */
  get pids(): number[] {
    return this.#slots.map((s) => s.worker?.process.pid ?? 0);
  }

  /** Cross-worker traffic so far, summed over every worker (restarted ones included). */
  get routed(): RouteCounts {
    const sum: RouteCounts = { join: 0, probe: 0, relay: 0, ack: 0, control: 0 };
    for (const slot of this.#slots) for (const key of Object.keys(sum) as Array<keyof RouteCounts>) sum[key] += slot.counts[key] + slot.previous[key];
    return sum;
  }

  /** Forks every worker; resolves when all listen, rejects (after stopping the others) when one cannot. */
  async start(): Promise<void> {
    if (this.#state !== 'idle') throw new NattravError(ErrorCode.Closed, `cannot start: the workers are ${this.#state}`);
    this.#state = 'starting';
    // Structured clone keeps bytes as bytes; every worker re-runs this program, as the cluster module does.
    cluster.setupPrimary({ serialization: 'advanced' });
    for (let i = 1; i <= this.#options.workers; i++) {
      const zero: RouteCounts = { join: 0, probe: 0, relay: 0, ack: 0, control: 0 };
      this.#slots.push({ slot: i, worker: undefined, port: undefined, counts: zero, previous: { ...zero }, restartDelayMs: FIRST_RESTART_DELAY_MS });
    }
    for (let attempt = 1; ; attempt++) {
      try {
        await Promise.all(this.#slots.map((slot) => this.#fork(slot)));
        if (this.#state !== 'starting') throw new NattravError(ErrorCode.Closed, 'the workers were stopped while they were starting');
        this.#state = 'running';
        return;
      } catch (err) {
        await this.#endWorkers();
        // Port 0: the ports the workers' shared sockets got were half taken; all of them closed, new ones are tried (as one broker does).
        const again = this.#options.anyPort && attempt < ANY_PORT_TRIES && this.#state === 'starting' && isNattravError(err) && err.code === ErrorCode.AddressInUse;
        if (again) continue;
        await this.stop();
        throw err;
      }
    }
  }

  /** Stops every worker (SIGTERM, then SIGKILL after a grace period) and releases the shared state. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state === 'stopping' || this.#state === 'stopped') return;
    this.#state = 'stopping';
    await this.#endWorkers();
    this.#directory.close();
    await this.#registry.close();
    await this.#sessions.close();
    this.#state = 'stopped';
    this.emit('event', { type: 'workers-stopped', routed: this.routed } satisfies WorkersEvent);
  }

  /** Ends every worker process: SIGTERM, SIGKILL after {@link STOP_GRACE_MS}; resolves when all exited and their channels closed. */
  async #endWorkers(): Promise<void> {
    for (const restart of this.#restarts) clearTimeout(restart);
    this.#restarts.clear();
    const exits = this.#slots.map(async (slot) => {
      const worker = slot.worker;
      if (worker === undefined || worker.isDead()) return;
      // Its last messages (its final counts) are read before its channel closes: wait for both.
      const done = Promise.all([once(worker, 'exit'), worker.isConnected() ? once(worker, 'disconnect') : undefined]);
      worker.process.kill('SIGTERM');
      const timer = setTimeout(() => worker.process.kill('SIGKILL'), STOP_GRACE_MS);
      await done;
      clearTimeout(timer);
    });
    await Promise.all(exits);
  }

  /** Forks the process of `slot`; resolves when it listens, rejects with its start failure. */
  #fork(slot: Slot): Promise<void> {
    const worker = cluster.fork({ [WORKER_ENV]: `${this.#prefix}:${slot.slot}:${this.#options.workers}` });
    const startedAt = Date.now();
    slot.worker = worker;
    slot.previous = sumCounts(slot.previous, slot.counts);
    slot.counts = { join: 0, probe: 0, relay: 0, ack: 0, control: 0 };
    const port = new IpcPort(worker);
    slot.port = port;
    return new Promise((resolve, reject) => {
      let started = false;
      const timer = setTimeout(() => {
        if (!started) reject(new NattravError(ErrorCode.Timeout, `broker worker ${slot.slot} did not start listening within ${this.#options.startTimeoutMs} ms`));
      }, this.#options.startTimeoutMs);
      worker.on('message', (raw: unknown, handle: unknown) =>
        unbatch(raw, handle, (message, socket) => {
          if (message.nt === 'listening') {
            started = true;
            clearTimeout(timer);
            this.emit('event', { type: 'worker-started', slot: slot.slot, pid: worker.process.pid ?? 0 } satisfies WorkersEvent);
            resolve();
            return;
          }
          if (message.nt === 'failed') {
            clearTimeout(timer);
            const failure = message['failure'] as StartFailure;
            reject(new NattravError(failure.code, failure.message));
            return;
          }
          this.#receive(slot, message, socket);
        }),
      );
      worker.on('exit', (code: number | null, signal: string | null) => {
        clearTimeout(timer);
        if (slot.worker === worker) {
          slot.worker = undefined;
          slot.port = undefined;
        }
        this.#directory.forgetWorker(slot.slot);
        // The others end what the dead worker held for them (exchanges, relay sides).
        for (const other of this.#slots) if (other !== slot) other.port?.post({ nt: 'worker-gone', slot: slot.slot });
        if (!started) {
          reject(new NattravError(ErrorCode.Closed, `broker worker ${slot.slot} exited before it listened (code ${String(code)}, signal ${String(signal)})`));
          return;
        }
        if (this.#state !== 'running') return;
        const lived = Date.now() - startedAt;
        slot.restartDelayMs = lived >= HEALTHY_AFTER_MS ? FIRST_RESTART_DELAY_MS : Math.min(slot.restartDelayMs * 2, MAX_RESTART_DELAY_MS);
        const delay = lived >= HEALTHY_AFTER_MS ? FIRST_RESTART_DELAY_MS : slot.restartDelayMs;
        this.emit('event', { type: 'worker-exited', slot: slot.slot, pid: worker.process.pid ?? 0, code, signal, restartInMs: delay } satisfies WorkersEvent);
        const restart = setTimeout(() => {
          this.#restarts.delete(restart);
          if (this.#state === 'running') this.#fork(slot).catch((err: unknown) => this.emit('error', err));
        }, delay);
        this.#restarts.add(restart);
      });
    });
  }

  /** A message from the worker in `slot`. */
  #receive(slot: Slot, message: IpcMessage, handle: Socket | undefined): void {
    switch (message.nt) {
      case 'call':
        void serveStoreCall(message, {
          registry: this.#registry,
          sessions: this.#sessions,
          sequences: this.#sequences,
          nonces: { secret: () => this.#nonceSecret, use: (nonce, binding) => this.#nonces.use(nonce, binding) },
          history: this.#history,
        }).then((answer) => slot.port?.post(answer));
        return;
      case 'own':
        this.#directory.own(message['attempt'] as string, slot.slot);
        return;
      case 'route':
        this.#directory.route(message, slot.slot);
        return;
      case 'route-relay':
        if (handle !== undefined) this.#routeRelay(message, slot.slot, handle);
        return;
      case 'bus': {
        const body = message['body'] as IpcMessage;
        this.#post(message['to'] as number, { ...body, from: slot.slot });
        return;
      }
      case 'counts':
        slot.counts = message['counts'] as RouteCounts;
        return;
      default:
    }
  }

  /** A Relay connection moves to the worker that authorized its relay, or back to where it came from when none is known. */
  #routeRelay(message: IpcMessage, from: number, handle: Socket): void {
    const owner = this.#directory.owner(message['attempt'] as string) ?? from;
    const target = this.#slots[owner - 1]?.port ?? this.#slots[from - 1]?.port;
    if (target === undefined) {
      handle.destroy();
      return;
    }
    target.postHandle({ ...message, nt: 'relay', from }, handle);
  }

  #post(to: number, message: IpcMessage): void {
    this.#slots[to - 1]?.port?.post(message);
  }
}

function sumCounts(a: RouteCounts, b: RouteCounts): RouteCounts {
  return { join: a.join + b.join, probe: a.probe + b.probe, relay: a.relay + b.relay, ack: a.ack + b.ack, control: a.control + b.control };
}

/** Creates and starts the primary of `workers` broker processes (call in the primary process only). */
export async function startBrokerWorkers(options: BrokerWorkersOptions): Promise<BrokerWorkers> {
  const workers = new BrokerWorkers(options);
  await workers.start();
  return workers;
}
