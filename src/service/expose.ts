/**
 * `expose`: a local TCP service reachable by URI. A nattrav server (createServer)
 * registers the URI; every incoming peer connection gets its own connection to the
 * service, announced with the preamble's status frame (preamble.ts) and then spliced
 * (splice.ts): half-close and failures passed through, one log entry per connection.
 *
 * Without a URI, a self-certifying identity is made (`nattrav://k-...`), throwaway
 * unless the caller keeps it (pass it as `identity`; see `loadOrCreateIdentity`).
 *
 * Bounds on what peers can make us do: at most `maxConnections` spliced or connecting
 * at once and `maxConnectionsPerPeer` of them for one peer identity (more get status
 * `busy`), so one peer cannot hold them all; each service connect within
 * `targetConnectTimeoutMs`; with `idleTimeoutMs`, a connection that carries nothing for
 * that long is closed; at most `maxConnections` refusals wait for their peer to close,
 * each for `refusalLingerMs` at most (more are reset at once); attempts in progress are
 * bounded by createServer's own limits.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { abortError, throwIfAborted } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { ServerOptions } from '../peer/options.js';
import type { NattravSocket } from '../peer/info.js';
import { throwawayIdentity } from '../peer/secure.js';
import { createServer, type NattravServer, type ServerAddress } from '../peer/server.js';
import { checkUri, positiveInt } from '../peer/validate.js';
import type { Identity } from '../security/identity.js';
import { parseServiceAddress } from './address.js';
import type { ServiceEvent } from './events.js';
import { encodePreamble, type PreambleStatus } from './preamble.js';
import { splice, type SpliceResult } from './splice.js';
import { TargetError, connectTarget } from './target.js';

/** Options of {@link expose}: those of createServer (`uri` optional), plus the service's. */
export interface ExposeOptions extends Omit<ServerOptions, 'uri'> {
  /** The local TCP service: `"[HOST:]PORT"` (host 127.0.0.1 when left out) or `{ host, port }`. */
  target: string | HostPort;
  /**
   * The URI to register. @default `identity.uri` when an identity is given, else a new
   * throwaway self-certifying URI (`nattrav://k-...`; read it from {@link Exposer.uri})
   */
  uri?: string;
  /** Peer connections spliced or connecting at once; one more gets status `busy` at once. @default 64 */
  maxConnections?: number;
  /**
   * Of those, connections of one peer (its authenticated URI; without TLS, its address)
   * at once; one more gets status `busy`. @default half of maxConnections, rounded up (32)
   */
  maxConnectionsPerPeer?: number;
  /** Close a connection over which no byte went either way for this long, in ms (0: never). @default 0 */
  idleTimeoutMs?: number;
  /** Limit on each connect to the service, in ms. @default 10000 */
  targetConnectTimeoutMs?: number;
  /** After close(), how long open connections get to end before they are destroyed, in ms. @default 1000 */
  closeGraceMs?: number;
  /** Aborts start(): the registration is given up and start() rejects with ERR_ABORTED. */
  signal?: AbortSignal;
}

/** Defaults of {@link ExposeOptions}, each with its reason. */
export const EXPOSE_DEFAULTS = {
  /** Twice the 32 attempts a server runs at once (PEER_DEFAULTS.maxConcurrentAttempts): room for long-lived connections. */
  maxConnections: 64,
  /** A local service answers in microseconds; 10 s covers one that is starting or swapping. */
  targetConnectTimeoutMs: 10_000,
  /** What `nattrav listen` gives the other side after a stop signal (STOP_GRACE_MS). */
  closeGraceMs: 1_000,
  /** A forwarder closes as soon as it has read a refusal; 5 s bounds one that does not. */
  refusalLingerMs: 5_000,
} as const;

/** Events re-emitted from the server underneath, with the server's arguments (see createServer). */
const SERVER_EVENTS = ['registered', 'registrationLost', 'registrationRetry', 'unregistered', 'connectionRejected', 'attemptFailed', 'attemptRefused', 'portmap', 'socks5Bind', 'keepalive', 'keepaliveFailed', 'moved', 'takenOver'] as const;

