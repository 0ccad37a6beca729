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

/**
 * Whether an attempt failed because of its broker, not the path: unreachable, or a
 * timeout before any strategy started (a broker that accepts and never answers). The
 * next broker of the list then gets the same attempt.
 */
export function brokerFailed(error: NattravError, strategy: string | undefined): boolean {
  return error.code === ErrorCode.BrokerUnreachable || (error.code === ErrorCode.Timeout && strategy === undefined);
}

/** Where to dial `targets[index]`: by its name (a certificate may name it) unless the name has several addresses (each may be another broker). */
export function dialTo(targets: readonly BrokerTarget[], index: number): HostPort {
  const target = targets[index] as BrokerTarget;
  return targets.filter((t) => t.name === target.name).length > 1 ? dialOf(target) : target.name;
}

/**
 * A recipient's brokers and which one it uses: resolved anew for each sweep over them
 * (the first sweep starts with the first broker, a later one with the broker after the
 * one used last), and the addresses a relayed request's JOIN-AT may name.
 */
export class BrokerList {
  readonly #configured: readonly HostPort[];
  #targets: BrokerTarget[] = [];
  #index = 0;
  #sweeps = 0;

  constructor(configured: readonly HostPort[]) {
    this.#configured = configured;
  }

  /** Every address of every broker, as last resolved. */
  get size(): number {
    return this.#targets.length;
  }

  /** The target in use, once one was chosen. */
  get current(): BrokerTarget | undefined {
    return this.#targets[this.#index];
  }

  /** Where to join attempts of the broker in use (see {@link dialTo}). */
  get joinBroker(): HostPort | undefined {
    return this.current === undefined ? undefined : dialTo(this.#targets, this.#index);
  }

  /**
   * Why a relayed request's JOIN-AT must be refused, or undefined: it may send us only to one
   * of our brokers, or, with a broker CA, to any broker (the Join's TLS then checks that the CA
   * vouches for it); never wherever a forged request points.
   */
  joinAtRefusal(joinAt: TransportAddress | undefined, brokerCa: string | undefined): string | undefined {
    if (joinAt === undefined || brokerCa !== undefined || isTrustedBroker(joinAt, this.#targets)) return undefined;
    return `JOIN-AT ${formatEndpoint(joinAt)} is not one of our brokers`;
  }

  /**
   * One sweep: resolves the brokers again, then runs `register` with each in turn (the first
   * sweep from the first broker, a later one from the broker after the one used last) until
   * one grants it. Only an error `passes` (the broker did not answer) moves on; any other
   * ends the sweep. The last failure says how many brokers were tried.
   */
  async firstAnswering<T>(register: (target: BrokerTarget) => Promise<T>, passes: (err: unknown) => boolean, signal?: AbortSignal): Promise<T> {
    const current = this.current;
    this.#targets = await resolveBrokers(this.#configured, signal);
    signal?.throwIfAborted();
    const count = this.#targets.length;
    const last = current === undefined ? -1 : this.#targets.findIndex((t) => sameAddress(t.address, current.address));
    const start = this.#sweeps++ === 0 || last < 0 ? 0 : (last + 1) % count;
    let lastError: unknown;
    for (let i = 0; i < count; i++) {
      this.#index = (start + i) % count;
      try {
        return await register(this.#targets[this.#index] as BrokerTarget);
      } catch (err) {
        if (!passes(err)) throw err;
        lastError = count > 1 && err instanceof NattravError ? new NattravError(err.code, `${err.message} (tried ${i + 1} of ${count} brokers)`, { cause: err }) : err;
      }
    }
    throw lastError;
  }
}

function sameAddress(a: TransportAddress, b: TransportAddress): boolean {
  return a.address === b.address && a.port === b.port;
}
