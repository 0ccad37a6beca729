/** The `listen` and `connect` commands: parse, call the library, print. */
// The modules a command needs, not ../index.js (which loads the broker, Redis and WebSocket
// too): `connect` reaches its first packet sooner (lazy.ts). Identities and the server side
// are imported where they are used.
import { ErrorCode, NattravError } from '../errors.js';
import { checkNattravUri } from '../security/uri.js';
import { connect } from '../peer/connect.js';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { parseBrokerList } from '../peer/brokers.js';
import type { ConnectionInfo, NattravSocket, StrategyTrace } from '../peer/info.js';
import type { ConnectionRejection, NattravServer, RegistrationRetryEvent, ServerAddress } from '../peer/server.js';
import type { Dialer } from '../peer/dialer.js';
import type { Identity } from '../security/identity.js';
import type { RegisteredEvent } from '../peer/registration.js';
import type { KeepaliveEvent } from '../peer/adaptive-keepalive.js';
import type { Socks5BindEvent } from '../peer/socks5-bind.js';
import type { MovedEvent } from '../peer/mobility.js';
import type { SecondFamilyRegistered } from '../peer/second-family.js';
import type { EventEmitter } from 'node:events';
import type { PortMapperEvent } from '../portmap/mapper.js';
import type { Reporter } from './output.js';
import { describeKeepalive, lifetimeFields } from './lifetime-text.js';
import { readPem } from './pem.js';
import { pipeStdio, reportNotConnected, reportPipe } from './pipe.js';
import type { StopSignals } from './signals.js';
import { peerRoute, type WebCommandOptions } from './web.js';
import { isBrokerUrl, parseBrokerUrl } from '../peer/web/dialer.js';

function infoFields(info: ConnectionInfo): Record<string, unknown> {
  return {
    tls: info.tls,
    ...(info.peerUri === undefined ? {} : { peerUri: info.peerUri }),
    ...(info.peerKeyFingerprint === undefined ? {} : { peerKey: info.peerKeyFingerprint, peerVouchedBy: info.peerVouchedBy }),
    path: info.path,
    family: info.family,
    uri: info.uri,
    local: formatEndpoint(info.local),
    remote: formatEndpoint(info.remote),
    public: formatEndpoint(info.publicEndpoint),
    setupMs: info.setupMs,
    traversalMs: info.traversalMs,
    attempts: info.attempts,
  };
}

/** Options shared by `listen` and `connect` for identities and trust. */
export interface SecurityOptions {
  tls?: boolean;
  identity?: string;
  ca?: string;
  brokerCa?: string;
  /** --socks5 [USER:PASS@]HOST:PORT: reach the broker (and peers) through this SOCKS5 proxy. */
  socks5?: string;
}

/** Options of `nattrav listen`. */
export interface ListenCommandOptions extends SecurityOptions, WebCommandOptions {
  broker: string;
  echo?: boolean;
  keyDir?: string;
  /** Fail fast when the first registration fails, instead of retrying. */
  once?: boolean;
  /** The registration refresh interval, ms (validated by the parser); fixes it (no adaptive keepalive). */
  keepalive?: string;
  /** --keepalive-max: the longest interval adaptive keepalive may set, ms (validated by the parser and createServer). */
  keepaliveMax?: string;
  /** Only these initiator identities get a connection. */
  allow?: string[];
  /** false (`--no-portmap`): ask no gateway for a port mapping. */
  portmap?: boolean;
  /** `--udp`: datagram channels instead of TCP connections (datagram.ts). */
  udp?: boolean;
  /** Take the URI from another running process with the same key. */
  takeover?: boolean;
  /** `--no-dual-stack`: register in the broker's first family only (ServerOptions.dualStack). */
  dualStack?: boolean;
}

/** Options of `nattrav connect`. */
export interface ConnectCommandOptions extends SecurityOptions, WebCommandOptions {
  broker: string;
  expectKey?: string;
  acceptNewKey?: boolean;
  knownKeys?: string;
  timeout?: string;
  verbose?: boolean;
  /** `--udp`: a datagram channel instead of a TCP connection (datagram.ts). */
  udp?: boolean;
  /** `--ipv4` / `--ipv6`: connect in that family only (connect({ family })). */
  ipv4?: boolean;
  ipv6?: boolean;
  /** `--family-delay MS`: connect({ familyDelayMs }). */
  familyDelay?: string;
}

