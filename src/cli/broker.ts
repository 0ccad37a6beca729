/** The `broker` command: parse, call the library, log. */
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { BROKER_DEFAULTS, checkAnnounce, ErrorCode, NattravError, RedisBus, WorkerConnection, connectRedis, createBroker, parseHostPort, serveBrokerStatus, shareLimits, workerIdentity, type Broker, type BrokerEvent, type BrokerOptions, type BrokerStatusServer, type RedisBackend, type StatusRequestEvent, type WebSocketListen, type WorkerIdentity, type MonitoredBroker, WorkersStatusView, reportStatus } from '../index.js';
import { parseWorkers, runBrokerPrimary } from './broker-workers.js';
import { workerBrokerId } from '../broker/workers/link.js';
import { createBrokerLogger, logBrokerEvent, type LogFormat, type LogLevel } from './broker-log.js';
import { blameLimit, limitsTable, parseLimits } from './limits.js';
import { ExitCode, exitCodeFor } from './output.js';
import { readPem } from './pem.js';
import type { StopSignals } from './signals.js';

/** Options of `nattrav broker`. */
export interface BrokerCommandOptions {
  listen: string;
  alternate?: string;
  relayMaxBytes?: string;
  relayMaxSeconds?: string;
  ca?: string;
  cert?: string;
  key?: string;
  open?: boolean;
  strictAmplification?: boolean;
  stunCompat?: boolean;
  /** `--http HOST:PORT`: serve the status page, /metrics and /healthz there. */
  http?: string;
  /** `--log-format json|pretty` (commander checked the choice). */
  logFormat?: LogFormat;
  /** `--log-level` (commander checked the choice). @default 'info' */
  logLevel?: LogLevel;
  /** `--json`: the same as `--log-format json`. */
  json?: boolean;
  /** `--limit NAME=VALUE`, repeatable (limits.ts). */
  limit?: string[];
  /** `--list-limits`: print every limit's name, default and meaning, and exit. */
  listLimits?: boolean;
  /** `--redis URL`: registrations and sessions in Redis, shared with other brokers. */
  redis?: string;
  /** `--ws-listen [ws://|wss://]HOST:PORT`, repeatable: WebSocket listeners (wss by default with --cert). */
  wsListen?: string[];
  /** `--announce IP`, repeatable: this broker's address of each family (BrokerOptions.announce, dual-stack recipients). */
  announce?: string[];
  /** `--join-address IP:PORT`: where peers reach this broker, told to recipients of other brokers of the cluster. */
  joinAddress?: string;
  /** `--workers N`: run N broker processes on the same ports (broker-workers.ts). @default 1 */
  workers?: string;
}

/** The log format `--log-format` and `--json` ask for (default json); both at odds is a usage error naming them. */
export function brokerLogFormat(options: Pick<BrokerCommandOptions, 'logFormat' | 'json'>): LogFormat {
  if (options.json === true && options.logFormat !== undefined && options.logFormat !== 'json') {
    throw new NattravError(ErrorCode.InvalidArgument, `--json means --log-format json; it contradicts --log-format ${options.logFormat}: pass one of them`);
  }
  return options.logFormat ?? 'json';
}

/** `nattrav broker [--listen HOST:PORT] [--http HOST:PORT] [...]`: runs until SIGINT/SIGTERM. */
export async function brokerCommand(options: BrokerCommandOptions, stop: StopSignals): Promise<number> {
  if (options.listLimits === true) {
    process.stdout.write(limitsTable());
    return ExitCode.Ok;
  }
  const log = createBrokerLogger(brokerLogFormat(options), options.logLevel ?? 'info');
  const { host, port } = parseHostPort(options.listen, '--listen', 3478);
  const http = options.http === undefined ? undefined : parseHostPort(options.http, '--http');
  const alternate = options.alternate === undefined ? undefined : parseAlternate(options.alternate, port);
  const limits = parseLimits(options.limit ?? []);
  const workers = parseWorkers(options.workers);
  const joinAddress = clusterJoinAddress(options, host, port);
  const worker = workerIdentity();
  // The primary of several workers only runs them; each worker parses the same options and serves.
  if (worker === undefined && workers > 1) {
    // On Redis each worker is a broker of the cluster, named after the broker's join address (one per worker).
    const name = options.redis === undefined || joinAddress === undefined || joinAddress.endsWith(':0') ? {} : { name: joinAddress };
    return runBrokerPrimary({ workers, anyPort: port === 0, ...name, ...(limits.maxSessions === undefined ? {} : { maxSessions: limits.maxSessions }) }, log, stop);
  }
  const parsed = { host, port, http, alternate, limits };
  if (worker !== undefined) return serveAsWorker(options, log.child({ worker: worker.slot }), stop, { ...parsed, joinAddress }, worker);
  const redis = options.redis === undefined ? undefined : await openRedis(options.redis, log, stop.signal);
  let bus: RedisBus | undefined;
  try {
    // Brokers on one Redis reach each other's recipients over its pub/sub (a cluster).
    if (redis !== undefined) {
      // Named by its join address: a broker restarted on the same address (its recipients' NAT mappings
      // still lead there) is the one their registrations name, so they stay reachable through the restart.
      // (A port chosen at start, :0, is not known yet: then a random name.)
      const id = joinAddress === undefined || joinAddress.endsWith(':0') ? {} : { id: joinAddress };
      bus = await RedisBus.open(redis.connection, id);
      log.info({ event: 'cluster', busId: bus.id, joinAddress }, `cluster bus ${bus.id}; recipients of other brokers join at ${joinAddress}`);
    }
    return await serve(options, log, stop, { ...parsed, redis, bus, joinAddress, connection: undefined });
  } finally {
    await bus?.close();
    await redis?.close();
  }
}

