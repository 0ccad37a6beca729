/**
 * `nattrav expose [HOST:]PORT [URI]`: parse, call the library's expose, print. The URI
 * to share is the result (stdout); progress and the per-connection log go to stderr.
 */
import {
  Exposer,
  NattravError,
  checkNattravUri,
  formatEndpoint,
  loadOrCreateIdentity,
  parseServiceAddress,
  type Identity,
  type ServiceEvent,
} from '../index.js';
import { reportRegistration } from './commands.js';
import type { Reporter } from './output.js';
import { readPem } from './pem.js';
import { reportServiceEvent } from './service-log.js';
import type { StopSignals } from './signals.js';
import { peerRoute, type RouteCommandOptions } from './web.js';

/** Options of `nattrav expose`. */
export interface ExposeCommandOptions extends RouteCommandOptions {
  tls?: boolean;
  identity?: string;
  ca?: string;
  brokerCa?: string;
  keyDir?: string;
  maxConnections?: string;
  /** Connections of one peer at once. */
  maxConnectionsPerPeer?: string;
  /** Close connections idle this many seconds. */
  idleTimeout?: string;
  /** Only these initiator identities get a connection. */
  allow?: string[];
  /** false (`--no-portmap`): ask no gateway for a port mapping. */
  portmap?: boolean;
  /** Fail fast when the first registration fails, instead of retrying. */
  once?: boolean;
  /** A fixed registration refresh interval, ms (no adaptive keepalive). */
  keepalive?: string;
  /** --keepalive-max: the longest interval adaptive keepalive may set, ms. */
  keepaliveMax?: string;
  /** --takeover: take the URI from another live process holding the same key. */
  takeover?: boolean;
}

/** Loads --identity DIR, or makes a self-certifying identity there; says so when it made one. */
export async function identityFromDir(dir: string | undefined, out: Reporter): Promise<Identity | undefined> {
  if (dir === undefined) return undefined;
  const { identity, created } = await loadOrCreateIdentity(dir);
  if (created) out.event('identity-created', { dir, uri: identity.uri }, `created the identity ${identity.uri} in ${dir}; the same identity is used whenever --identity ${dir} is given`);
  return identity;
}

/** Exposes the service until a stop signal; returns the exit code. */
export async function exposeCommand(target: string, uri: string | undefined, options: ExposeCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const service = parseServiceAddress(target, 'TARGET');
  if (uri !== undefined) checkNattravUri(uri, 'URI');
  for (const allowed of options.allow ?? []) checkNattravUri(allowed, '--allow');
  const brokerCa = options.brokerCa === undefined ? undefined : await readPem(options.brokerCa, '--broker-ca');
  const route = peerRoute(options, brokerCa, out);
  const identity = await identityFromDir(options.identity, out);
  const ca = options.ca === undefined ? undefined : [await readPem(options.ca, '--ca')];
  const exposer = new Exposer({
    ...route.options,
    broker: route.brokers,
    target: service,
    signal: stop.signal,
    ...(uri === undefined ? {} : { uri }),
    ...(identity === undefined ? {} : { identity }),
    ...(brokerCa === undefined ? {} : { brokerCa }),
    ...(options.keyDir === undefined ? {} : { keyDir: options.keyDir }),
    ...(options.maxConnections === undefined ? {} : { maxConnections: Number(options.maxConnections) }),
    ...(options.maxConnectionsPerPeer === undefined ? {} : { maxConnectionsPerPeer: Number(options.maxConnectionsPerPeer) }),
    ...(options.idleTimeout === undefined ? {} : { idleTimeoutMs: Number(options.idleTimeout) * 1000 }),
    ...(options.allow === undefined ? {} : { allow: options.allow }),
    ...(options.once === true ? { once: true } : {}),
    ...(options.keepalive === undefined ? {} : { keepaliveMs: Number(options.keepalive) }),
    ...(options.keepaliveMax === undefined ? {} : { keepaliveMaxMs: Number(options.keepaliveMax) }),
    ...(options.takeover === true ? { takeover: true } : {}),
    ...(options.portmap === false ? { portmap: false } : {}),
    tls: options.tls === false ? false : { ca: ca ?? [] },
  });
  exposer.on('event', (event: ServiceEvent) => reportServiceEvent(out, event));
  exposer.on('attemptFailed', (err: Error & { code?: string }) => out.event('attempt-failed', { code: err.code ?? 'ERR_UNEXPECTED', message: err.message }, `an incoming attempt failed: ${err.message}`));
  reportRegistration(exposer, options, out);
  let address;
  try {
    address = await exposer.start();
  } catch (err) {
    if (stop.exitCode === undefined) throw err;
    out.event('interrupted', { signal: stop.received }, `interrupted by ${String(stop.received)} while registering`);
    return stop.exitCode;
  }
  const where = formatEndpoint({ address: service.host, port: service.port });
  const tls = options.tls !== false;
  out.result('exposed', { uri: address.uri, target: where, key: address.keyFingerprint, tls }, address.uri);
  // Another process with our key took the URI over (its --takeover): nothing reaches us any more; end with its error (exit 13).
  const ended = await Promise.race([stop.wait(), new Promise<NattravError>((resolve) => exposer.once('takenOver', resolve))]);
  await exposer.close();
  return ended instanceof NattravError ? out.error(ended) : (stop.exitCode as number);
}