/** `connect({ family })` from --ipv4 / --ipv6 (undefined: race both); both, or either with --udp, is a usage error. */
export function familyOption(options: Pick<ConnectCommandOptions, 'ipv4' | 'ipv6' | 'udp' | 'familyDelay'>): { family?: 4 | 6; familyDelayMs?: number } {
  if (options.ipv4 === true && options.ipv6 === true) throw new NattravError(ErrorCode.InvalidArgument, '--ipv4 and --ipv6 exclude each other: pass one, or neither to race IPv6 against IPv4');
  const family = options.ipv4 === true ? 4 : options.ipv6 === true ? 6 : undefined;
  if ((family !== undefined || options.familyDelay !== undefined) && options.udp === true) {
    throw new NattravError(ErrorCode.InvalidArgument, `${family === undefined ? '--family-delay' : `--ipv${family}`} is for TCP connections; a --udp channel runs in the broker's first address family`);
  }
  return { ...(family === undefined ? {} : { family }), ...(options.familyDelay === undefined ? {} : { familyDelayMs: Number(options.familyDelay) }) };
}

/** Checks the URI and --broker (one broker, or several comma-separated) before anything touches the network; errors name what was wrong (exit 2). */
export function checkTarget(uri: string, broker: string): HostPort[] {
  checkNattravUri(uri, 'URI');
  return isBrokerUrl(broker) ? [parseBrokerUrl(broker).broker] : parseBrokerList(broker, '--broker');
}

/** Loads --identity, --ca and --broker-ca. */
export async function security(options: SecurityOptions): Promise<{ identity?: Identity; ca?: string[]; brokerCa?: string }> {
  const ca = options.ca === undefined ? undefined : [await readPem(options.ca, '--ca')];
  return {
    ...(options.identity === undefined ? {} : { identity: await (await import('../security/identity.js')).loadIdentity(options.identity) }),
    ...(ca === undefined ? {} : { ca }),
    ...(options.brokerCa === undefined ? {} : { brokerCa: await readPem(options.brokerCa, '--broker-ca') }),
  };
}

/** Closes the server; resolves once its registration has been withdrawn (a few ms, at most about 200). */
export function withdraw(server: NattravServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Registers; resolves false when a stop signal came first (the server is then closed). */
export function register(server: NattravServer, stop: StopSignals): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    const onStop = (): void => {
      server.close(() => resolve(false));
    };
    stop.signal.addEventListener('abort', onStop, { once: true });
    server.once('listening', () => {
      stop.signal.removeEventListener('abort', onStop);
      resolve(true);
    });
    server.once('error', (err: unknown) => {
      stop.signal.removeEventListener('abort', onStop);
      reject(err);
    });
    server.listen();
  });
}

/** What registers and reports its progress: a NattravServer, or an Exposer (which passes on its server's events). */
export type RegistrationSource = EventEmitter & { address(): ServerAddress | null };

