/** The `broker`, `listen` and `connect` commands: parse, call the library, print. */
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import {
  connect,
  createBroker,
  ErrorCode,
  NattravError,
  createServer,
  formatEndpoint,
  parseHostPort,
  type BrokerEvent,
  type ConnectionInfo,
  type NattravSocket,
  type StrategyTrace,
  type Identity,
  loadIdentity,
} from '../index.js';
import { ExitCode, type Reporter } from './output.js';

/** Resolves on the first SIGINT or SIGTERM. */
function interrupted(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

function infoFields(info: ConnectionInfo): Record<string, unknown> {
  return {
    tls: info.tls,
    ...(info.peerUri === undefined ? {} : { peerUri: info.peerUri }),
    path: info.path,
    uri: info.uri,
    local: formatEndpoint(info.local),
    remote: formatEndpoint(info.remote),
    public: formatEndpoint(info.publicEndpoint),
    setupMs: info.setupMs,
    attempts: info.attempts,
  };
}

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
  stunCompat?: boolean;
}

/** Reads a PEM file named by an option, with an error naming the option. */
export async function readPem(path: string, option: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new NattravError(ErrorCode.InvalidArgument, `${option}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
}

/** `nattrav broker [--listen HOST:PORT] [...]`: runs until SIGINT/SIGTERM. */
export async function brokerCommand(options: BrokerCommandOptions, out: Reporter): Promise<number> {
  const { host, port } = parseHostPort(options.listen, '--listen', 3478);
  const broker = createBroker({
    host,
    port,
    ...(options.alternate === undefined ? {} : { alternateHost: options.alternate }),
    ...(options.relayMaxBytes === undefined ? {} : { relayMaxBytes: Number(options.relayMaxBytes) }),
    ...(options.relayMaxSeconds === undefined ? {} : { relayMaxDurationMs: Number(options.relayMaxSeconds) * 1000 }),
    ...(options.ca === undefined ? {} : { ca: await readPem(options.ca, '--ca') }),
    ...(options.cert === undefined ? {} : { cert: await readPem(options.cert, '--cert') }),
    ...(options.key === undefined ? {} : { key: await readPem(options.key, '--key') }),
    ...(options.open === true ? { open: true } : {}),
    ...(options.stunCompat === true ? { stunCompat: true } : {}),
  });
  broker.on('event', (event: BrokerEvent) => {
    if (event.type === 'warning') {
      out.event('warning', { message: event.message }, `\n*** nattrav broker: WARNING: ${event.message} ***\n`);
      return;
    }
    const { type, ...fields } = event;
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null && 'address' in v ? formatEndpoint(v as { address: string; port: number }) : String(v)}`)
      .join(' ');
    out.event(type, JSON.parse(JSON.stringify(fields)) as Record<string, unknown>, `broker: ${type} ${text}`);
  });
  broker.on('error', (err: Error) => out.event('warning', { message: err.message }, `broker: warning: ${err.message}`));
  await broker.listen();
  await interrupted();
  await broker.close();
  return ExitCode.Ok;
}

/** Pipes stdin to the socket and the socket to stdout; resolves when the socket has closed. */
function pipeStdio(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    process.stdin.pipe(socket);
    socket.pipe(process.stdout, { end: false });
    socket.on('error', () => socket.destroy());
    socket.once('close', () => {
      process.stdin.unpipe(socket);
      process.stdin.pause();
      resolve();
    });
  });
}

/** Options shared by `listen` and `connect` for identities and trust. */
interface SecurityOptions {
  tls?: boolean;
  identity?: string;
  ca?: string;
  brokerCa?: string;
}

/** Options of `nattrav listen`. */
export interface ListenCommandOptions extends SecurityOptions {
  broker: string;
  echo?: boolean;
  keyDir?: string;
}

/** Options of `nattrav connect`. */
export interface ConnectCommandOptions extends SecurityOptions {
  broker: string;
  timeout?: string;
  verbose?: boolean;
}

