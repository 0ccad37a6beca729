/**
 * A dual-stack recipient's second address family. The registration (registration.ts) holds
 * the URI over one family, the first its broker list resolves to; this registers the other
 * family too, under the same session, instance and key: after each registration or refresh
 * of the first, one refresh with SECOND-FAMILY goes from a UDP socket of the other family to
 * the broker's address in it (announced as OTHER-FAMILY-BROKER, or another address of our
 * broker list in that family). The broker keeps it next to the first (it is not a move and
 * not another instance), and a Connect arriving in that family reaches us on this socket;
 * we then join the attempt there, in that family (PeerRegistration.receive).
 *
 * The first family never waits for the second: the second's refresh starts only once the
 * first's is done, and a failed one (no route, a firewall) is retried with backoff on its
 * own, while the first goes on as if it did not exist.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { networkInterfaces } from 'node:os';
import { debuglog } from 'node:util';
import { localEndpoints, toTransportAddress, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { decodeDatagram, encodeMessage } from '../wire/codec.js';
import { AttrType, MessageClass, Method } from '../wire/constants.js';
import { addSecondFamily } from '../wire/family.js';
import { StunMessage } from '../wire/message.js';
import { addU32, addUri, addXorAddress, getXorMappedAddress } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { backoffDelayMs, type BackoffPolicy } from './backoff.js';
import { resolveBrokers } from './brokers.js';
import { refreshUnderSession } from './register-proof.js';
import type { PeerRegistration, RegisteredEvent } from './registration.js';
import { UdpTransactions } from './udp-transactions.js';
import { bindEphemeral, closeQuietly } from './withdrawal.js';

/** NODE_DEBUG=nattrav:family: each registration of the second family, and why one failed. */
const debug = debuglog('nattrav:family');

/** Retries of a failed second family: from 1 s, doubling, to at most the keepalive interval. */
export const SECOND_FAMILY_BACKOFF: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000, jitter: 0.3 };

/** Options of {@link SecondFamilyRegistration}. */
export interface SecondFamilyOptions {
  /** The registration of the first family, whose session, instance and key this shares. */
  readonly registration: PeerRegistration;
  readonly uri: string;
  /** The brokers as configured (another address of theirs in the other family is a place to register). */
  readonly brokers: readonly HostPort[];
  /** How long one refresh may take, in ms (retransmissions included). */
  readonly registerTimeoutMs: number;
  /** @default {@link SECOND_FAMILY_BACKOFF} */
  readonly backoff?: BackoffPolicy;
  /** Whether this host can use `family` towards `broker`. @default {@link hasUsableAddress} */
  readonly usable?: (family: TransportAddress['family'], broker: TransportAddress) => boolean;
}

/** What 'registered' reports. */
export interface SecondFamilyRegistered {
  /** Our endpoint of the second family, as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  /** The broker address it registered at. */
  readonly broker: TransportAddress;
}

/**
 * Whether this host has an address of `family` that can reach `broker`: always towards a
 * loopback broker (tests); otherwise an IPv6 global unicast address (2000::/3: not link-local,
 * not unique-local) or any non-loopback IPv4 address.
 */
export function hasUsableAddress(family: TransportAddress['family'], broker: TransportAddress): boolean {
  if (broker.address === '::1' || broker.address.startsWith('127.')) return true;
  return Object.values(networkInterfaces()).some((infos) =>
    (infos ?? []).some((info) => !info.internal && info.family === family && (family === 'IPv4' || /^[23]/.test(info.address))),
  );
}

/**
 * Emits 'registered' (SecondFamilyRegistered) on each success and 'failed' (NattravError) on
 * each failure, which is retried with backoff. Never throws into the first family's loop.
 */