/** Reports the registration's progress: registered (first and again), lost, each failed try. */
export function reportRegistration(server: RegistrationSource, options: { broker: string; tls?: boolean }, out: Reporter): void {
  server.on('registered', (event: RegisteredEvent) => {
    if (event.kind === 'refresh') return;
    const address = server.address();
    const uri = address?.uri ?? '?';
    const key = address?.keyFingerprint ?? null;
    const again = event.kind === 'again';
    const publicEndpoint = formatEndpoint(event.publicEndpoint);
    // With several brokers: the one that answered (after a failover, the next one).
    const broker = `${event.broker.host}:${event.broker.port}`;
    out.event(
      'registered',
      { uri, broker, public: publicEndpoint, transport: event.transport, key, tls: options.tls !== false, again },
      `registered ${uri}${again ? ' again' : ''} with ${broker} over ${event.transport} (public ${publicEndpoint}); key ${key ?? '?'}` +
        (options.tls === false ? ' (no TLS: connections are not authenticated)' : `: initiators can pin it with --expect-key ${key ?? '?'}`),
    );
  });
  server.on('portmap', (event: PortMapperEvent) => {
    const { mapping } = event;
    const external = `${mapping.externalAddress}:${mapping.externalPort}`;
    const fields = { type: event.type, protocol: mapping.protocol, external, internalPort: mapping.internalPort, lifetimeSeconds: mapping.lifetimeSeconds, ...(event.error === undefined ? {} : { message: event.error.message }) };
    const text = event.type === 'renew-failed' ? `renewing port mapping ${external} failed: ${event.error?.message ?? ''}` : `port mapping ${external} -> port ${mapping.internalPort} ${event.type} (${mapping.protocol})`;
    out.event('portmap', fields, text);
  });
  server.on('keepalive', (event: KeepaliveEvent) =>
    out.event(
      'keepalive',
      { keepaliveMs: event.keepaliveMs, lifetimeMs: event.lifetimeMs, source: event.source, publicAddress: event.publicAddress, ...(event.lifetime === undefined ? {} : { mappingLifetime: lifetimeFields(event.lifetime) }) },
      describeKeepalive(event),
    ),
  );
  server.on('keepaliveFailed', (err: NattravError) =>
    out.event('keepalive-failed', { code: err.code, message: err.message }, `measuring the NAT mapping lifetime failed (${err.message}); the keepalive interval stays`),
  );
  server.on('socks5Bind', (event: Socks5BindEvent) => out.event('socks5-bind', ...socks5BindLine(event)));
  // The second address family (dual stack): said when it starts or stops holding, not at each refresh.
  let secondHeld: boolean | undefined;
  server.on('secondFamilyRegistered', (event: SecondFamilyRegistered) => {
    if (secondHeld === true) return;
    secondHeld = true;
    const fields = { family: event.publicEndpoint.family, public: formatEndpoint(event.publicEndpoint), broker: formatEndpoint(event.broker) };
    out.event('second-family', fields, `also registered over ${fields.family} with ${fields.broker} (public ${fields.public}): initiators can reach us over either family`);
  });
  server.on('secondFamilyFailed', (err: NattravError) => {
    if (secondHeld === false) return;
    secondHeld = false;
    out.event('second-family-failed', { code: err.code, message: err.message }, `registering our second address family failed (${err.message}); the first holds, retrying with backoff`);
  });
  server.on('moved', (moved: MovedEvent) =>
    out.event(
      'moved',
      { reason: moved.reason, from: formatEndpoint(moved.from), to: formatEndpoint(moved.to), localFrom: moved.localFrom, localTo: moved.localTo },
      `moved (${moved.reason}): registered from ${formatEndpoint(moved.to)} now, was ${formatEndpoint(moved.from)}; local addresses ${moved.localTo.join(', ') || 'none'} (were ${moved.localFrom.join(', ') || 'none'})`,
    ),
  );
  server.on('registrationLost', (err: NattravError) =>
    out.event('registration-lost', { code: err.code, message: err.message }, `registration lost: ${err.message}; registering again`),
  );
  server.on('registrationRetry', (retry: RegistrationRetryEvent) =>
    out.event(
      'registration-retry',
      { code: retry.error.code, message: retry.error.message, failures: retry.failures, retryInMs: retry.delayMs, phase: retry.phase },
      `registering with ${options.broker} failed (${retry.failures} in a row): ${retry.error.message}; next try in ${(retry.delayMs / 1000).toFixed(1)} s`,
    ),
  );
  server.on('connectionRejected', (rejection: ConnectionRejection) =>
    out.event(
      'connection-rejected',
      { peerUri: rejection.peerUri, peerKey: rejection.peerKeyFingerprint, remote: formatEndpoint(rejection.remote), reason: rejection.reason },
      `refused ${rejection.peerUri} from ${formatEndpoint(rejection.remote)}: not on the allow-list`,
    ),
  );
}

/**
 * The part of `listen` (TCP and --udp) after the server's handlers are set: reports failed
 * attempts and the registration (`reported` names the broker and whether TLS is on), registers,
 * and with `echo` serves until a signal or until another process takes the URI over
 * (`takenOver`). Returns the exit code when the command is done, or undefined when the
 * registration stands and the command goes on to wait for its first connection.
 */