/**
 * With --redis, where recipients registered through other brokers join this one's attempts:
 * --join-address, or the --listen address when it is a specific one. A wildcard --listen
 * without --join-address is a usage error naming both.
 */
function clusterJoinAddress(options: BrokerCommandOptions, host: string, port: number): string | undefined {
  if (options.joinAddress !== undefined) {
    const parsed = parseHostPort(options.joinAddress, '--join-address');
    if (isIP(parsed.host) === 0 || parsed.port === 0) {
      throw new NattravError(ErrorCode.InvalidArgument, `--join-address: pass the IP address and port where peers reach this broker (e.g. 198.51.100.7:3478), got ${options.joinAddress}`);
    }
    return isIP(parsed.host) === 6 ? `[${parsed.host}]:${parsed.port}` : `${parsed.host}:${parsed.port}`;
  }
  if (options.redis === undefined) return undefined;
  if (isIP(host) === 0 || host === '0.0.0.0' || host === '::') {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `--redis with --listen ${options.listen}: pass --join-address IP:PORT (where peers reach this broker), so that brokers sharing Redis can send their recipients here`,
    );
  }
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Connects to `--redis URL`; a bad URL names the flag (exit 2), a silent server is ERR_REGISTRY_UNAVAILABLE (exit 4). */
async function openRedis(url: string, log: Logger, signal: AbortSignal): Promise<RedisBackend> {
  let backend: RedisBackend;
  try {
    backend = await connectRedis({ url, signal, onError: (err) => log.warn({ event: 'warning', message: err.message }, `warning: ${err.message}`) });
  } catch (err) {
    if (err instanceof NattravError && err.code === ErrorCode.InvalidArgument) throw new NattravError(err.code, `--redis: ${err.message}`, { cause: err });
    throw err;
  }
  const { display, cluster } = backend.connection;
  log.info({ event: 'registry', kind: 'redis', server: display, cluster }, `registry redis ${display}${cluster ? ' (cluster)' : ''}`);
  return backend;
}

/**
 * A worker of `--workers N`: serves like one broker, with the primary's registry and
 * sessions unless Redis holds them, and a share of every limit. A failure to start goes
 * to the primary, which reports it (once) and exits with its code.
 */
async function serveAsWorker(options: BrokerCommandOptions, log: Logger, stop: StopSignals, parsed: Omit<Serving, 'redis' | 'bus' | 'connection'>, worker: WorkerIdentity): Promise<number> {
  const connection = new WorkerConnection(worker, () => process.kill(process.pid, 'SIGTERM'));
  let redis: RedisBackend | undefined;
  let bus: RedisBus | undefined;
  try {
    await connection.start();
    if (options.redis !== undefined) {
      // Each worker is a broker of the cluster on its own: registrations it takes name it, and
      // requests for its recipients reach it over the bus (the same ID its registry stamps).
      redis = await openRedis(options.redis, log, stop.signal);
      bus = await RedisBus.open(redis.connection, { id: workerBrokerId(worker.prefix, worker.slot) });
      log.info({ event: 'cluster', busId: bus.id, joinAddress: parsed.joinAddress }, `cluster bus ${bus.id}; recipients of other brokers join at ${String(parsed.joinAddress)}`);
    }
    return await serve(options, log, stop, { ...parsed, redis, bus, connection });
  } catch (err) {
    connection.failed(err);
    return exitCodeFor(err);
  } finally {
    connection.close();
    await bus?.close();
    await redis?.close();
  }
}

