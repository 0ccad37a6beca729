/** The `broker` command: parse, call the library, print. */
import { isIP } from 'node:net';
import { ErrorCode, NattravError, connectRedis, createBroker, formatEndpoint, parseHostPort, type BrokerEvent, type BrokerOptions, type RedisBackend } from '../index.js';
import { ExitCode, type Reporter } from './output.js';
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
  redis?: string;
}

/** `nattrav broker [--listen HOST:PORT] [...]`: runs until SIGINT/SIGTERM. */
export async function brokerCommand(options: BrokerCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const { host, port } = parseHostPort(options.listen, '--listen', 3478);
  const alternate = options.alternate === undefined ? undefined : parseAlternate(options.alternate, port);
  const redis = options.redis === undefined ? undefined : await openRedis(options.redis, out, stop.signal);
  try {
    return await serve(options, out, stop, { host, port, alternate, redis });
  } finally {
    await redis?.close();
  }
}

/** Connects to `--redis URL`; a bad URL names the flag (exit 2), a silent server is ERR_REGISTRY_UNAVAILABLE (exit 4). */
async function openRedis(url: string, out: Reporter, signal: AbortSignal): Promise<RedisBackend> {
  let backend: RedisBackend;
  try {
    backend = await connectRedis({ url, signal, onError: (err) => out.event('warning', { message: err.message }, `broker: warning: ${err.message}`) });
  } catch (err) {
    if (err instanceof NattravError && err.code === ErrorCode.InvalidArgument) throw new NattravError(err.code, `--redis: ${err.message}`, { cause: err });
    throw err;
  }
  const { display, cluster } = backend.connection;
  out.event('registry', { kind: 'redis', server: display, cluster }, `broker: registry redis ${display}${cluster ? ' (cluster)' : ''}`);
  return backend;
}

interface Serving {
  readonly host: string;
  readonly port: number;
  readonly alternate: { host: string; port?: number } | undefined;
  readonly redis: RedisBackend | undefined;
}

async function serve(options: BrokerCommandOptions, out: Reporter, stop: StopSignals, { host, port, alternate, redis }: Serving): Promise<number> {
  const broker = createBroker({
    ...(redis === undefined ? {} : { registry: redis.registry, sessions: redis.sessions }),
    host,
    port,
    ...(alternate === undefined ? {} : { alternateHost: alternate.host, ...(alternate.port === undefined ? {} : { alternatePort: alternate.port }) }),
    ...relayQuotas(options),
    ...(options.ca === undefined ? {} : { ca: await readPem(options.ca, '--ca') }),
    ...(options.cert === undefined ? {} : { cert: await readPem(options.cert, '--cert') }),
    ...(options.key === undefined ? {} : { key: await readPem(options.key, '--key') }),
    ...(options.open === true ? { open: true } : {}),
    ...(options.strictAmplification === true ? { strictAmplification: true } : {}),
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
  try {
    await broker.listen();
  } catch (err) {
    await broker.close();
    // The error names the address that failed; say which option gave it.
    const failed = (err as { address?: string }).address;
    if (alternate !== undefined && failed === alternate.host && err instanceof NattravError) {
      throw new NattravError(err.code, `--alternate ${options.alternate}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  await stop.wait();
  await broker.close();
  return stop.exitCode ?? ExitCode.Ok;
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