export async function registerListener(
  server: NattravServer,
  reported: { broker: string; tls?: boolean },
  echo: boolean,
  takenOver: Promise<NattravError>,
  out: Reporter,
  stop: StopSignals,
): Promise<number | undefined> {
  server.on('attemptFailed', (err: Error & { code?: string }) =>
    out.event('attempt-failed', { code: err.code ?? 'ERR_UNEXPECTED', message: err.message }, `an incoming attempt failed: ${err.message}`),
  );
  reportRegistration(server, reported, out);
  if (!(await register(server, stop))) {
    reportNotConnected(out, 'interrupted');
    return stop.exitCode as number;
  }
  if (!echo) return undefined;
  const ended = await Promise.race([stop.wait(), takenOver]);
  await withdraw(server);
  return ended instanceof NattravError ? out.error(ended) : (stop.exitCode as number);
}

/**
 * `nattrav listen URI --broker HOST:PORT [--echo] [--once] [--allow URI]... [--tls ...]`.
 * Without --echo the first connection is piped to stdin/stdout (the registration is
 * withdrawn when it arrives); with --echo every connection is echoed until a signal.
 * A broker that is away (at start, or restarting) is tried again until it answers,
 * unless --once.
 */
export async function listenCommand(uri: string, options: ListenCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const brokers = checkTarget(uri, options.broker);
  for (const allowed of options.allow ?? []) checkNattravUri(allowed, '--allow');
  const { identity, ca, brokerCa } = await security(options);
  const route = peerRoute(options, brokerCa, out);
  const { createServer } = await import('../peer/server.js');
  const server = createServer({
    broker: brokers,
    ...route.options,
    uri,
    ...(identity === undefined ? {} : { identity }),
    ...(brokerCa === undefined ? {} : { brokerCa }),
    ...(options.keyDir === undefined ? {} : { keyDir: options.keyDir }),
    ...(options.once === true ? { once: true } : {}),
    ...(options.keepalive === undefined ? {} : { keepaliveMs: Number(options.keepalive) }),
    ...(options.keepaliveMax === undefined ? {} : { keepaliveMaxMs: Number(options.keepaliveMax) }),
    ...(options.allow === undefined ? {} : { allow: options.allow }),
    ...(options.portmap === false ? { portmap: false } : {}),
    ...(options.takeover === true ? { takeover: true } : {}),
    ...(options.dualStack === false ? { dualStack: false } : {}),
    tls: options.tls === false ? false : { ca: ca ?? [] },
  });
  // Another process with our key took the URI over: the server closed; we end with its error (exit 13).
  const takenOver = new Promise<NattravError>((resolve) => server.once('takenOver', resolve));
  let piped = false;
  const firstConnection = new Promise<NattravSocket>((resolve) => {
    server.on('connection', (socket: NattravSocket) => {
      out.event('accepted', infoFields(socket.nattrav), `accepted ${socket.nattrav.path} connection from ${formatEndpoint(socket.nattrav.remote)} (${socket.nattrav.setupMs} ms)`);
      if (options.echo !== true) {
        if (piped) {
          // Only the first connection is piped; one that slipped in before the registration was withdrawn is closed.
          socket.on('error', () => undefined);
          socket.destroy();
          return;
        }
        piped = true;
        resolve(socket);
        return;
      }
      // Echo: the other side's FIN ends our echo too (half-close), then the connection closes.
      socket.on('error', () => undefined);
      socket.pipe(socket);
      void socket.nattrav.closed.then((closed) =>
        out.event(
          'closed',
          { bytesIn: closed.bytesIn, bytesOut: closed.bytesOut, durationMs: closed.durationMs, reason: closed.reason, ...(closed.error === undefined ? {} : { message: closed.error.message }) },
          `echo connection closed (${closed.reason}): ${closed.bytesIn} bytes in, ${closed.bytesOut} bytes out${closed.error === undefined ? '' : `: ${closed.error.message}`}`,
        ),
      );
    });
  });
  const ended = await registerListener(server, options, options.echo === true, takenOver, out, stop);
  if (ended !== undefined) return ended;
  const winner = await Promise.race([firstConnection, stop.wait(), takenOver]);
  // The registration is withdrawn while the connection runs: its bytes never wait for the broker.
  const withdrawn = withdraw(server);
  if (winner instanceof NattravError) {
    await withdrawn;
    return out.error(winner);
  }
  if (typeof winner === 'string') {
    await withdrawn;
    reportNotConnected(out, 'interrupted');
    return stop.exitCode as number;
  }
  const outcome = await pipeStdio(winner, stop.signal);
  await withdrawn;
  return reportPipe(outcome, stop, out);
}

