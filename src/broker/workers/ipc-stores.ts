/**
 * The registry and session store of `nattrav broker --workers N` without Redis: the
 * primary holds the one MemoryRegistry and SessionTable, and every worker reaches them
 * through these IPC implementations of the Registry and SessionStore interfaces. Calls
 * are pipelined (many in flight, answered by ID) and batched per turn of the event loop
 * (ipc.ts). The primary runs each call on its store in arrival order, so `claim` and
 * `advance` stay atomic across workers exactly as in one process.
 */
import { ErrorCode, NattravError } from '../../errors.js';
import type { Registration, Registry } from '../registry/registry.js';
import { NonceBook } from '../../security/proof.js';
import type { AttemptHistory } from '../attempt-history.js';
import type { RegisterNonces } from '../register.js';
import type { SequenceCounter } from '../sequences.js';
import type { SequenceVerdict, Session, SessionEndpoint, SessionStore } from '../sessions.js';
import { asBuffer, type IpcMessage, type IpcPort } from './ipc.js';

/**
 * The stores the primary serves: registrations, sessions, the ConnectionRequest SEQUENCE
 * counter (sequences.ts), the registration nonces (the secret, and the used ones) and
 * what was scheduled per initiator and URI (attempt-history.ts).
 */
export type StoreName = 'registry' | 'sessions' | 'sequences' | 'nonces' | 'history';

/** The operations a worker may call, per store (nothing else is ever run). */
const OPERATIONS: Readonly<Record<StoreName, readonly string[]>> = {
  registry: ['put', 'claim', 'get', 'delete', 'deleteIf', 'replaceIf', 'size'],
  sessions: ['open', 'find', 'byUri', 'advance', 'nextRequestSequence', 'renew', 'end', 'drop'],
  sequences: ['next'],
  nonces: ['secret', 'use'],
  history: ['recent', 'record'],
};

/** The worker's side: sends calls, settles them when the primary answers. */
export class StoreClient {
  readonly #port: IpcPort;
  readonly #pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void }>();
  #next = 1;
  #closed = false;

  constructor(port: IpcPort) {
    this.#port = port;
  }

  /** Calls `op` on the primary's `store`. */
  call(store: StoreName, op: string, args: readonly unknown[]): Promise<unknown> {
    if (this.#closed) return Promise.reject(unavailable());
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#port.post({ nt: 'call', id, store, op, args });
    });
  }

  /** The primary's answer to a call (`nt: 'ret'`). */
  settle(message: IpcMessage): void {
    const id = message['id'];
    if (typeof id !== 'number') return;
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    if (message['ok'] === true) pending.resolve(message['value']);
    else pending.reject(new NattravError(ErrorCode.RegistryUnavailable, `the broker's primary process failed a ${String(message['op'])}: ${String(message['error'])}`));
  }

  /** The primary is gone: every call in flight fails, and later ones at once. */
  close(): void {
    this.#closed = true;
    for (const pending of this.#pending.values()) pending.reject(unavailable());
    this.#pending.clear();
  }
}

function unavailable(): NattravError {
  return new NattravError(ErrorCode.RegistryUnavailable, "the broker's primary process (which holds the registry) is gone");
}

/** The primary's registry as a worker sees it. */
export class IpcRegistry implements Registry {
  readonly #client: StoreClient;

  constructor(client: StoreClient) {
    this.#client = client;
  }

  async put(registration: Registration): Promise<void> {
    await this.#client.call('registry', 'put', [registration]);
  }

