/**
 * Where a peer sends its mapping probes: the alternate port each broker announced
 * (ALTERNATE-PORT in its registration answers, round-trip probes and final answers),
 * by "host:port"; before a broker announced one, its port + 1 (RFC 5780's usual layout).
 */
import type { HostPort } from '../common/endpoint.js';
import { AttrType } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { getU32Attr } from '../wire/nattrav.js';

/** The alternate port each broker announced by "host:port"; bounded. */
const alternatePorts = new Map<string, number>();
/** Brokers remembered at most (a peer talks to a handful). */
const MAX_REMEMBERED_BROKERS = 64;

/** Remembers the alternate port `broker` announced. */
export function rememberAlternatePort(broker: HostPort, port: number): void {
  const key = `${broker.host}:${broker.port}`;
  alternatePorts.delete(key);
  if (alternatePorts.size >= MAX_REMEMBERED_BROKERS) alternatePorts.delete(alternatePorts.keys().next().value as string);
  alternatePorts.set(key, port);
}

/** Where mapping probes to `broker` go: the port it announced, or (before it announced one) its port + 1. */
export function alternatePortOf(broker: HostPort): number {
  return alternatePorts.get(`${broker.host}:${broker.port}`) ?? broker.port + 1;
}

/** True when `broker` has announced its alternate port to us (else {@link alternatePortOf} is a guess). */
export function knowsAlternatePort(broker: HostPort): boolean {
  return alternatePorts.has(`${broker.host}:${broker.port}`);
}

/** Remembers the alternate port `message` from `broker` announces (ALTERNATE-PORT), if it has a valid one; returns it. */
export function learnAlternatePort(broker: HostPort, message: StunMessage): number | undefined {
  const port = getU32Attr(message, AttrType.AlternatePort);
  if (port === undefined || port <= 0 || port > 65_535) return undefined;
  rememberAlternatePort(broker, port);
  return port;
}
