/**
 * Brokers that share a registry (a cluster on one Redis) reach recipients registered
 * through each other. The broker that runs an attempt (X: it holds the initiator's
 * exchange) is often not the one the recipient registered through (Y: its NAT mapping,
 * or its TCP control connection, leads to Y only). So:
 *
 * 1. X builds the ConnectionRequest as for its own recipients (session integrity,
 *    SEQUENCE), with JOIN-AT naming X, and sends it over the bus to Y (the
 *    registration's `broker`), retransmitting as usual (rendezvous.ts).
 * 2. Y checks it: a ConnectionRequest for a live registration that Y took, under that
 *    URI's session key. Then Y sends the bytes, unchanged, to the registered endpoint
 *    only (its UDP mapping, or down its control connection), and notes where the answer
 *    must go (bounded, short-lived).
 * 3. The recipient answers Y (its broker); Y passes the answer, and where it came from,
 *    back to X, which checks it as if it had come to itself.
 * 4. The recipient joins at X (JOIN-AT), if X is a broker it trusts (peer side).
 *
 * A broker drops bus messages it cannot use: a relay request for a URI it does not hold,
 * an answer for an attempt it does not run.
 */
import { sameEndpoint } from '../common/endpoint.js';
import { decodeMessage, verifyMessageIntegritySha256 } from '../wire/codec.js';
import { MessageClass, Method } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { getUri } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import type { BrokerBus } from './bus/bus.js';
import { decodeBusMessage, encodeBusMessage, type RelayRequest } from './bus/bus-messages.js';
import type { Registration, Registry } from './registry/registry.js';
import type { AnswerSource } from './rendezvous.js';

/** Requests relayed for other brokers whose answers are awaited at once (memory bound; the oldest go first). */
export const MAX_RELAYED_REQUESTS = 4_096;
/**
 * How long an answer to a relayed request is passed back, in ms: the attempt waits for its
 * recipient `recipientTimeoutMs` (5 s by default), so 15 s covers it and its retransmissions
 * with room, while the table (MAX_RELAYED_REQUESTS) is not crowded with answers nobody awaits
 * (at 4,096 entries held 15 s, some 270 relays a second before live ones are evicted). A
 * recipient joins over TCP at the attempt's broker either way: a lost answer only lets the
 * request be sent again.
 */
export const RELAYED_REQUEST_TTL_MS = 15_000;

/** What the cluster routing needs from the broker around it. */
export interface ClusterContext {
  readonly bus: BrokerBus;
  readonly registry: Registry;
  /** The session key of `uri`'s registration (undefined in open mode). */
  sessionKeyFor(uri: string): Promise<Buffer | undefined>;
  /** Sends encoded bytes from the broker's primary UDP socket. */
  sendUdp(bytes: Uint8Array, to: TransportAddress): void;
  /** Writes encoded bytes down `uri`'s control connection; false when there is none. */
  sendControl(uri: string, bytes: Uint8Array): boolean;
  /** An answer relayed back by the broker that sent our request (rendezvous.ts acknowledge). */
  acknowledge(response: StunMessage, source: AnswerSource): void;
  /** Milliseconds, for the relayed requests' expiry. */
  now(): number;
  /** Reports a relay request that was dropped, and why (for logs). */
  dropped?(reason: string, from: string): void;
}

interface Relayed {
  /** The broker that asked (the attempt's). */
  readonly to: string;
  readonly source: AnswerSource;
  readonly expiresAt: number;
}

/** One broker's part in cross-broker connection requests. */
export class ClusterRouting {
  readonly #ctx: ClusterContext;
  /** ConnectionRequest transaction ID (hex) -> where its answer goes (insertion order: oldest first). */
  readonly #relayed = new Map<string, Relayed>();

  constructor(ctx: ClusterContext) {
    this.#ctx = ctx;
    ctx.bus.onMessage((message, from) => {
      void this.#receive(message, from).catch(() => undefined); // a registry failure drops the message, as loss would
    });
  }

  /** This broker's bus ID (stored in the registrations it takes). */
  get id(): string {
    return this.#ctx.bus.id;
  }