export class SecondFamilyRegistration extends EventEmitter {
  readonly #options: SecondFamilyOptions;
  readonly #udp = new UdpTransactions();
  readonly #closing = new AbortController();
  #socket: UdpSocket | undefined;
  #broker: TransportAddress | undefined;
  #inflight = false;
  #failures = 0;
  #retry: NodeJS.Timeout | undefined;
  #last: RegisteredEvent | undefined;
  readonly #onRegistered = (event: RegisteredEvent): void => {
    this.#last = event;
    void this.#refresh();
  };

  constructor(options: SecondFamilyOptions) {
    super();
    this.#options = options;
    options.registration.on('registered', this.#onRegistered);
  }

  /** The broker address our second family registers at, once one was found. */
  get broker(): TransportAddress | undefined {
    return this.#broker;
  }

  /** Stops: no more refreshes, the socket closed (the first family's withdrawal removes the second with it). Idempotent. */
  close(): void {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort(new NattravError(ErrorCode.Closed, 'the registration was closed'));
    this.#options.registration.off('registered', this.#onRegistered);
    clearTimeout(this.#retry);
    closeQuietly(this.#socket);
    this.#socket = undefined;
  }

  /** One refresh of the second family after the first's, unless one is in flight; a failure schedules a retry. */
  async #refresh(): Promise<void> {
    const first = this.#last;
    const session = this.#options.registration.session;
    if (this.#inflight || this.#closing.signal.aborted || first === undefined || first.transport !== 'udp' || session === undefined) return;
    this.#inflight = true;
    clearTimeout(this.#retry);
    try {
      const broker = await this.#target(first);
      if (broker === undefined) return;
      const socket = await this.#open(broker);
      const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(this.#options.registerTimeoutMs)]);
      const base = (): StunMessage => {
        const request = StunMessage.request(Method.Register);
        addUri(request, this.#options.uri);
        addU32(request, AttrType.Lifetime, first.lifetimeMs);
        for (const endpoint of localEndpoints(socket.address().port, broker.family)) addXorAddress(request, AttrType.PrivateEndpoint, endpoint);
        return addSecondFamily(request);
      };
      const transact = (request: StunMessage, options = {}): Promise<StunMessage> => this.#udp.request(socket, broker, request, signal, options);
      const response = await refreshUnderSession(transact, base, session, this.#options.uri);
      const publicEndpoint = response === undefined ? undefined : getXorMappedAddress(response);
      if (publicEndpoint === undefined) throw new NattravError(ErrorCode.BrokerError, `the broker did not take our ${broker.family} registration (no session or no mapped address)`);
      this.#failures = 0;
      debug('%s: registered over %s at %s as %s', this.#options.uri, broker.family, broker.address, publicEndpoint.address);
      this.emit('registered', { publicEndpoint, broker } satisfies SecondFamilyRegistered);
    } catch (err) {
      if (this.#closing.signal.aborted) return;
      const error = isNattravError(err) ? err : new NattravError(ErrorCode.BrokerUnreachable, `second family: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      this.#failures++;
      debug('%s: second family failed (%d in a row): %s', this.#options.uri, this.#failures, error.message);
      this.emit('failed', error);
      const policy = this.#options.backoff ?? SECOND_FAMILY_BACKOFF;
      this.#retry = setTimeout(() => void this.#refresh(), backoffDelayMs(policy, this.#failures, Math.random));
      this.#retry.unref();
    } finally {
      this.#inflight = false;
    }
  }

  /**
   * Where the second family registers: the broker's announced address of the other family, else
   * an address of our configured brokers in it; undefined when there is none or this host cannot
   * use that family.
   */
  async #target(first: RegisteredEvent): Promise<TransportAddress | undefined> {
    const family = first.brokerAddress.family === 'IPv4' ? 'IPv6' : 'IPv4';
    let broker = first.otherFamilyBroker?.family === family ? first.otherFamilyBroker : undefined;
    if (broker === undefined) {
      const targets = await resolveBrokers(this.#options.brokers, this.#closing.signal).catch(() => []);
      broker = targets.find((t) => t.address.family === family)?.address;
    }
    if (broker === undefined || !(this.#options.usable ?? hasUsableAddress)(family, broker)) return undefined;
    return broker;
  }

  /** Our socket of `broker`'s family, bound once (a new broker address gets a new socket). */
  async #open(broker: TransportAddress): Promise<UdpSocket> {
    if (this.#socket !== undefined && this.#broker?.address === broker.address && this.#broker.port === broker.port) return this.#socket;
    closeQuietly(this.#socket);
    const socket = createSocket({ type: broker.family === 'IPv6' ? 'udp6' : 'udp4' });
    socket.on('error', () => undefined);
    socket.on('message', (data, rinfo) => this.#onMessage(data, toTransportAddress(rinfo.address, rinfo.port)));
    this.#socket = socket;
    this.#broker = broker;
    await bindEphemeral(socket, this.#closing.signal);
    return socket;
  }

  /** Only the broker may talk here: answers go to the refresh waiting, requests to the registration. */
  #onMessage(data: Buffer, from: TransportAddress): void {
    const broker = this.#broker;
    if (broker === undefined || from.address !== broker.address || from.port !== broker.port) return;
    const message = decodeDatagram(data);
    if (message === undefined) return;
    if (message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse) {
      this.#udp.deliver(message);
      return;
    }
    this.#options.registration.receive(message, (response, options) => this.#socket?.send(encodeMessage(response, options), broker.port, broker.address, () => undefined), broker);
  }
}

/**
 * A server's second family: {@link SecondFamilyRegistration} for `registration`, its events passed
 * on to `emit` as 'secondFamilyRegistered' (SecondFamilyRegistered) and 'secondFamilyFailed' (NattravError).
 */
export function secondFamilyOf(
  registration: PeerRegistration,
  uri: string,
  brokers: readonly HostPort[],
  registerTimeoutMs: number,
  emit: (event: string, payload: unknown) => void,
): SecondFamilyRegistration {
  const second = new SecondFamilyRegistration({ registration, uri, brokers, registerTimeoutMs });
  second.on('registered', (event: SecondFamilyRegistered) => emit('secondFamilyRegistered', event));
  second.on('failed', (error: NattravError) => emit('secondFamilyFailed', error));
  return second;
}
