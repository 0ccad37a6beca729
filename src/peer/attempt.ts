/**
 * One attempt, as either peer runs it: the broker exchange (Connect or Join,
 * plus mapping probes), then the strategy the broker chose, under its own time
 * limit, ending with the Hello that proves both ends belong to this attempt.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { toTransportAddress, type HostPort } from '../common/endpoint.js';
import { startPhase } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { StunMessage } from '../wire/message.js';
import type { Dialer } from './dialer.js';
import { runExchange, type ExchangeResult } from './exchange.js';
import { attachInfo, type ConnectionRole, type NattravSocket, type StrategyTrace } from './info.js';
import { helloAsInitiator, helloAsRecipient, initiatorHello } from './hello.js';
import { STRATEGIES } from './strategies/index.js';
import { predictedTargets } from './strategies/predicted.js';
import { relayQuotaOf } from './strategies/relay.js';
import type { SocketBudget } from './strategies/socket-budget.js';
import type { BoundInbound, MappedInbound } from './strategies/types.js';

/** What any attempt needs, stream (TCP, {@link AttemptParams}) or datagram (datagram/attempt.ts). */
export interface BaseAttemptParams {
  readonly broker: HostPort;
  /** The Connect (initiator) or Join (recipient) request (a datagram attempt adds its datagram attributes to it). */
  readonly request: StunMessage;
  readonly attemptId: Uint8Array;
  readonly role: ConnectionRole;
  readonly uri: string;
  readonly signal: AbortSignal;
  readonly exchangeTimeoutMs: number;
  readonly punchTimeoutMs: number;
  /** `performance.now()` when the connection (or channel) was first asked for. */
  readonly started: number;
  /** This attempt's number (1 = the first). */
  readonly attempt: number;
  /** The broker's CA (PEM): exchanges then run over TLS and the broker must prove itself. */
  readonly brokerCa?: string;
  /** The recipient's registration session key (its Join is authenticated with it). */
  readonly sessionKey?: Uint8Array;
  /** How connections to the broker are opened (dialer.ts). @default direct */
  readonly dialer?: Dialer;
  /** Told as soon as the broker has chosen this attempt's strategy, and when it ends. */
  readonly onTrace?: (event: StrategyTrace) => void;
  /** The recipient's shared budget of attempt sockets (strategies/socket-budget.ts; birthday's extra sockets take from it). @default unlimited */
  readonly sockets?: SocketBudget;
}

/** What one (TCP) attempt needs. */
export interface AttemptParams extends BaseAttemptParams {
  /** Strategies tried before this attempt (carried into the connection info). */
  readonly trace: readonly StrategyTrace[];
  /** Whether TLS follows the Hello (announced in it, so a mismatch fails on both sides with a reason). */
  readonly tls: boolean;
  /**
   * Initiator with TLS: whether its TLS check will authenticate the recipient's key for this
   * exchange (a self-certifying URI, a CA, a pinned key, or the broker's PEER-KEY); only then may
   * the Hello ride with the ClientHello unanswered (hello.ts). @default false
   */
  readonly recipientKeyChecked?: (exchange: ExchangeResult) => boolean;
  /**
   * Initiator with TLS: our TLS certificate (DER), for the Hello to carry, so the recipient
   * decides on it before TLS and no confirmation round trip follows (hello.ts); undefined (or
   * none given) runs the Hello without it.
   */
  readonly helloCertificate?: () => Promise<Uint8Array | undefined>;
  /** Initiator: the recipient closed on a Hello that carried our certificate (an older recipient, which does not know it). */
  readonly onCertifiedHelloClosed?: () => void;
  /** The recipient's listener on its gateway-mapped port (path `portmap`), when it holds a mapping. */
  readonly mappedInbound?: MappedInbound;
  /** The recipient's BIND at its SOCKS5 proxy (path `socks5-bind`), when it holds one. */
  readonly boundInbound?: BoundInbound;
  /** The broker's answer already in hand (down a standby, standby.ts): no exchange is run. */
  readonly exchange?: ExchangeResult;
}

/** The key the broker said the other peer registered with, per socket an attempt made (initiator side). */
const brokerKeys = new WeakMap<Socket, string>();

/** The fingerprint of the key the broker holds for the other peer of `socket`'s attempt, if it gave one. */
export function brokerPeerKeyOf(socket: Socket): string | undefined {
  return brokerKeys.get(socket);
}

/** Birthday probing needs SYN retransmissions to meet: give it at least this long, in ms. */
const BIRTHDAY_MIN_MS = 8_000;

/**
 * Listening on a NATed side (public/reversal toward a cone, which works only for a
 * full cone) is a guess: give up soon, in ms, so the next strategy still has time.
 */
const SPECULATIVE_LISTEN_MS = 1_500;

/**
 * A live port mapping connects in one round trip; one that the gateway lost drops the SYN.
 * Past this (two SYN retransmissions) the next strategy gets the time, in ms.
 */
const PORTMAP_MS = 3_500;

/**
 * Through a SOCKS5 BIND: the initiator's connect (two SYN retransmissions if one is lost), the
 * proxy's second reply, then the Hello, every leg one more hop through the proxy, in ms.
 */
const SOCKS5_BIND_MS = 6_000;