/** Loads --identity, --ca and --broker-ca. */
async function security(options: SecurityOptions): Promise<{ identity?: Identity; ca?: string[]; brokerCa?: string }> {
  const ca = options.ca === undefined ? undefined : [await readPem(options.ca, '--ca')];
  return {
    ...(options.identity === undefined ? {} : { identity: await loadIdentity(options.identity) }),
    ...(ca === undefined ? {} : { ca }),
    ...(options.brokerCa === undefined ? {} : { brokerCa: await readPem(options.brokerCa, '--broker-ca') }),
  };
}

/** `nattrav listen URI --broker HOST:PORT [--echo] [--tls ...]`. */
export async function listenCommand(uri: string, options: ListenCommandOptions, out: Reporter): Promise<number> {
  const { identity, ca, brokerCa } = await security(options);
  const server = createServer({
    broker: options.broker,
    uri,
    ...(identity === undefined ? {} : { identity }),
    ...(brokerCa === undefined ? {} : { brokerCa }),
    ...(options.keyDir === undefined ? {} : { keyDir: options.keyDir }),
    ...(options.tls === true ? { tls: { ca: ca ?? [] } } : {}),
  });
  const firstConnection = new Promise<NattravSocket>((resolve) => {
    server.on('connection', (socket: NattravSocket) => {
      out.event('accepted', infoFields(socket.nattrav), `accepted ${socket.nattrav.path} connection from ${formatEndpoint(socket.nattrav.remote)} (${socket.nattrav.setupMs} ms)`);
      if (options.echo === true) {
        socket.on('error', () => socket.destroy());
        socket.pipe(socket);
      } else {
        resolve(socket);
      }
    });
  });
  server.on('attemptFailed', (err: Error) => out.event('attempt-failed', { message: err.message }, `an incoming attempt failed: ${err.message}`));
  server.on('unregistered', (err: Error) => out.event('unregistered', { message: err.message }, `registration lost: ${err.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
    server.listen();
  });
  const address = server.address();
  out.event(
    'registered',
    { uri, broker: options.broker, public: address ? formatEndpoint(address.publicEndpoint) : null, transport: address?.transport ?? null },
    `registered ${uri} with ${options.broker} over ${address?.transport ?? '?'} (public ${address ? formatEndpoint(address.publicEndpoint) : '?'})`,
  );
  const stop = interrupted();
  if (options.echo === true) {
    await stop;
  } else {
    const winner = await Promise.race([firstConnection, stop]);
    if (typeof winner !== 'string') {
      server.close();
      await Promise.race([pipeStdio(winner), stop]);
    }
  }
  server.close();
  return ExitCode.Ok;
}

/** `nattrav connect URI --broker HOST:PORT [-v]`. */
export async function connectCommand(uri: string, options: ConnectCommandOptions, out: Reporter): Promise<number> {
  const { identity, ca, brokerCa } = await security(options);
  const controller = new AbortController();
  void interrupted().then((signal) => controller.abort(signal));
  const timeoutMs = options.timeout === undefined ? undefined : Number(options.timeout);
  const onTrace = (event: StrategyTrace): void => {
    const why = event.error === undefined ? '' : `: ${event.error}`;
    out.event('strategy', { ...event }, `attempt ${event.attempt}: ${event.strategy} ${event.outcome}${event.outcome === 'started' ? '' : ` after ${event.ms} ms`}${why}`);
  };
  const socket = await connect({
    broker: options.broker,
    uri,
    signal: controller.signal,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(options.verbose === true ? { onTrace } : {}),
    ...(brokerCa === undefined ? {} : { brokerCa }),
    ...(options.tls === true ? { tls: { ...(identity === undefined ? {} : { identity }), ca: ca ?? [] } } : {}),
  });
  const info = socket.nattrav;
  out.event(
    'connected',
    { ...infoFields(info), trace: info.trace },
    `connected to ${uri}: path ${info.path}, ${formatEndpoint(info.local)} -> ${formatEndpoint(info.remote)} in ${info.setupMs} ms`,
  );
  await pipeStdio(socket);
  return ExitCode.Ok;
}
