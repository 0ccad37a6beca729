/** The `broker`, `listen` and `connect` commands: parse, call the library, print. */
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
import { readPem } from './pem.js';
import { interrupted } from './signals.js';

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