  /** Requests relayed for other brokers whose answers are still awaited. */
  get relayedRequests(): number {
    return this.#relayed.size;
  }

  /** True when `registration` was taken by another broker of the cluster: its requests go there. */
  isRemote(registration: Registration): boolean {
    return registration.broker !== undefined && registration.broker !== this.#ctx.bus.id;
  }

  /** Step 1: sends an encoded ConnectionRequest to the broker holding `registration`. */
  relay(registration: Registration, stun: Uint8Array): void {
    if (registration.broker === undefined) return;
    this.#ctx.bus.send(registration.broker, encodeBusMessage({ kind: 'relay', uri: registration.uri, stun }));
  }

  /**
   * Step 3: an answer whose transaction this broker's attempts do not know; passed back if we
   * relayed its request. False when this broker relayed no such request (with `--workers`,
   * another worker may have: the answer can land on any of them).
   */
  answered(response: StunMessage, source: AnswerSource): boolean {
    const key = hex(response.transactionId);
    const relayed = this.#relayed.get(key);
    if (relayed === undefined || response.raw === undefined) return false;
    if (relayed.expiresAt <= this.#ctx.now()) {
      this.#relayed.delete(key);
      return true;
    }
    // Only the registered endpoint answers for the recipient (X checks the same again).
    if (source.transport !== relayed.source.transport || !sameEndpoint(source.from, relayed.source.from)) return true;
    this.#relayed.delete(key);
    this.#ctx.bus.send(relayed.to, encodeBusMessage({ kind: 'answer', transport: source.transport, from: source.from, stun: response.raw }));
    return true;
  }

  async #receive(bytes: Uint8Array, from: string): Promise<void> {
    const message = decodeBusMessage(bytes);
    if (message === undefined) return this.#ctx.dropped?.('not a bus message', from);
    let stun: StunMessage;
    try {
      stun = decodeMessage(message.stun);
    } catch {
      return this.#ctx.dropped?.('its STUN part does not decode', from);
    }
    if (message.kind === 'answer') {
      // The rendezvous ignores answers for attempts it does not run.
      if (stun.cls === MessageClass.SuccessResponse || stun.cls === MessageClass.ErrorResponse) this.#ctx.acknowledge(stun, { transport: message.transport, from: message.from });
      return;
    }
    await this.#relayRequest(message, stun, from);
  }

  /** Step 2: checks a relay request, then sends it to the registered endpoint only. */
  async #relayRequest(message: RelayRequest, stun: StunMessage, from: string): Promise<void> {
    if (stun.cls !== MessageClass.Request || stun.method !== Method.ConnectionRequest) return this.#ctx.dropped?.('not a ConnectionRequest', from);
    let uri: string | undefined;
    try {
      uri = getUri(stun);
    } catch {
      uri = undefined;
    }
    if (uri !== message.uri) return this.#ctx.dropped?.('its URI does not match the request', from);
    const registration = await this.#ctx.registry.get(uri);
    if (registration === undefined || registration.broker !== this.#ctx.bus.id) return this.#ctx.dropped?.(`${uri} is not registered through this broker`, from);
    const key = await this.#ctx.sessionKeyFor(uri);
    if (key !== undefined && !verifyMessageIntegritySha256(stun, key)) return this.#ctx.dropped?.(`not under the session of ${uri}`, from);
    const source: AnswerSource = { transport: registration.transport ?? 'udp', from: registration.publicEndpoint };
    this.#remember(hex(stun.transactionId), { to: from, source, expiresAt: this.#ctx.now() + RELAYED_REQUEST_TTL_MS });
    if (source.transport === 'tcp') this.#ctx.sendControl(uri, message.stun);
    else this.#ctx.sendUdp(message.stun, registration.publicEndpoint);
  }

  #remember(key: string, relayed: Relayed): void {
    this.#relayed.delete(key);
    const now = this.#ctx.now();
    for (const [oldest, entry] of this.#relayed) {
      if (entry.expiresAt > now && this.#relayed.size < MAX_RELAYED_REQUESTS) break;
      this.#relayed.delete(oldest);
    }
    this.#relayed.set(key, relayed);
  }
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}
