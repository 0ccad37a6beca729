/**
 * `forward`: a local TCP port whose every connection is carried over its own nattrav
 * connection to a service made reachable with `expose`. Per client: connect() to the
 * URI, read the exposer's status frame (preamble.ts), then splice (splice.ts).
 *
 * The client is accepted paused (`pauseOnConnect`): nothing of it is read until the
 * exposer said ok, so what waits is bounded by the kernel's receive buffer. When the
 * connection cannot be carried (the peer connection failed, the exposer refused, a limit
 * was reached) the client's connection is reset (RST), not ended (FIN): a FIN would tell
 * the client a complete, empty answer had arrived (curl: "Empty reply from server"),
 * while a reset is an error to every client, as a refused connect would have been.
 */
import { EventEmitter } from 'node:events';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { throwIfAborted } from '../common/signal.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { connect } from '../peer/connect.js';
import { resetConnection, type ConnectionPath, type NattravSocket } from '../peer/info.js';
import type { ConnectOptions, PeerTls } from '../peer/options.js';
import { throwawayIdentity } from '../peer/secure.js';
import { checkUri, positiveInt } from '../peer/validate.js';
import { parseServiceAddress } from './address.js';
import type { ServiceEvent } from './events.js';
import { PREAMBLE_TIMEOUT_MS, readPreamble } from './preamble.js';
import { splice, type SpliceResult } from './splice.js';

/** Options of {@link forward}: those of connect() for each peer connection, plus where to listen. */
export interface ForwardOptions extends Omit<ConnectOptions, 'signal' | 'onTrace'> {
  /** Where to accept local clients: `"[HOST:]PORT"` (host 127.0.0.1 when left out; port 0: any free port) or `{ host, port }`. */
  listen: string | HostPort;
  /** Clients carried or connecting at once; one more is reset at once. @default 32 */
  maxConnections?: number;
  /** Close a connection over which no byte went either way for this long, in ms (0: never). @default 0 */
  idleTimeoutMs?: number;
  /** Limit on waiting for the exposer's status frame, in ms. @default 15000 */
  preambleTimeoutMs?: number;
  /** After close(), how long open connections get to end before they are destroyed, in ms. @default 1000 */
  closeGraceMs?: number;
  /** Aborts start(). */
  signal?: AbortSignal;
}

/** Defaults of {@link ForwardOptions}, each with its reason. */
export const FORWARD_DEFAULTS = {
  /** All of a forwarder's connections are one peer to the exposer, which by default carries 32 per peer (half its 64). */
  maxConnections: 32,
  /** See PREAMBLE_TIMEOUT_MS. */
  preambleTimeoutMs: PREAMBLE_TIMEOUT_MS,
  /** As expose. */
  closeGraceMs: 1_000,
} as const;

/** One client in progress: how to stop it. */
interface Active {
  stop(graceMs: number): void;
  readonly done: Promise<void>;
}

/** How one client's connection went, for its `closed` event. */
type Served = SpliceResult & { readonly peer?: string; readonly path?: ConnectionPath };

/** Resets a local TCP socket unless it is gone already. */
function resetSocket(socket: Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}

/**
 * A local port forwarded to an exposed service. Events: `'event'` ({@link ServiceEvent}:
 * `accepted`, `connected` and `closed` per client).
 */
export class Forwarder extends EventEmitter {
  readonly #options: ForwardOptions;
  readonly #listen: HostPort;
  readonly #uri: string;
  readonly #maxConnections: number;
  readonly #idleTimeoutMs: number;
  readonly #preambleTimeoutMs: number;
  readonly #closeGraceMs: number;
  readonly #active = new Map<number, Active>();
  #tls: false | PeerTls = false;
  #server: Server | undefined;
  #lastId = 0;
  #state: 'idle' | 'starting' | 'open' | 'closed' = 'idle';
  #closed: Promise<void> | undefined;

