/**
 * `nattrav forward URI --listen [HOST:]PORT`: parse, call the library's forward, print.
 * The address it listens on is the result (stdout); progress and the per-connection log
 * go to stderr.
 */
import { Forwarder, checkNattravUri, formatEndpoint, parseServiceAddress, type ServiceEvent } from '../index.js';
import { identityFromDir } from './expose.js';
import type { Reporter } from './output.js';
import { readPem } from './pem.js';
import { reportServiceEvent } from './service-log.js';
import type { StopSignals } from './signals.js';
import { peerRoute, type RouteCommandOptions } from './web.js';

/** Options of `nattrav forward`. */
export interface ForwardCommandOptions extends RouteCommandOptions {
  listen: string;
  tls?: boolean;
  identity?: string;
  ca?: string;
  brokerCa?: string;
  expectKey?: string;
  acceptNewKey?: boolean;
  knownKeys?: string;
  timeout?: string;
  maxConnections?: string;
  /** Close connections idle this many seconds. */
  idleTimeout?: string;
}

/** Forwards until a stop signal; returns the exit code. */
export async function forwardCommand(uri: string, options: ForwardCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  checkNattravUri(uri, 'URI');
  const listen = parseServiceAddress(options.listen, '--listen', true);
  const brokerCa = options.brokerCa === undefined ? undefined : await readPem(options.brokerCa, '--broker-ca');
  const route = peerRoute(options, brokerCa, out);
  const identity = await identityFromDir(options.identity, out);
  const ca = options.ca === undefined ? undefined : [await readPem(options.ca, '--ca')];
  const forwarder = new Forwarder({
    ...route.options,
    broker: route.brokers,
    uri,
    listen,
    signal: stop.signal,
    tls: options.tls === false ? false : { ca: ca ?? [], ...(identity === undefined ? {} : { identity }) },
    ...(brokerCa === undefined ? {} : { brokerCa }),
    ...(options.expectKey === undefined ? {} : { expectKey: options.expectKey }),
    ...(options.acceptNewKey === true ? { acceptChangedKey: true } : {}),
    ...(options.knownKeys === undefined ? {} : { knownKeysFile: options.knownKeys }),
    ...(options.timeout === undefined ? {} : { timeoutMs: Number(options.timeout) }),
    ...(options.maxConnections === undefined ? {} : { maxConnections: Number(options.maxConnections) }),
    ...(options.idleTimeout === undefined ? {} : { idleTimeoutMs: Number(options.idleTimeout) * 1000 }),
  });
  forwarder.on('event', (event: ServiceEvent) => reportServiceEvent(out, event));
  let address;
  try {
    address = await forwarder.start();
  } catch (err) {
    if (stop.exitCode === undefined) throw err;
    return stop.exitCode;
  }
  const where = formatEndpoint({ address: address.host, port: address.port });
  const fields = { listen: where, uri, tls: options.tls !== false, ...(identity === undefined ? {} : { identity: identity.uri }) };
  out.event('forwarding', fields, `forwarding ${where} to ${uri}${identity === undefined ? '' : ` as ${identity.uri}`}${options.tls === false ? ' (no TLS: connections are not authenticated)' : ''}`);
  out.result('forwarding', fields, where);
  await stop.wait();
  await forwarder.close();
  return stop.exitCode as number;
}
