/**
 * The broker's HTTP face: the status page (`/`), `/metrics` (Prometheus text),
 * `/status.json` and `/healthz`. It faces the network, so it is small and strict:
 * GET and HEAD only (405), four fixed routes (404), bounded connections, header and
 * request deadlines, no request bodies, and a handler that can fail without
 * touching the broker (500). It never takes the broker down: its errors are events.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkPort } from '../../common/endpoint.js';
import { ErrorCode, NattravError } from '../../errors.js';
import { BrokerMonitor, type MonitoredBroker } from './monitor.js';
import { renderStatusPage } from './status-page.js';

/** Options of {@link serveBrokerStatus}. */
export interface StatusServerOptions {
  /** Address to listen on. @default '127.0.0.1' (the status is for operators; pass '0.0.0.0' to publish it) */
  host?: string;
  /** TCP port (0 picks a free one). @default 0 */
  port?: number;
  /** Seconds between the page's reloads. @default 5 */
  refreshSeconds?: number;
  /** Most HTTP connections open at once; more are closed at accept. @default 64 */
  maxConnections?: number;
  /** A request's headers must be complete within this many ms (slow-header clients are cut: 408). @default 5000 */
  headersTimeoutMs?: number;
  /** A whole request must be in within this many ms. @default 10000 */
  requestTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this many ms. @default 5000 */
  keepAliveTimeoutMs?: number;
  /** Longest request target (path and query) accepted, in bytes; longer ones get 414. @default 2048 */
  maxUrlLength?: number;
  /** Counts the broker's events; made (and closed with the server) when not given. */
  monitor?: BrokerMonitor;
}

/** Defaults of {@link StatusServerOptions}, in one place. */
export const STATUS_SERVER_DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  refreshSeconds: 5,
  /** A dashboard has a few viewers and a scraper; 64 leaves room and bounds sockets. */
  maxConnections: 64,
  /** Like the broker's messageTimeoutMs: headers are one round trip on any usable path. */
  headersTimeoutMs: 5_000,
  /** No route takes a body; 10 s covers headers on a slow link. */
  requestTimeoutMs: 10_000,
  /** A browser reloading every 5 s reuses its connection; longer idle ones only hold a socket. */
  keepAliveTimeoutMs: 5_000,
  maxUrlLength: 2_048,
} as const;

/** Node checks headers/request deadlines at this interval (its default, 30 s, would let slow clients linger). */
const DEADLINE_CHECK_INTERVAL_MS = 1_000;

/** One request answered, for debug logs (the page reloads itself: these are frequent). */
export interface StatusRequestEvent {
  readonly method: string;
  /** The path asked for, cut to 200 characters (client input: escape before showing it as HTML). */
  readonly path: string;
  readonly status: number;
  readonly ms: number;
  readonly remote: string;
}

/** Routes, and what each answers. */
const ROUTES = ['/', '/metrics', '/status.json', '/healthz'] as const;
type Route = (typeof ROUTES)[number];

/** The HTTP status server of one broker. Emits 'request' ({@link StatusRequestEvent}) and 'warning' (Error). */
export class BrokerStatusServer extends EventEmitter {
  readonly #broker: MonitoredBroker;
  readonly #monitor: BrokerMonitor;
  readonly #ownsMonitor: boolean;
  readonly #options: Required<Omit<StatusServerOptions, 'monitor'>>;
  readonly #server: Server;
  #state: 'idle' | 'listening' | 'closed' = 'idle';
  /** The listen() in progress, if any (close() waits for it). */
  #starting: Promise<{ address: string; port: number }> | undefined;