  constructor(options: ForwardOptions) {
    super();
    if (options === null || typeof options !== 'object') throw new NattravError(ErrorCode.InvalidArgument, 'forward: expected options { broker, uri, listen }');
    this.#uri = checkUri(options.uri);
    this.#listen = parseServiceAddress(options.listen, 'listen', true);
    this.#maxConnections = positiveInt(options.maxConnections, FORWARD_DEFAULTS.maxConnections, 'maxConnections');
    this.#idleTimeoutMs = options.idleTimeoutMs === 0 ? 0 : positiveInt(options.idleTimeoutMs, 0, 'idleTimeoutMs');
    this.#preambleTimeoutMs = positiveInt(options.preambleTimeoutMs, FORWARD_DEFAULTS.preambleTimeoutMs, 'preambleTimeoutMs');
    this.#closeGraceMs = positiveInt(options.closeGraceMs, FORWARD_DEFAULTS.closeGraceMs, 'closeGraceMs');
    this.#options = { ...options };
  }

  /** `idle`, `starting`, `open` (accepting clients) or `closed`. */
  get state(): 'idle' | 'starting' | 'open' | 'closed' {
    return this.#state;
  }

  /** The URI connections go to. */
  get uri(): string {
    return this.#uri;
  }

  /** Clients carried or connecting now. */
  get connections(): number {
    return this.#active.size;
  }

  /** Where clients are accepted (the real port when 0 was asked for), or null before start(). */
  address(): HostPort | null {
    const address = this.#server?.address();
    return address === undefined || address === null || typeof address === 'string' ? null : { host: address.address, port: address.port };
  }