/** One connection in progress: how to stop it. */
interface Active {
  stop(graceMs: number): void;
  readonly done: Promise<void>;
}

/**
 * An exposed service. Events: `'event'` ({@link ServiceEvent}: `accepted` and `closed` per
 * peer connection), and from the server underneath, with its arguments (see createServer):
 * `'registered'` (kind `first`, `refresh` or `again`), `'registrationLost'`,
 * `'registrationRetry'`, `'unregistered'`, `'portmap'` (our gateway's port mapping), `'socks5Bind'` (our BIND at the SOCKS5 proxy), `'connectionRejected'` (an initiator not in
 * `allow`), `'attemptFailed'`, `'attemptRefused'`, `'keepalive'` and `'keepaliveFailed'` (adaptive keepalive), `'moved'` (the host moved and registered from
 * there), `'takenOver'` (another process with our key took the URI: the server underneath closed). Unless `once`, start() waits through a
 * broker that is away (reporting each try with `'registrationRetry'`), and a registration
 * lost later is made again: the exposer serves until closed.
 */
export class Exposer extends EventEmitter {
  readonly #options: ExposeOptions;
  readonly #target: HostPort;
  readonly #maxConnections: number;
  readonly #maxPerPeer: number;
  readonly #idleTimeoutMs: number;
  readonly #targetConnectTimeoutMs: number;
  readonly #closeGraceMs: number;
  readonly #active = new Map<number, Active>();
  /** Open connections per peer name (only names with at least one). */
  readonly #perPeer = new Map<string, number>();
  /** Refusals waiting for their peer to close (bounded by maxConnections). */
  readonly #refusing = new Set<Promise<void>>();
  readonly #stopping = new AbortController();
  #uri: string | undefined;
  #server: NattravServer | undefined;
  #lastId = 0;
  #state: 'idle' | 'starting' | 'open' | 'closed' = 'idle';
  #closed: Promise<void> | undefined;

  constructor(options: ExposeOptions) {
    super();
    if (options === null || typeof options !== 'object') throw new NattravError(ErrorCode.InvalidArgument, 'expose: expected options { broker, target }');
    this.#target = parseServiceAddress(options.target, 'target');
    this.#maxConnections = positiveInt(options.maxConnections, EXPOSE_DEFAULTS.maxConnections, 'maxConnections');
    this.#maxPerPeer = positiveInt(options.maxConnectionsPerPeer, Math.ceil(this.#maxConnections / 2), 'maxConnectionsPerPeer');
    this.#idleTimeoutMs = options.idleTimeoutMs === 0 ? 0 : positiveInt(options.idleTimeoutMs, 0, 'idleTimeoutMs');
    this.#targetConnectTimeoutMs = positiveInt(options.targetConnectTimeoutMs, EXPOSE_DEFAULTS.targetConnectTimeoutMs, 'targetConnectTimeoutMs');
    this.#closeGraceMs = positiveInt(options.closeGraceMs, EXPOSE_DEFAULTS.closeGraceMs, 'closeGraceMs');
    if (options.uri !== undefined) checkUri(options.uri);
    if (options.uri !== undefined && options.identity !== undefined && options.identity.uri !== options.uri) {
      throw new NattravError(ErrorCode.InvalidArgument, `uri ${options.uri} and identity (for ${options.identity.uri}) name different URIs; pass one of them, or an identity for that URI`);
    }
    this.#uri = options.uri ?? options.identity?.uri;
    this.#options = { ...options };
  }

  /** The URI peers connect to (known once start() has made the identity, when none was given). */
  get uri(): string | undefined {
    return this.#uri;
  }

  /** The service connections go to. */
  get target(): HostPort {
    return this.#target;
  }

  /** Peer connections spliced or connecting now. */
  get connections(): number {
    return this.#active.size;
  }

  /** The registration (URI, public endpoint, key fingerprint), or null before start() resolved. */
  address(): ServerAddress | null {
    return this.#server?.address() ?? null;
  }

