/**
 * Several brokers per peer (a cluster sharing one registry): the list a peer is given,
 * each name resolved to every address it has (a DNS name with several addresses counts
 * as several brokers), and which of them a recipient may be sent to by a relayed
 * connection request (JOIN-AT).
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { formatEndpoint, toHostPort, toTransportAddress, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { TransportAddress } from '../wire/types.js';
import { DEFAULT_BROKER_PORT, type BrokerAddress } from './options.js';

/** Brokers one peer may be given (a cluster is a handful; a list of thousands is a mistake). */
export const MAX_BROKERS = 32;

/** One broker address as resolved: the name it was configured with (for TLS and messages) and one of its IP addresses. */
export interface BrokerTarget {
  /** As configured (a certificate may name this host). */
  readonly name: HostPort;
  /** One address of it. */
  readonly address: TransportAddress;
}

/**
 * The `broker` option checked: one address, or a non-empty list of them, in order of
 * preference. Throws ERR_INVALID_ARGUMENT naming the bad entry.
 */
export function toBrokerList(value: BrokerAddress | readonly BrokerAddress[] | undefined, what = 'broker'): HostPort[] {
  if (Array.isArray(value)) {
    if (value.length === 0) throw new NattravError(ErrorCode.InvalidArgument, `${what}: expected at least one broker address ("HOST:PORT")`);
    if (value.length > MAX_BROKERS) throw new NattravError(ErrorCode.InvalidArgument, `${what}: at most ${MAX_BROKERS} brokers, got ${value.length}`);
    return value.map((entry: BrokerAddress, i: number) => toHostPort(entry, `${what}[${i}]`, DEFAULT_BROKER_PORT));
  }
  if (value === undefined) throw new NattravError(ErrorCode.InvalidArgument, `${what}: expected a broker address ("HOST:PORT") or a list of them`);
  return [toHostPort(value as BrokerAddress, what, DEFAULT_BROKER_PORT)];
}

/**
 * A comma-separated list of broker addresses (`--broker A,B,C`), checked as
 * {@link toBrokerList} does; an empty entry is an error naming `what`.
 */
export function parseBrokerList(text: string, what = 'broker'): HostPort[] {
  const entries = text.split(',').map((entry) => entry.trim());
  if (entries.some((entry) => entry === '')) {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: an empty entry in ${JSON.stringify(text)}; pass HOST:PORT, or several as HOST:PORT,HOST:PORT`);
  }
  return entries.length === 1 ? toBrokerList(entries[0], what) : toBrokerList(entries, what);
}

/** The HostPort to dial for `target` (its address, so that a name with several addresses is not resolved again). */
export function dialOf(target: BrokerTarget): HostPort {
  return { host: target.address.address, port: target.address.port };
}

/** `target` for messages: `name (address)` when the name is not the address. */
export function describeTarget(target: BrokerTarget): string {
  const address = formatEndpoint(target.address);
  return isIP(target.name.host) !== 0 ? address : `${target.name.host}:${target.name.port} (${address})`;
}

/**
 * Every address of every broker, in the order given (a name's addresses in the order the
 * resolver gives them, duplicates dropped). A name that does not resolve is left out;
 * when none resolves, throws ERR_BROKER_UNREACHABLE naming them.
 */
export async function resolveBrokers(brokers: readonly HostPort[], signal?: AbortSignal): Promise<BrokerTarget[]> {
  const resolved = await Promise.all(
    brokers.map(async (name) => {
      if (isIP(name.host) !== 0) return [{ name, address: toTransportAddress(name.host, name.port) }];
      try {
        const addresses = await lookup(name.host, { all: true });
        return addresses.map(({ address }) => ({ name, address: toTransportAddress(address, name.port) }));
      } catch {
        return [];
      }
    }),
  );
  signal?.throwIfAborted();
  const seen = new Set<string>();
  const targets = resolved.flat().filter((target) => {
    const key = formatEndpoint(target.address);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  if (targets.length === 0) {
    throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: cannot resolve ${brokers.map((b) => b.host).join(', ')}`);
  }
  return targets;
}

/** Whether `joinAt` (JOIN-AT of a relayed connection request) is one of `trusted` (our brokers' addresses). */
export function isTrustedBroker(joinAt: TransportAddress, trusted: readonly BrokerTarget[]): boolean {
  return trusted.some((target) => target.address.port === joinAt.port && target.address.address === joinAt.address);
}