/** Reports each strategy trace of a connect as a 'strategy' event (what -v prints). */
export function traceReporter(out: Reporter): (event: StrategyTrace) => void {
  return (event) => {
    const why = event.error === undefined ? '' : `: ${event.error}`;
    out.event('strategy', { ...event }, `attempt ${event.attempt}${event.family === undefined ? '' : ` over IPv${event.family}`}: ${event.strategy} ${event.outcome}${event.outcome === 'started' ? '' : ` after ${event.ms} ms`}${why}`);
  };
}

/** `nattrav connect URI --broker HOST:PORT [-v] [--tls ...]`: pipes stdin/stdout to the connection. */
export async function connectCommand(uri: string, options: ConnectCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const brokers = checkTarget(uri, options.broker);
  const family = familyOption(options);
  const { identity, ca, brokerCa } = await security(options);
  const timeoutMs = options.timeout === undefined ? undefined : Number(options.timeout);
  const route = peerRoute(options, brokerCa, out);
  const onTrace = traceReporter(out);
  let socket: NattravSocket;
  try {
    socket = await connect({
      broker: brokers,
      ...route.options,
      onBrokerFailed: ({ broker, error }) => out.event('broker-failed', { broker, code: error.code, message: error.message }, `broker ${broker} did not answer (${error.message}); trying the next`),
      uri,
      signal: stop.signal,
      ...family,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(options.verbose === true ? { onTrace } : {}),
      ...(brokerCa === undefined ? {} : { brokerCa }),
      tls: options.tls === false ? false : { ...(identity === undefined ? {} : { identity }), ca: ca ?? [] },
      ...(options.expectKey === undefined ? {} : { expectKey: options.expectKey }),
      ...(options.acceptNewKey === true ? { acceptChangedKey: true } : {}),
      ...(options.knownKeys === undefined ? {} : { knownKeysFile: options.knownKeys }),
    });
  } catch (err) {
    if (stop.exitCode !== undefined) {
      out.event('interrupted', { signal: stop.received }, `interrupted by ${String(stop.received)} while connecting`);
      reportNotConnected(out, 'interrupted');
      return stop.exitCode;
    }
    const code = out.error(err);
    reportNotConnected(out, 'not-connected');
    return code;
  }
  const info = socket.nattrav;
  out.event(
    'connected',
    { ...infoFields(info), trace: info.trace },
    `connected to ${uri}: path ${info.path} over IPv${info.family}, ${formatEndpoint(info.local)} -> ${formatEndpoint(info.remote)} in ${info.setupMs} ms`,
  );
  return reportPipe(await pipeStdio(socket, stop.signal), stop, out);
}

/** A BIND event as stderr / --json shows it: its fields and its line. */
function socks5BindLine(event: Socks5BindEvent): [Record<string, unknown>, string] {
  if (event.type === 'bound') {
    const bound = formatEndpoint(event.endpoint);
    return [{ type: 'bound', bound }, `reachable through the SOCKS5 proxy's BIND at ${bound}`];
  }
  if (event.type === 'accepted') return [{ type: 'accepted', from: `${event.from.host}:${event.from.port}` }, `a connection from ${event.from.host}:${event.from.port} came through the SOCKS5 BIND`];
  const what = event.type === 'refused' ? 'the SOCKS5 proxy refused BIND; inbound connections use the other paths' : 'the SOCKS5 BIND was lost';
  return [{ type: event.type, message: event.error.message, retryInMs: event.retryMs }, `${what}: ${event.error.message}; next BIND in ${(event.retryMs / 1000).toFixed(1)} s`];
}