  /**
   * Makes the identity when needed, then registers; resolves with the registration.
   * Rejects like createServer's 'error' (with `once`: the first registration failed; or our
   * own configuration is wrong), or with ERR_ABORTED when `signal` aborts.
   */
  async start(): Promise<ServerAddress> {
    if (this.#state !== 'idle') throw new NattravError(ErrorCode.Closed, `start: the exposer is already ${this.#state}`);
    this.#state = 'starting';
    const signal = this.#options.signal;
    try {
      throwIfAborted(signal);
      const identity: Identity | undefined = this.#options.identity ?? (this.#uri === undefined ? await throwawayIdentity() : undefined);
      this.#uri ??= identity?.uri;
      if (this.#state !== 'starting') throw new NattravError(ErrorCode.Closed, 'the exposer was closed while it was starting');
      const { target: _target, maxConnections: _max, maxConnectionsPerPeer: _perPeer, idleTimeoutMs: _idle, targetConnectTimeoutMs: _connect, closeGraceMs: _grace, signal: _signal, ...serverOptions } = this.#options;
      const server = createServer({ ...serverOptions, uri: this.#uri as string, ...(identity === undefined ? {} : { identity }) }, (peer) => this.#accept(peer));
      this.#server = server;
      for (const name of SERVER_EVENTS) server.on(name, (...args: unknown[]) => this.emit(name, ...args));
      await listen(server, signal);
      if (this.#state !== 'starting') throw new NattravError(ErrorCode.Closed, 'the exposer was closed while it was starting');
      this.#state = 'open';
      return server.address() as ServerAddress;
    } catch (err) {
      if (this.#state === 'starting') this.#state = 'idle';
      this.#server?.close();
      throw err;
    }
  }

  /**
   * Withdraws the registration, stops connects in progress, ends open connections (FIN
   * both ways) and destroys what is left after `closeGraceMs` (refusals still waiting for
   * their peer at once). Resolves once every connection has closed and its `closed` event
   * was emitted. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closed === undefined) {
      this.#state = 'closed';
      this.#stopping.abort(new NattravError(ErrorCode.Closed, 'the exposer was closed'));
      const withdrawn = new Promise<void>((resolve) => (this.#server === undefined ? resolve() : this.#server.close(() => resolve())));
      const active = [...this.#active.values()];
      for (const connection of active) connection.stop(this.#closeGraceMs);
      const refusing = [...this.#refusing];
      this.#closed = Promise.all([withdrawn, ...active.map((a) => a.done), ...refusing]).then(() => undefined);
    }
    return this.#closed;
  }

  /** Closes and waits. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #accept(peer: NattravSocket): void {
    // Failures are in peer.nattrav.closed and reach the log through the splice.
    peer.on('error', () => undefined);
    if (this.#state === 'closed') {
      peer.destroy();
      return;
    }
    const id = ++this.#lastId;
    const started = performance.now();
    const info = peer.nattrav;
    const from = info.peerUri ?? formatEndpoint(info.remote);
    const base = { id, peer: from, path: info.path };
    this.#event({ type: 'accepted', id, from, path: info.path });
    const finish = (result: SpliceResult): void => {
      this.#event({ type: 'closed', ...base, ...result, durationMs: Math.round(performance.now() - started) });
    };
    // Connections of one peer: its proven identity, or without TLS its address (each connection has its own port).
    const peerKey = info.peerUri ?? info.remote.address;
    const ofPeer = this.#perPeer.get(peerKey) ?? 0;
    const busy =
      this.#active.size >= this.#maxConnections
        ? `the exposer is busy: ${this.#active.size} connections open, its limit (maxConnections)`
        : ofPeer >= this.#maxPerPeer
          ? `the exposer is busy: ${ofPeer} connections of ${peerKey} open, its limit per peer (maxConnectionsPerPeer)`
          : undefined;
    if (busy !== undefined) {
      this.#refuseBusy(peer, busy, () => finish({ reason: 'busy', message: busy, bytesIn: 0, bytesOut: 0 }));
      return;
    }
    this.#perPeer.set(peerKey, ofPeer + 1);
    let stop: (graceMs: number) => void = () => peer.destroy();
    const done = this.#serve(peer, (s) => (stop = s)).then((result) => {
      this.#active.delete(id);
      const left = (this.#perPeer.get(peerKey) ?? 1) - 1;
      if (left > 0) this.#perPeer.set(peerKey, left);
      else this.#perPeer.delete(peerKey);
      finish(result);
    });
    this.#active.set(id, { stop: (graceMs) => stop(graceMs), done });
  }

  /**
   * Tells a peer over a limit that we are busy. At most maxConnections such refusals wait
   * for their peer's close at once: beyond that (a flood of connections) the peer is reset
   * without a word, so refusals cannot hold more sockets than the connections themselves.
   */
  #refuseBusy(peer: NattravSocket, reason: string, finish: () => void): void {
    if (this.#refusing.size >= this.#maxConnections) {
      peer.destroy();
      void peer.nattrav.closed.then(finish);
      return;
    }
    const refusal = refuse(peer, 'busy', reason, this.#stopping.signal).then(finish);
    this.#refusing.add(refusal);
    void refusal.then(() => this.#refusing.delete(refusal));
  }

  /** Connects to the service, sends the status frame, and splices; `onSplice` learns how to stop the splice. */
  async #serve(peer: NattravSocket, onSplice: (stop: (graceMs: number) => void) => void): Promise<SpliceResult> {
    let local: Socket;
    try {
      local = await connectTarget(this.#target, this.#targetConnectTimeoutMs, this.#stopping.signal);
    } catch (err) {
      if (!(err instanceof TargetError)) {
        peer.destroy();
        await peer.nattrav.closed;
        return { reason: 'stopped', message: 'closed on this side before the service answered', bytesIn: 0, bytesOut: 0 };
      }
      await refuse(peer, 'refused', err.peerReason);
      return { reason: 'refused', side: 'local', message: err.message, bytesIn: 0, bytesOut: 0 };
    }
    peer.write(encodePreamble({ status: 'ok', reason: '' }));
    const spliced = splice(peer, local, 'the service', this.#idleTimeoutMs);
    onSplice(spliced.stop);
    return spliced.done;
  }

  #event(event: ServiceEvent): void {
    this.emit('event', event);
  }
}

/**
 * Sends a refusal frame and our FIN; resolves once the forwarder has closed (or after
 * refusalLingerMs, or at once when `stopping` aborts: the exposer is closing).
 */
async function refuse(peer: NattravSocket, status: Exclude<PreambleStatus, 'ok'>, reason: string, stopping?: AbortSignal): Promise<void> {
  // Read (and drop) whatever the peer sends, so its FIN is seen and the socket closes.
  peer.resume();
  peer.end(encodePreamble({ status, reason }));
  const drop = (): void => {
    peer.destroy();
  };
  const linger = setTimeout(drop, EXPOSE_DEFAULTS.refusalLingerMs).unref();
  stopping?.addEventListener('abort', drop, { once: true });
  if (stopping?.aborted === true) drop();
  await peer.nattrav.closed;
  clearTimeout(linger);
  stopping?.removeEventListener('abort', drop);
}

/**
 * Registers `server`; rejects with its 'error', with ERR_CLOSED when it is closed first
 * (Exposer.close() during start), or with ERR_ABORTED when `signal` aborts first.
 */
function listen(server: NattravServer, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      signal?.removeEventListener('abort', onAbort);
      server.off('listening', onListening);
      server.off('error', onError);
      server.off('close', onClose);
    };
    const onClose = (): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Closed, 'the exposer was closed while it was starting'));
    };
    const onListening = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: unknown): void => {
      cleanup();
      reject(err);
    };
    const onAbort = (): void => {
      cleanup();
      server.close(() => reject(abortError(signal as AbortSignal)));
    };
    if (signal?.aborted === true) {
      onAbort();
      return;
    }
    server.once('listening', onListening);
    server.once('error', onError);
    server.once('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
    server.listen();
  });
}

/** Exposes `options.target` under a URI; resolves once registered (see {@link Exposer}). */
export async function expose(options: ExposeOptions): Promise<Exposer> {
  const exposer = new Exposer(options);
  await exposer.start();
  return exposer;
}