  /**
   * Makes one throwaway identity for every peer connection (when TLS is on and none was
   * given), then listens. Rejects with ERR_ADDRESS_IN_USE (the port is taken),
   * ERR_INVALID_ARGUMENT (not an address of this host) or ERR_ABORTED.
   */
  async start(): Promise<HostPort> {
    if (this.#state !== 'idle') throw new NattravError(ErrorCode.Closed, `start: the forwarder is already ${this.#state}`);
    this.#state = 'starting';
    const signal = this.#options.signal;
    try {
      throwIfAborted(signal);
      const tls = this.#options.tls ?? true;
      this.#tls = tls === false ? false : { ca: [], ...(tls === true ? {} : tls), identity: (tls === true ? undefined : tls.identity) ?? (await throwawayIdentity()) };
      throwIfAborted(signal);
      const server = createTcpServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => this.#accept(client));
      this.#server = server;
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, this.#listen)));
        server.listen({ host: this.#listen.host, port: this.#listen.port }, () => resolve());
      });
      if (this.#state !== 'starting') throw new NattravError(ErrorCode.Closed, 'the forwarder was closed while it was starting');
      this.#state = 'open';
      return this.address() as HostPort;
    } catch (err) {
      if (this.#state === 'starting') this.#state = 'idle';
      this.#server?.close();
      throw err;
    }
  }

  /**
   * Stops accepting, stops connects in progress (their clients are reset), ends open
   * connections (FIN both ways) and destroys what is left after `closeGraceMs`. Resolves
   * once every connection has closed and its `closed` event was emitted. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closed === undefined) {
      this.#state = 'closed';
      const stopped = new Promise<void>((resolve) => (this.#server === undefined ? resolve() : this.#server.close(() => resolve())));
      const active = [...this.#active.values()];
      for (const connection of active) connection.stop(this.#closeGraceMs);
      this.#closed = Promise.all([stopped, ...active.map((a) => a.done)]).then(() => undefined);
    }
    return this.#closed;
  }

  /** Closes and waits. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #accept(client: Socket): void {
    // Failures reach the log through the splice.
    client.on('error', () => undefined);
    if (this.#state !== 'open') {
      resetSocket(client);
      return;
    }
    const id = ++this.#lastId;
    const started = performance.now();
    this.#event({ type: 'accepted', id, from: formatEndpoint({ address: client.remoteAddress ?? '?', port: client.remotePort ?? 0 }) });
    const finish = (served: Served): void => {
      this.#active.delete(id);
      const { peer, ...result } = served;
      this.#event({ type: 'closed', id, ...result, peer: peer ?? this.#uri, durationMs: Math.round(performance.now() - started) });
    };
    if (this.#active.size >= this.#maxConnections) {
      resetSocket(client);
      finish({ reason: 'busy', side: 'local', message: `${this.#active.size} clients are carried already, the limit (maxConnections); the client was reset`, bytesIn: 0, bytesOut: 0 });
      return;
    }
    const controller = new AbortController();
    // Until the splice runs, stopping aborts the connect or the wait for the status frame.
    let stop: (graceMs: number) => void = () => controller.abort(new NattravError(ErrorCode.Closed, 'the forwarder was closed'));
    const done = this.#serve(id, client, controller.signal, started, (s) => (stop = s)).then(finish);
    this.#active.set(id, { stop: (graceMs) => stop(graceMs), done });
  }

  /** Connects to the URI, reads the status frame, and splices; `onSplice` learns how to stop the splice. */
  async #serve(id: number, client: Socket, signal: AbortSignal, started: number, onSplice: (stop: (graceMs: number) => void) => void): Promise<Served> {
    const none = { bytesIn: 0, bytesOut: 0 };
    let peer: NattravSocket;
    try {
      const { listen: _listen, maxConnections: _max, idleTimeoutMs: _idle, preambleTimeoutMs: _preamble, closeGraceMs: _grace, signal: _signal, ...connectOptions } = this.#options;
      peer = await connect({ ...connectOptions, tls: this.#tls, signal });
    } catch (err) {
      resetSocket(client);
      if (signal.aborted) return { reason: 'stopped', message: 'closed on this side while connecting', ...none };
      return { reason: 'failed', side: 'peer', message: `could not connect to ${this.#uri}: ${errorMessage(err)}`, ...codeOf(err), ...none };
    }
    const peerName = peer.nattrav.peerUri ?? this.#uri;
    const about = { peer: peerName, path: peer.nattrav.path };
    peer.on('error', () => undefined);
    try {
      const preamble = await readPreamble(peer, { timeoutMs: this.#preambleTimeoutMs, signal });
      if (preamble.status !== 'ok') {
        peer.destroy();
        resetSocket(client);
        const reason = preamble.status === 'error' ? 'error' : preamble.status;
        return { reason, side: 'peer', message: `the exposer did not carry the connection: ${preamble.reason}`, ...about, ...none };
      }
    } catch (err) {
      resetConnection(peer);
      resetSocket(client);
      if (signal.aborted) return { reason: 'stopped', message: 'closed on this side while waiting for the exposer', ...about, ...none };
      return { reason: 'error', side: 'peer', message: errorMessage(err), ...codeOf(err), ...about, ...none };
    }
    this.#event({ type: 'connected', id, path: peer.nattrav.path, peer: peerName, setupMs: Math.round(performance.now() - started) });
    const spliced = splice(peer, client, 'the local client', this.#idleTimeoutMs);
    onSplice(spliced.stop);
    if (this.#state === 'closed') spliced.stop(this.#closeGraceMs);
    return { ...(await spliced.done), ...about };
  }

  #event(event: ServiceEvent): void {
    this.emit('event', event);
  }
}

/** `{ code }` of a NattravError, for the log entry. */
function codeOf(err: unknown): { code?: string } {
  return isNattravError(err) ? { code: err.code } : {};
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The error for a failed listen, naming the address: ERR_ADDRESS_IN_USE for a port in use, else ERR_INVALID_ARGUMENT. */
function listenError(err: NodeJS.ErrnoException, where: HostPort): NattravError {
  const endpoint = formatEndpoint({ address: where.host, port: where.port });
  const options = { cause: err, address: where.host, port: where.port };
  if (err.code === 'EADDRINUSE') return new NattravError(ErrorCode.AddressInUse, `listen: cannot listen on ${endpoint}: port ${where.port} is in use`, options);
  const why = err.code === 'EADDRNOTAVAIL' ? 'not an address of this host' : err.code === 'EACCES' ? 'permission denied' : err.code === 'ENOTFOUND' ? 'no such host' : err.message;
  return new NattravError(ErrorCode.InvalidArgument, `listen: cannot listen on ${endpoint}: ${why} (${err.code ?? 'error'})`, options);
}

/** Listens on `options.listen` and forwards each client to `options.uri`; resolves once listening (see {@link Forwarder}). */
export async function forward(options: ForwardOptions): Promise<Forwarder> {
  const forwarder = new Forwarder(options);
  await forwarder.start();
  return forwarder;
}