  async claim(registration: Registration & { readonly keyFingerprint: string }): Promise<string | undefined> {
    return (await this.#client.call('registry', 'claim', [registration])) as string | undefined;
  }

  async get(uri: string): Promise<Registration | undefined> {
    return (await this.#client.call('registry', 'get', [uri])) as Registration | undefined;
  }

  async delete(uri: string): Promise<boolean> {
    return (await this.#client.call('registry', 'delete', [uri])) as boolean;
  }

  async deleteIf(expected: Registration): Promise<boolean> {
    return (await this.#client.call('registry', 'deleteIf', [expected])) as boolean;
  }

  async replaceIf(expected: Registration, next: Registration): Promise<boolean> {
    return (await this.#client.call('registry', 'replaceIf', [expected, next])) as boolean;
  }

  async size(): Promise<number> {
    return (await this.#client.call('registry', 'size', [])) as number;
  }

  /** The primary owns the registry: nothing to release here. */
  async close(): Promise<void> {}
}

/**
 * A worker's registry (the primary's over IPC, or Redis): a registration the worker
 * stores names the worker (`broker`: its ID) unless it already names a broker, so a
 * connection request for a recipient whose TCP control connection this worker holds is
 * sent here by whichever worker runs the attempt.
 */
export class WorkerRegistry implements Registry {
  readonly #inner: Registry;
  readonly #brokerId: string;

  constructor(inner: Registry, brokerId: string) {
    this.#inner = inner;
    this.#brokerId = brokerId;
  }

  put(registration: Registration): Promise<void> {
    return this.#inner.put(this.#stamp(registration));
  }

  claim(registration: Registration & { readonly keyFingerprint: string }): Promise<string | undefined> {
    return this.#inner.claim(this.#stamp(registration));
  }

  get(uri: string): Promise<Registration | undefined> {
    return this.#inner.get(uri);
  }

  delete(uri: string): Promise<boolean> {
    return this.#inner.delete(uri);
  }

  /** `expected` is what get() read, stamp included. */
  deleteIf(expected: Registration): Promise<boolean> {
    return this.#inner.deleteIf(expected);
  }

  /** `expected` is what get() read, stamp included; `next` is stamped as put() does. */
  replaceIf(expected: Registration, next: Registration): Promise<boolean> {
    return this.#inner.replaceIf(expected, this.#stamp(next));
  }

  size(): Promise<number> {
    return this.#inner.size();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #stamp<T extends Registration>(registration: T): T {
    return registration.broker === undefined ? { ...registration, broker: this.#brokerId } : registration;
  }
}

/** The primary's session table as a worker sees it (session keys cross as bytes and come back as Buffers). */
export class IpcSessions implements SessionStore {
  readonly #client: StoreClient;

  constructor(client: StoreClient) {
    this.#client = client;
  }

  async open(uri: string, key: Buffer, keyFingerprint: string, expiresAt: number, endpoint: SessionEndpoint): Promise<Session | undefined> {
    return reviveSession(await this.#client.call('sessions', 'open', [uri, key, keyFingerprint, expiresAt, endpoint]));
  }

  async find(uri: string, id: string): Promise<Session | undefined> {
    return reviveSession(await this.#client.call('sessions', 'find', [uri, id]));
  }

  async byUri(uri: string): Promise<Session | undefined> {
    return reviveSession(await this.#client.call('sessions', 'byUri', [uri]));
  }

  async advance(session: Session, sequence: number): Promise<SequenceVerdict> {
    return (await this.#client.call('sessions', 'advance', [session, sequence])) as SequenceVerdict;
  }

  async nextRequestSequence(session: Session): Promise<number | undefined> {
    return (await this.#client.call('sessions', 'nextRequestSequence', [session])) as number | undefined;
  }

  async renew(session: Session, endpoint: SessionEndpoint, expiresAt: number): Promise<boolean> {
    return (await this.#client.call('sessions', 'renew', [session, endpoint, expiresAt])) as boolean;
  }

  async end(session: Session): Promise<boolean> {
    return (await this.#client.call('sessions', 'end', [session])) as boolean;
  }

  async drop(uri: string): Promise<void> {
    await this.#client.call('sessions', 'drop', [uri]);
  }

  /** The primary owns the sessions: nothing to release here. */
  async close(): Promise<void> {}
}

/** A Session that crossed the channel (its key a Uint8Array) with its key a Buffer again. */
function reviveSession(value: unknown): Session | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const session = value as Session;
  return { ...session, key: asBuffer(session.key) };
}

/** Session keys and session objects in a call's arguments, with their bytes as Buffers again. */
function reviveArgs(args: readonly unknown[]): unknown[] {
  return args.map((arg) => {
    if (arg instanceof Uint8Array) return asBuffer(arg);
    if (typeof arg === 'object' && arg !== null && 'key' in arg && (arg as { key: unknown }).key instanceof Uint8Array) return reviveSession(arg);
    return arg;
  });
}

/** What the primary serves its workers. */
export interface PrimaryStores {
  readonly registry: Registry;
  readonly sessions: SessionStore;
  readonly sequences: SequenceCounter;
  /** The nonce secret (`secret()`) and the one record of used nonces (`use`). */
  readonly nonces: { secret(): Uint8Array; use: NonceBook['use'] };
  readonly history: AttemptHistory;
}

/**
 * A worker's registration nonces: minted and checked here under the primary's secret (so
 * any worker accepts a nonce another minted), recorded as used in the primary (so a
 * proof is taken once by the whole broker, as by one process).
 */
export class WorkerNonces implements RegisterNonces {
  readonly #local: NonceBook;
  readonly #client: StoreClient;

  constructor(secret: Uint8Array, client: StoreClient) {
    this.#local = new NonceBook({ secret });
    this.#client = client;
  }

  /** Nonces this worker saw used: none (the primary records them). */
  get used(): number {
    return 0;
  }

  mint(...args: Parameters<NonceBook['mint']>): Buffer {
    return this.#local.mint(...args);
  }

  check(...args: Parameters<NonceBook['check']>): ReturnType<NonceBook['check']> {
    return this.#local.check(...args);
  }

  mintRoutability(...args: Parameters<NonceBook['mintRoutability']>): Buffer {
    return this.#local.mintRoutability(...args);
  }

  checkRoutability(...args: Parameters<NonceBook['checkRoutability']>): boolean {
    return this.#local.checkRoutability(...args);
  }

  async use(...args: Parameters<NonceBook['use']>): Promise<ReturnType<NonceBook['use']>> {
    return (await this.#client.call('nonces', 'use', args)) as ReturnType<NonceBook['use']>;
  }
}

/** Asks the primary for the broker's nonce secret (once, before the worker's broker is made). */
export async function nonceSecret(client: StoreClient): Promise<Uint8Array> {
  return asBuffer(await client.call('nonces', 'secret', []));
}

/**
 * The primary's side: runs one worker's call (`nt: 'call'`) on `registry` or `sessions`
 * and resolves with the answer to post back (`nt: 'ret'`). Never rejects.
 */
export async function serveStoreCall(message: IpcMessage, stores: PrimaryStores): Promise<IpcMessage> {
  const { id, store, op, args } = message as IpcMessage & { id: unknown; store: unknown; op: unknown; args: unknown };
  try {
    if (typeof store !== 'string' || !(store in OPERATIONS) || typeof op !== 'string' || !OPERATIONS[store as StoreName].includes(op) || !Array.isArray(args)) {
      throw new Error(`no such store operation: ${String(store)}.${String(op)}`);
    }
    const target = stores[store as StoreName] as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const method = target[op] as (...a: unknown[]) => Promise<unknown>;
    const value = await method.apply(target, reviveArgs(args));
    return { nt: 'ret', id, ok: true, value };
  } catch (err) {
    return { nt: 'ret', id, ok: false, op, error: err instanceof Error ? err.message : String(err) };
  }
}