/** What brokerCommand parsed and opened for serve(). */
interface Serving {
  readonly host: string;
  readonly port: number;
  readonly http: { host: string; port: number } | undefined;
  readonly alternate: { host: string; port?: number } | undefined;
  readonly limits: ReturnType<typeof parseLimits>;
  readonly redis: RedisBackend | undefined;
  readonly bus: RedisBus | undefined;
  readonly joinAddress: string | undefined;
  /** A worker process's channel to its primary (`--workers N`). */
  readonly connection: WorkerConnection | undefined;
}

/** Runs the broker (and its status server) until a stop signal. */
async function serve(options: BrokerCommandOptions, log: Logger, stop: StopSignals, { host, port, http, alternate, limits, redis, bus, joinAddress, connection }: Serving): Promise<number> {
  const worker = connection?.identity;
  const stores = redis ?? connection;
  const broker = createBrokerBlamingLimits(options.limit ?? [], {
    ...(stores === undefined ? {} : { registry: stores.registry, sessions: stores.sessions }),
    ...(bus === undefined ? {} : { bus }),
    ...(joinAddress === undefined ? {} : { joinAddress }),
    host,
    port,
    ...limits,
    ...(connection === undefined || worker === undefined
      ? {}
      : { workerLink: connection.link, limits: shareLimits(limits.limits, worker.workers), maxPendingAttempts: Math.max(1, Math.floor((limits.maxPendingAttempts ?? BROKER_DEFAULTS.maxPendingAttempts) / worker.workers)) }),
    ...(alternate === undefined ? {} : { alternateHost: alternate.host, ...(alternate.port === undefined ? {} : { alternatePort: alternate.port }) }),
    ...relayQuotas(options),
    ...(options.ca === undefined ? {} : { ca: await readPem(options.ca, '--ca') }),
    ...(options.cert === undefined ? {} : { cert: await readPem(options.cert, '--cert') }),
    ...(options.key === undefined ? {} : { key: await readPem(options.key, '--key') }),
    ...(options.open === true ? { open: true } : {}),
    ...(options.strictAmplification === true ? { strictAmplification: true } : {}),
    ...(options.stunCompat === true ? { stunCompat: true } : {}),
    ...(options.wsListen === undefined ? {} : { webSockets: options.wsListen.map(parseWsListen) }),
    ...(options.announce === undefined ? {} : { announce: checkAnnounce(options.announce, '--announce') }),
  });
  broker.on('event', (event: BrokerEvent) => logBrokerEvent(log, event));
  broker.on('error', (err: Error) => log.warn({ event: 'warning', message: err.message }, `warning: ${err.message}`));
  // Made before the broker listens, so its counters see every event. With --workers, worker 1
  // serves it for the whole broker: the others report to it (workers/status-view.ts).
  let status: BrokerStatusServer | undefined;
  let stopReporting: (() => void) | undefined;
  if (http !== undefined && (connection === undefined || worker?.slot === 1)) {
    const view = connection === undefined ? broker : new WorkersStatusView(broker);
    if (view instanceof WorkersStatusView) connection?.collectStatus(view);
    status = statusServer(view, http, log);
  } else if (http !== undefined && connection !== undefined) {
    stopReporting = reportStatus(broker, connection.link);
  }
  try {
    await broker.listen();
    for (const ws of broker.webSocketEndpoints()) {
      const url = `${ws.tls ? 'wss' : 'ws'}://${ws.address.includes(':') ? `[${ws.address}]` : ws.address}:${ws.port}/`;
      log.info({ event: 'ws-listening', address: ws.address, port: ws.port, tls: ws.tls, url }, `ws-listening ${url}`);
    }
    if (status !== undefined) await startStatus(status, options.http as string, log);
    connection?.listening(() => broker.routeCounts);
  } catch (err) {
    stopReporting?.();
    await status?.close();
    await broker.close();
    // The error names the address that failed; say which option gave it.
    const failed = (err as { address?: string }).address;
    if (alternate !== undefined && failed === alternate.host && err instanceof NattravError && !err.message.startsWith('--http')) {
      throw new NattravError(err.code, `--alternate ${options.alternate}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  await stop.wait();
  stopReporting?.();
  await status?.close();
  await broker.close();
  return stop.exitCode ?? ExitCode.Ok;
}

/** One `--ws-listen`: `HOST:PORT` (wss when the broker has --cert), or `ws://HOST:PORT` / `wss://HOST:PORT` saying which. */
export function parseWsListen(text: string): WebSocketListen {
  const scheme = /^(wss?):\/\//i.exec(text);
  const rest = scheme === null ? text : text.slice(scheme[0].length).replace(/\/$/, '');
  if (rest.includes('/')) throw new NattravError(ErrorCode.InvalidArgument, `--ws-listen: pass [ws://|wss://]HOST:PORT (no path: every path is served), got ${text}`);
  const { host, port } = parseHostPort(rest, '--ws-listen');
  return { host, port, ...(scheme === null ? {} : { tls: scheme[1]?.toLowerCase() === 'wss' }) };
}

/** createBroker, with an error about a value from --limit naming that --limit. */
function createBrokerBlamingLimits(entries: readonly string[], options: BrokerOptions): Broker {
  try {
    return createBroker(options);
  } catch (err) {
    throw blameLimit(err, entries);
  }
}

/** The status server for `--http`, its requests logged at debug (the page reloads itself every few seconds). */
function statusServer(broker: MonitoredBroker, at: { host: string; port: number }, log: Logger): BrokerStatusServer {
  const server = serveBrokerStatus(broker, { host: at.host, port: at.port });
  server.on('request', (request: StatusRequestEvent) => log.debug({ event: 'http-request', ...request }, `http-request ${request.method} ${request.path} ${request.status} ${request.ms} ms from ${request.remote}`));
  server.on('warning', (err: Error) => log.warn({ event: 'warning', message: `--http: ${err.message}` }, `warning: --http: ${err.message}`));
  return server;
}

/** Starts the status server; a failure names --http. */
async function startStatus(server: BrokerStatusServer, flag: string, log: Logger): Promise<void> {
  try {
    const { address, port } = await server.listen();
    const url = `http://${address.includes(':') ? `[${address}]` : address}:${port}/`;
    log.info({ event: 'http-listening', address, port, url }, `http-listening ${url} (status page; /metrics, /healthz)`);
  } catch (err) {
    if (err instanceof NattravError) throw new NattravError(err.code, `--http ${flag}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** The longest relay time a broker can enforce (Node's timers hold 2^31 - 1 ms, about 24.8 days). */
const MAX_RELAY_SECONDS = Math.floor(2_147_483_647 / 1000);

/**
 * `--relay-max-bytes N` / `--relay-max-seconds N`: omitted, the broker's defaults apply
 * (1 GiB, 1 hour per relayed connection); 0 lifts a quota, explicitly.
 */
function relayQuotas(options: BrokerCommandOptions): Pick<BrokerOptions, 'relayMaxBytes' | 'relayMaxDurationMs'> {
  const quotas: Pick<BrokerOptions, 'relayMaxBytes' | 'relayMaxDurationMs'> = {};
  if (options.relayMaxBytes !== undefined) quotas.relayMaxBytes = Number(options.relayMaxBytes);
  if (options.relayMaxSeconds !== undefined) {
    const seconds = Number(options.relayMaxSeconds);
    if (seconds > MAX_RELAY_SECONDS) {
      throw new NattravError(ErrorCode.InvalidArgument, `--relay-max-seconds: at most ${MAX_RELAY_SECONDS} (about 24 days), or 0 for no time limit; got ${options.relayMaxSeconds}`);
    }
    quotas.relayMaxDurationMs = seconds * 1000;
  }
  return quotas;
}

/**
 * `--alternate HOST` or `--alternate HOST:PORT`: the second address for RFC 5780, and
 * optionally the alternate port (used on both addresses; default: the --listen port + 1).
 */
function parseAlternate(text: string, listenPort: number): { host: string; port?: number } {
  const bare = !/:\d+$/.test(text) || (isIP(text) === 6 && !text.startsWith('['));
  const parsed = parseHostPort(text, '--alternate', 0);
  if (isIP(parsed.host) === 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `--alternate: "${parsed.host}" is not an IP address; pass this host's second IP address (HOST or HOST:PORT)`);
  }
  if (bare) return { host: parsed.host };
  if (parsed.port === 0 || parsed.port === listenPort) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `--alternate: port ${parsed.port} cannot be the alternate port (it must differ from the --listen port ${listenPort}); pass HOST alone to use ${listenPort === 0 ? 'the listen port + 1' : listenPort + 1}`,
    );
  }
  return { host: parsed.host, port: parsed.port };
}