  constructor(broker: MonitoredBroker, options: StatusServerOptions = {}) {
    super();
    const resolved = { ...STATUS_SERVER_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([k, v]) => v !== undefined && k !== 'monitor')) } as Required<Omit<StatusServerOptions, 'monitor'>>;
    checkOptions(resolved);
    this.#broker = broker;
    this.#options = resolved;
    this.#ownsMonitor = options.monitor === undefined;
    this.#monitor = options.monitor ?? new BrokerMonitor(broker);
    this.#server = createServer(
      {
        headersTimeout: resolved.headersTimeoutMs,
        requestTimeout: resolved.requestTimeoutMs,
        keepAliveTimeout: resolved.keepAliveTimeoutMs,
        connectionsCheckingInterval: DEADLINE_CHECK_INTERVAL_MS,
        maxHeaderSize: 8_192,
      },
      (req, res) => this.#handle(req, res),
    );
    this.#server.maxConnections = resolved.maxConnections;
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // Malformed or slow requests: answer what HTTP says where the socket still takes it, then drop it.
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      if (socket.writable) socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroy();
    });
    this.#server.on('error', (err: Error) => this.emit('warning', err));
  }

  /** The counters this server shows. */
  get monitor(): BrokerMonitor {
    return this.#monitor;
  }

  /** Starts listening; resolves with the bound address. ERR_ADDRESS_IN_USE (or ERR_INVALID_ARGUMENT) names the address that failed. */
  async listen(): Promise<{ address: string; port: number }> {
    if (this.#state === 'listening') return this.address();
    if (this.#state === 'closed') throw new NattravError(ErrorCode.Closed, 'the status server is closed');
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<{ address: string; port: number }> {
    const { host, port } = this.#options;
    try {
      await new Promise<void>((resolve, reject) => {
        const failed = (err: NodeJS.ErrnoException): void => {
          const where = `${host}:${port}`;
          reject(
            err.code === 'EADDRINUSE'
              ? new NattravError(ErrorCode.AddressInUse, `cannot serve HTTP on ${where}: port ${port} is in use`, { cause: err, address: host, port })
              : new NattravError(ErrorCode.InvalidArgument, `cannot serve HTTP on ${where}: ${err.code === 'EADDRNOTAVAIL' ? 'not an address of this host' : (err.code ?? err.message)}`, { cause: err, address: host, port }),
          );
        };
        this.#server.once('error', failed);
        this.#server.listen({ host, port, exclusive: true }, () => {
          this.#server.off('error', failed);
          resolve();
        });
      });
    } finally {
      this.#starting = undefined;
    }
    // close() came while binding: it waited for us, and closes what we bound.
    if (this.#state === 'closed') throw new NattravError(ErrorCode.Closed, 'the status server was closed while it was starting');
    this.#state = 'listening';
    return this.address();
  }

  /** The bound address; throws before {@link BrokerStatusServer.listen} resolved. */
  address(): { address: string; port: number } {
    const bound = this.#server.address() as AddressInfo | null;
    if (bound === null || this.#state !== 'listening') throw new NattravError(ErrorCode.Closed, 'the status server is not listening');
    return { address: bound.address, port: bound.port };
  }

  /** Stops serving and closes every connection (and the monitor it made). Idempotent; also during listen(). */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#ownsMonitor) this.#monitor.close();
    await this.#starting?.catch(() => undefined);
    if (!this.#server.listening) return;
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Same as {@link BrokerStatusServer.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const started = Date.now();
    const target = req.url ?? '/';
    const path = target.split('?')[0] ?? '/';
    res.on('finish', () =>
      this.emit('request', { method: req.method ?? '?', path: path.slice(0, 200), status: res.statusCode, ms: Date.now() - started, remote: req.socket.remoteAddress ?? '?' } satisfies StatusRequestEvent),
    );
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Referrer-Policy', 'no-referrer');
    // No route takes a body: a request that has one is answered, and its connection ends.
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) res.setHeader('Connection', 'close');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      res.setHeader('Connection', 'close');
      send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed: GET or HEAD only\n');
      return;
    }
    if (Buffer.byteLength(target) > this.#options.maxUrlLength) {
      send(res, req, 414, 'text/plain; charset=utf-8', 'request target too long\n');
      return;
    }
    if (!(ROUTES as readonly string[]).includes(path)) {
      send(res, req, 404, 'text/plain; charset=utf-8', `not found; try ${ROUTES.join(' ')}\n`);
      return;
    }
    this.#route(path as Route).then(
      ({ status, type, body, headers }) => {
        for (const [name, value] of Object.entries(headers ?? {})) res.setHeader(name, value);
        send(res, req, status, type, body);
      },
      (err: unknown) => {
        this.emit('warning', err instanceof Error ? err : new Error(String(err)));
        if (!res.headersSent) send(res, req, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      },
    );
  }

  async #route(route: Route): Promise<{ status: number; type: string; body: string; headers?: Record<string, string> }> {
    switch (route) {
      case '/healthz':
        return this.#broker.listening ? { status: 200, type: 'text/plain; charset=utf-8', body: 'ok\n' } : { status: 503, type: 'text/plain; charset=utf-8', body: 'not listening\n' };
      case '/metrics':
        return { status: 200, type: this.#monitor.metricsContentType, body: await this.#monitor.metricsText() };
      case '/status.json':
        return { status: 200, type: 'application/json; charset=utf-8', body: `${JSON.stringify(await this.#monitor.status())}\n` };
      case '/': {
        const status = await this.#monitor.status();
        const title = this.#broker.listening ? `${this.#broker.address().address}:${this.#broker.address().port}` : undefined;
        return {
          status: 200,
          type: 'text/html; charset=utf-8',
          body: renderStatusPage(status, { refreshSeconds: this.#options.refreshSeconds, ...(title === undefined ? {} : { title }) }),
          // Inline CSS and SVG only: nothing else may load or run.
          headers: { 'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'" },
        };
      }
    }
  }
}

/** Writes a whole answer; HEAD gets the headers (with the length the body would have) and no body. */
function send(res: ServerResponse, req: IncomingMessage, status: number, type: string, body: string): void {
  const bytes = Buffer.from(body);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': bytes.length });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

function checkOptions(options: Required<Omit<StatusServerOptions, 'monitor'>>): void {
  if (typeof options.host !== 'string' || options.host === '') {
    throw new NattravError(ErrorCode.InvalidArgument, `status server option host must be an IP address or host name, got ${JSON.stringify(options.host)}`);
  }
  checkPort(options.port, 'status server port', true);
  for (const key of ['refreshSeconds', 'maxConnections', 'headersTimeoutMs', 'requestTimeoutMs', 'keepAliveTimeoutMs', 'maxUrlLength'] as const) {
    const value = options[key];
    if (!Number.isSafeInteger(value) || value <= 0) throw new NattravError(ErrorCode.InvalidArgument, `status server option ${key} must be a positive integer, got ${String(value)}`);
  }
  if (options.headersTimeoutMs > options.requestTimeoutMs) {
    throw new NattravError(ErrorCode.InvalidArgument, `status server option headersTimeoutMs (${options.headersTimeoutMs}) must not exceed requestTimeoutMs (${options.requestTimeoutMs})`);
  }
}

/**
 * Serves `broker`'s status over HTTP (see {@link BrokerStatusServer}); call
 * `listen()` on the result. Make it before `broker.listen()` to count from the start.
 */
export function serveBrokerStatus(broker: MonitoredBroker, options: StatusServerOptions = {}): BrokerStatusServer {
  return new BrokerStatusServer(broker, options);
}