/** How long each strategy may take, from the punch limit (listening and relay need no more). */
function strategyTimeoutMs(exchange: ExchangeResult, role: ConnectionRole, punchTimeoutMs: number, exchangeTimeoutMs: number): number {
  const { strategy } = exchange;
  if (strategy === 'birthday') return Math.max(BIRTHDAY_MIN_MS, punchTimeoutMs);
  if (strategy === 'relay') return exchangeTimeoutMs;
  if (strategy === 'portmap') return Math.min(PORTMAP_MS, punchTimeoutMs);
  if (strategy === 'socks5-bind') return SOCKS5_BIND_MS;
  if (strategy === 'public' || strategy === 'reversal') {
    const listenerIsUs = (strategy === 'public') === (role === 'recipient');
    const listenerMapping = listenerIsUs ? exchange.mapping : exchange.peerMapping;
    if (listenerMapping.kind !== 'none') return Math.min(SPECULATIVE_LISTEN_MS, punchTimeoutMs);
  }
  return punchTimeoutMs;
}

/** Runs the attempt's exchange (Connect or Join) under the exchange limit. */
async function exchangeOf(params: AttemptParams): Promise<ExchangeResult> {
  const { role, uri, signal } = params;
  const exchangePhase = startPhase(signal, params.exchangeTimeoutMs, role === 'initiator' ? `asking the broker for ${uri}` : `joining an attempt for ${uri} at the broker`);
  try {
    return await runExchange(params.broker, params.request, { attemptId: params.attemptId, role, ...(params.sessionKey === undefined ? {} : { sessionKey: params.sessionKey }) }, exchangePhase.signal, params.brokerCa, params.dialer).catch((err: unknown) => {
      throw exchangePhase.signal.aborted && !signal.aborted ? exchangePhase.error() : err;
    });
  } finally {
    exchangePhase.dispose();
  }
}

/**
 * Runs one attempt; resolves with the connected socket carrying its info.
 * On failure the error is annotated with the strategy that ran (`strategy` on
 * the thrown object, undefined when the exchange itself failed).
 */
export async function runAttempt(params: AttemptParams): Promise<NattravSocket> {
  const { role, uri, signal } = params;
  const initiator = role === 'initiator';
  const exchange = params.exchange ?? (await exchangeOf(params));
  const strategy = exchange.strategy;
  const strategyStarted = performance.now();
  params.onTrace?.({ attempt: params.attempt, strategy, outcome: 'started', ms: 0 });
  // Predicted towards a cone: one target, dialled one flow at a time, so nothing to tell apart before TLS.
  const singleTarget = strategy === 'predicted' && predictedTargets(exchange.peerPublicEndpoint, exchange.peerMapping).length === 1;
  const hello = initiator ? initiatorHello(params.tls, strategy, params.recipientKeyChecked?.(exchange) ?? false, singleTarget) : undefined;
  const limitMs = strategyTimeoutMs(exchange, role, params.punchTimeoutMs, params.exchangeTimeoutMs);
  const phase = startPhase(signal, limitMs, `connecting ${initiator ? 'to' : 'for'} ${uri} by strategy ${strategy}`);
  let socket: Socket;
  try {
    socket = await STRATEGIES[strategy]({
      role,
      exchange,
      broker: params.broker,
      ...(params.brokerCa === undefined ? {} : { brokerCa: params.brokerCa }),
      ...(params.sockets === undefined ? {} : { sockets: params.sockets }),
      ...(params.dialer === undefined ? {} : { dialer: params.dialer }),
      ...(params.mappedInbound === undefined ? {} : { mappedInbound: params.mappedInbound }),
      ...(params.boundInbound === undefined ? {} : { boundInbound: params.boundInbound }),
      signal: phase.signal,
      verify: (candidate) =>
        hello === undefined
          ? helloAsRecipient(candidate, exchange, phase.signal, params.tls)
          : hello !== 'plain' && params.helloCertificate !== undefined
            ? params.helloCertificate().then((certificate) =>
                helloAsInitiator(candidate, exchange, phase.signal, hello, certificate).catch((err: unknown) => {
                  // Closed on our certified (answered) Hello: an older recipient, which does not know it.
                  if (certificate !== undefined && err instanceof NattravError && err.code === ErrorCode.Closed) params.onCertifiedHelloClosed?.();
                  throw err;
                }),
              )
            : helloAsInitiator(candidate, exchange, phase.signal, hello),
    });
  } catch (err) {
    const failure = { attempt: params.attempt, strategy, outcome: 'failed', ms: Math.round(performance.now() - strategyStarted), error: err instanceof Error ? err.message : String(err) } as const;
    params.onTrace?.(failure);
    throw Object.assign(err instanceof Error ? err : new Error(String(err)), { strategy });
  } finally {
    phase.dispose();
  }
  const success: StrategyTrace = { attempt: params.attempt, strategy, outcome: 'succeeded', ms: Math.round(performance.now() - strategyStarted) };
  params.onTrace?.(success);
  const relayQuota = relayQuotaOf(socket);
  if (exchange.peerKeyFingerprint !== undefined) brokerKeys.set(socket, exchange.peerKeyFingerprint);
  return attachInfo(socket, {
    path: strategy,
    role,
    uri,
    local: toTransportAddress(socket.localAddress ?? '0.0.0.0', socket.localPort ?? 0),
    remote: toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0),
    publicEndpoint: exchange.publicEndpoint,
    peerPrivateEndpoints: exchange.peerPrivateEndpoints,
    setupMs: Math.round(performance.now() - params.started),
    traversalMs: Math.round(performance.now() - params.started),
    attempts: params.attempt,
    attemptId: Buffer.from(exchange.attemptId).toString('hex'),
    trace: [...params.trace, success],
    tls: false,
    ...(relayQuota === undefined ? {} : { relayQuota }),
  });
}
