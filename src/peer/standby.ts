/**
 * The recipient's standby exchange (issue 13, the warm recipient; the broker's side is
 * broker/standby.ts): while the broker grants one (STANDBY-GRANT in the registration's
 * answer), the recipient keeps one TCP connection to it open, from a local port it can
 * punch from (bound with SO_REUSEADDR, as every exchange: dialer.ts), so an attempt for
 * it is answered down that connection the moment the initiator asks:
 *
 * 1. Open a TCP connection to the broker we registered with (STARTTLS with `brokerCa`),
 *    send Standby(URI, private endpoints) under the session key; the answer must carry
 *    integrity under it too.
 * 2. Send the MappingProbe from the standby's local port to the alternate port the answer
 *    names: the broker learns how our NAT maps TCP ahead of any attempt.
 * 3. Answer the broker's StandbyRefresh (its keepalive, which also measures the round
 *    trip); none for 2.5 refresh intervals means the path is gone: open another.
 * 4. StandbyAttempt (under the session key): an attempt's answer, as an exchange's final
 *    answer would carry it. Hand it over to run (the standby's local port is the one to
 *    punch from) and open the next standby at once, off the attempt's critical path.
 *
 * A standby that closes or fails is opened again after a backoff (1 s doubling to 60 s, reset
 * once one lived a refresh interval), never in a tight loop; stop() and close() end it.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { localEndpoints, toTransportAddress, type HostPort } from '../common/endpoint.js';
import { StunChannel } from '../common/stun-channel.js';
import { ErrorCode, NattravError } from '../errors.js';
import { verifyMessageIntegritySha256 } from '../wire/codec.js';
import { AttrType, MAX_PRIVATE_ENDPOINTS, MessageClass, Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addUri, addXorAddress, getAttemptId, getU32Attr, getXorMappedAddress } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { alternatePortOf, learnAlternatePort } from './alternate-port.js';
import { brokerError, openBrokerConnection, readExchangeAnswer, sendMappingProbe, type ExchangeResult } from './exchange.js';

/** Opening a standby is a TCP handshake, maybe STARTTLS, and one round trip; past this it is retried. */
export const STANDBY_OPEN_TIMEOUT_MS = 10_000;
/** The first retry after a failed or dropped standby, in ms; it doubles up to {@link STANDBY_RETRY_MAX_MS}. */
export const STANDBY_RETRY_INITIAL_MS = 1_000;
/** The longest wait between standby tries, in ms. */
export const STANDBY_RETRY_MAX_MS = 60_000;
/** The refresh interval when the broker names none, in ms (broker/standby.ts STANDBY_REFRESH_MS). */
const DEFAULT_REFRESH_MS = 60_000;
/** A standby silent for this many refresh intervals is gone (a NAT or the broker forgot it). */
const SILENCE_FACTOR = 2.5;
/** After handing an attempt over, the standby's socket waits this long for the broker's FIN, in ms (as an exchange's). */
const BROKER_CLOSE_GRACE_MS = 2_000;

/** What a standby reports (ServerOptions: the server emits it as 'standby'). */
export type StandbyEvent =
  /** A standby is open: the broker sees it at `publicEndpoint`; attempts are answered down it. */
  | { readonly type: 'open'; readonly publicEndpoint: TransportAddress; readonly localPort: number }
  /** An attempt came down the standby (no ConnectionRequest, no Join). */
  | { readonly type: 'attempt'; readonly attemptId: string }
  /** A standby failed or closed; the next try comes in `retryMs`. */
  | { readonly type: 'lost'; readonly reason: string; readonly retryMs: number };

/** What a {@link StandbyKeeper} needs. */
export interface StandbyKeeperOptions {
  readonly uri: string;
  /** The broker the registration is held at (where attempts are run): read for each standby. */
  broker(): HostPort | undefined;
  /** The registration's session key: read for each standby (none: no standby). */
  sessionKey(): Buffer | undefined;
  /** The broker's CA (PEM): the standby runs over TLS then, as exchanges do. */
  readonly brokerCa?: string;
  /** An attempt's answer came down the standby: run it (punch from `exchange.localPort`). */
  onAttempt(exchange: ExchangeResult): void;
  /** Progress, for logs. */
  onEvent?(event: StandbyEvent): void;
}

/** Keeps one standby exchange open while started. */
export class StandbyKeeper {
  readonly #options: StandbyKeeperOptions;
  #state: 'stopped' | 'opening' | 'open' | 'waiting' | 'closed' = 'stopped';
  /** Names the current try: a try that finds another one current gives up. */
  #generation = '';
  #channel: StunChannel | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #openedAt = 0;
  #refreshMs = DEFAULT_REFRESH_MS;
  /** Aborted by stop() and close(): the open in flight and the mapping probe. */
  #abort = new AbortController();

