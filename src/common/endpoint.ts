/** Parsing and formatting of `host:port` endpoints, and the host's own addresses. */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { ErrorCode, NattravError } from '../errors.js';
import type { TransportAddress } from '../wire/types.js';

/** A host name or IP address and a port. */
export interface HostPort {
  /** Host name or IP address (IPv6 without brackets). */
  readonly host: string;
  /** Port, 1-65535 (0 only where `allowZero`). */
  readonly port: number;
}

/** Validates a port number, naming `what` in the error. */
export function checkPort(port: unknown, what: string, allowZero = false): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `${what}: port must be an integer from ${allowZero ? 0 : 1} to 65535, got ${String(port)}`,
    );
  }
  return port;
}

/**
 * Parses `host:port`, `[v6]:port`, or a bare host when `defaultPort` is given.
 * `what` names the option in the error, e.g. "--broker".
 */
export function parseHostPort(text: string, what: string, defaultPort?: number): HostPort {
  if (typeof text !== 'string' || text.trim() === '') {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: expected HOST:PORT, got an empty value`);
  }
  const value = text.trim();
  let host: string;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d*))?$/.exec(value);
  if (bracket !== null) {
    host = bracket[1] as string;
    portText = bracket[2];
  } else if (value.indexOf(':') !== value.lastIndexOf(':') && isIP(value) === 6) {
    // Only a value with two colons or more can be a bare IPv6 address: HOST:PORT skips
    // Node's IPv6 pattern, whose first use costs 5-15 ms at every CLI start (issue 13).
    host = value;
  } else {
    const colon = value.lastIndexOf(':');
    if (colon === -1) host = value;
    else {
      host = value.slice(0, colon);
      portText = value.slice(colon + 1);
    }
  }
  if (host === '') throw new NattravError(ErrorCode.InvalidArgument, `${what}: missing host in "${value}"`);
  if (portText === undefined || portText === '') {
    if (defaultPort === undefined) {
      throw new NattravError(ErrorCode.InvalidArgument, `${what}: missing port in "${value}" (expected HOST:PORT)`);
    }
    return { host, port: defaultPort };
  }
  if (!/^\d+$/.test(portText)) {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: port "${portText}" in "${value}" is not a number`);
  }
  return { host, port: checkPort(Number(portText), what, true) };
}

/** Accepts `HOST:PORT` text or a {@link HostPort} object to connect to; validates either (port 0 is refused). */
export function toHostPort(value: string | HostPort, what: string, defaultPort?: number): HostPort {
  if (typeof value === 'string') {
    const parsed = parseHostPort(value, what, defaultPort);
    return { host: parsed.host, port: checkPort(parsed.port, what) };
  }
  if (value === null || typeof value !== 'object' || typeof value.host !== 'string' || value.host === '') {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: expected "HOST:PORT" or { host, port }`);
  }
  return { host: value.host, port: checkPort(value.port, what) };
}

/** `1.2.3.4:5` or `[::1]:5`. */
export function formatEndpoint(endpoint: { address: string; port: number }): string {
  return isIP(endpoint.address) === 6 ? `[${endpoint.address}]:${endpoint.port}` : `${endpoint.address}:${endpoint.port}`;
}

/** Builds a {@link TransportAddress} from an IP address and port (IPv4-mapped IPv6 is unwrapped). */
export function toTransportAddress(address: string, port: number): TransportAddress {
  const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  return { family: isIP(plain) === 6 ? 'IPv6' : 'IPv4', address: plain, port };
}

/** Whether two transport addresses are the same IP and port. */
export function sameEndpoint(a: TransportAddress, b: TransportAddress): boolean {
  return a.address === b.address && a.port === b.port;
}

/**
 * The host's own non-loopback addresses of `family`, each with `port`: the
 * "private endpoints" a peer reports. Link-local IPv6 is left out (it needs a scope).
 */
export function localEndpoints(port: number, family: TransportAddress['family'] = 'IPv4'): TransportAddress[] {
  const result: TransportAddress[] = [];
  for (const infos of Object.values(networkInterfaces())) {
    for (const info of infos ?? []) {
      if (info.internal || info.family !== family) continue;
      if (family === 'IPv6' && info.address.toLowerCase().startsWith('fe80')) continue;
      result.push({ family, address: info.address, port });
    }
  }
  return result;
}