  constructor(options: StandbyKeeperOptions) {
    this.#options = options;
  }

  /** 'open' while a standby is held. */
  get state(): 'stopped' | 'opening' | 'open' | 'waiting' | 'closed' {
    return this.#state;
  }

  /** Opens a standby unless one is open or on its way. */
  start(): void {
    if (this.#state !== 'stopped') return;
    this.#abort = new AbortController();
    this.#failures = 0;
    void this.#open();
  }

  /** Closes the standby (the registration lost it, or it was not granted); start() opens another. */
  stop(): void {
    if (this.#state === 'closed') return;
    this.#teardown();
    this.#state = 'stopped';
  }

  /** Closes the standby for good. Idempotent. */
  close(): void {
    this.#teardown();
    this.#state = 'closed';
  }

  #teardown(): void {
    this.#generation = '';
    this.#abort.abort(new NattravError(ErrorCode.Closed, 'the standby was closed'));
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#channel?.destroy();
    this.#channel = undefined;
  }

  /** Steps 1-2. */
  async #open(): Promise<void> {
    const generation = randomUUID();
    this.#generation = generation;
    this.#state = 'opening';
    const broker = this.#options.broker();
    const key = this.#options.sessionKey();
    let socket: Socket | undefined;
    try {
      if (broker === undefined || key === undefined) throw new NattravError(ErrorCode.Closed, 'no registration session to prove');
      const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(STANDBY_OPEN_TIMEOUT_MS)]);
      socket = await openBrokerConnection(broker, signal, this.#options.brokerCa);
      if (this.#generation !== generation) {
        socket.destroy();
        return;
      }
      const local = { localAddress: socket.localAddress ?? '0.0.0.0', localPort: socket.localPort ?? 0 };
      const channel: StunChannel = new StunChannel(socket, (message) => this.#onMessage(channel, message, broker, key, local));
      // Current from now on: the broker's first refresh may come with its answer.
      this.#channel = channel;
      const request = StunMessage.request(Method.Standby);
      addUri(request, this.#options.uri);
      const own = toTransportAddress(local.localAddress, local.localPort);
      const others = localEndpoints(local.localPort, own.family).filter((e) => e.address !== own.address);
      for (const endpoint of [own, ...others].slice(0, MAX_PRIVATE_ENDPOINTS)) addXorAddress(request, AttrType.PrivateEndpoint, endpoint);
      const answer = await channel.request(request, signal, { fingerprint: true, integritySha256Key: key });
      if (answer.cls === MessageClass.ErrorResponse) throw brokerError(answer, broker);
      if (!verifyMessageIntegritySha256(answer, key)) throw new NattravError(ErrorCode.BrokerAuth, 'the answer to our Standby lacks integrity under the session key');
      if (this.#generation !== generation) {
        channel.destroy();
        return;
      }
      this.#state = 'open';
      this.#openedAt = Date.now();
      this.#refreshMs = getU32Attr(answer, AttrType.StandbyRefreshMs) ?? DEFAULT_REFRESH_MS;
      this.#watch(channel);
      void channel.closed.then(() => this.#lost(channel, 'the broker closed it'));
      // Step 2: the broker measures our NAT from the standby's own local port.
      learnAlternatePort(broker, answer);
      const probeId = getAttemptId(answer);
      if (probeId !== undefined) {
        void sendMappingProbe(broker, alternatePortOf(broker), { address: local.localAddress, port: local.localPort }, { attemptId: probeId, role: 'recipient' }, key, this.#abort.signal);
      }
      const publicEndpoint = getXorMappedAddress(answer);
      if (publicEndpoint !== undefined) this.#options.onEvent?.({ type: 'open', publicEndpoint, localPort: local.localPort });
    } catch (err) {
      socket?.destroy();
      if (this.#generation !== generation) return;
      this.#channel = undefined;
      this.#retry(err instanceof Error ? err.message : String(err));
    }
  }

  /** Steps 3-4: the broker's requests down the standby. */
  #onMessage(channel: StunChannel, message: StunMessage, broker: HostPort, key: Buffer, local: { localAddress: string; localPort: number }): void {
    if (message.cls !== MessageClass.Request || channel !== this.#channel) return;
    if (message.method === Method.StandbyRefresh) {
      channel.send(message.successResponse(), { fingerprint: true });
      this.#watch(channel);
      return;
    }
    if (message.method !== Method.StandbyAttempt) return;
    let exchange: ExchangeResult;
    try {
      if (!verifyMessageIntegritySha256(message, key)) throw new NattravError(ErrorCode.BrokerAuth, 'an attempt down the standby lacks integrity under the session key');
      exchange = readExchangeAnswer(message, broker, { role: 'recipient', sessionKey: key }, undefined, local);
    } catch (err) {
      channel.destroy();
      this.#lost(channel, err instanceof Error ? err.message : String(err));
      return;
    }
    // The standby is spent: the attempt punches from its port; the broker closes first.
    this.#channel = undefined;
    clearTimeout(this.#timer);
    setTimeout(() => channel.destroy(), BROKER_CLOSE_GRACE_MS).unref();
    this.#failures = 0;
    this.#options.onEvent?.({ type: 'attempt', attemptId: Buffer.from(exchange.attemptId).toString('hex') });
    this.#options.onAttempt(exchange);
    // The next standby, off the attempt's critical path.
    setImmediate(() => {
      if (this.#state === 'open' && this.#channel === undefined) void this.#open();
    });
  }

  /** Arms the silence watchdog of `channel`. */
  #watch(channel: StunChannel): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      channel.destroy();
      this.#lost(channel, `no refresh from the broker for ${Math.round((this.#refreshMs * SILENCE_FACTOR) / 1000)} s`);
    }, this.#refreshMs * SILENCE_FACTOR);
    this.#timer.unref();
  }

  #lost(channel: StunChannel, reason: string): void {
    if (channel !== this.#channel) return;
    this.#channel = undefined;
    // One that lived a refresh interval was fine: start the backoff again.
    if (Date.now() - this.#openedAt >= this.#refreshMs) this.#failures = 0;
    this.#retry(reason);
  }

  /** Opens the next standby after the backoff. */
  #retry(reason: string): void {
    if (this.#state === 'stopped' || this.#state === 'closed') return;
    const retryMs = Math.min(STANDBY_RETRY_MAX_MS, STANDBY_RETRY_INITIAL_MS * 2 ** this.#failures);
    this.#failures = Math.min(this.#failures + 1, 16);
    this.#state = 'waiting';
    this.#generation = '';
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#open(), retryMs);
    this.#timer.unref();
    this.#options.onEvent?.({ type: 'lost', reason, retryMs });
  }
}

/** What {@link keepStandby} reads of a registration (registration.ts PeerRegistration). */
export interface StandbyRegistration {
  readonly joinBroker: HostPort | undefined;
  readonly sessionKey: Buffer | undefined;
  on(event: 'registered', listener: (event: { readonly standby?: boolean; readonly transport: 'udp' | 'tcp' }) => void): unknown;
  on(event: 'lost', listener: () => void): unknown;
  on(event: 'moved', listener: () => void): unknown;
}

/** A {@link StandbyKeeper} following a registration ({@link keepStandby}). */
export interface KeptStandby {
  readonly keeper: StandbyKeeper;
  /** Asks `busy()` again: the standby closes while busy and opens again when not (if still granted). */
  recheck(): void;
}

/**
 * A {@link StandbyKeeper} that follows `registration`: a standby while the broker grants one
 * over UDP (each 'registered' says), `direct()` says our connections to the broker are plain
 * TCP (not through a proxy or tunnel) and `busy()` does not (a recipient that would refuse an
 * attempt holds no standby: the broker then takes the ConnectionRequest path, whose refusal
 * reaches the initiator at once); none after a loss until the next grant; a new one after a
 * move (the old one's path is gone).
 */
export function keepStandby(
  registration: StandbyRegistration,
  options: Omit<StandbyKeeperOptions, 'broker' | 'sessionKey'> & { direct(): boolean; busy?(): boolean },
): KeptStandby {
  const keeper = new StandbyKeeper({ ...options, broker: () => registration.joinBroker, sessionKey: () => registration.sessionKey });
  let granted = false;
  const recheck = (): void => {
    if (granted && options.busy?.() !== true) keeper.start();
    else keeper.stop();
  };
  registration.on('registered', (event) => {
    granted = event.standby === true && event.transport === 'udp' && options.direct();
    recheck();
  });
  registration.on('lost', () => {
    granted = false;
    recheck();
  });
  // Moved: the standby's path (its local address, its NAT's mapping) is the old one; open it anew.
  registration.on('moved', () => {
    if (keeper.state === 'stopped' || keeper.state === 'closed') return;
    keeper.stop();
    recheck();
  });
  return { keeper, recheck };
}
