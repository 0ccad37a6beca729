/**
 * One datagram attempt, as either peer runs it (peer/attempt.ts is the TCP one):
 *
 * 1. Bind a UDP socket and send STUN Bindings from it to the broker's primary and
 *    alternate UDP ports: the two mappings tell the broker where the socket is and how
 *    our NAT maps UDP. This socket is the one that punches, so the mapping the broker
 *    saw is the one the other peer aims at.
 * 2. Run the broker exchange (Connect or Join) with TRANSPORT = datagram and those facts.
 * 3. Run the strategy the broker chose: `relay` opens the broker's relay and carries the
 *    channel over it; `birthday` probes from many sockets or to many ports (birthday.ts);
 *    every other strategy starts PROBEs from the UDP socket to the candidates it names,
 *    after the start delay, until the channel opens (channel.ts).
 */
import type { Socket as UdpSocket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import type { HostPort } from '../../common/endpoint.js';
import { isPrivateAddress } from '../../common/private-address.js';
import { sleep, startPhase } from '../../common/signal.js';
import { ErrorCode, NattravError } from '../../errors.js';
import type { StrategyName } from '../../nat/strategy.js';
import { decodeDatagram } from '../../wire/codec.js';
import { AttrType, MAX_PRIVATE_ENDPOINTS, Method, TransportCode } from '../../wire/constants.js';
import { StunMessage } from '../../wire/message.js';
import { addU32, addXorAddress, getXorMappedAddress } from '../../wire/nattrav.js';
import type { TransportAddress } from '../../wire/types.js';
import { alternatePortOf } from '../alternate-port.js';
import type { Dialer } from '../dialer.js';
import type { BaseAttemptParams } from '../attempt.js';
import { runExchange, type ExchangeResult } from '../exchange.js';
import type { ConnectionRole, StrategyTrace } from '../info.js';
import { relay } from '../strategies/relay.js';
import { UdpTransactions } from '../udp-transactions.js';
import { DatagramChannel, type DatagramEndpoint, type DatagramTransport } from './channel.js';
import { bindUdpSocket, RelayTransport, UdpTransport } from './transports.js';
import { birthdayPorts, birthdaySockets, MultiUdpTransport } from './birthday.js';
import type { SocketBudget } from '../strategies/socket-budget.js';

/** A Binding to the broker is one UDP round trip, retransmitted; past this the mapping is left out (the broker then plans the relay), in ms. */
export const UDP_MAPPING_TIMEOUT_MS = 2_000;
/** Ports past the last one a sequential NAT gave out that prediction aims at. */
export const PREDICTION_WINDOW = 8;

/** What one datagram attempt needs. */
export interface DatagramAttemptParams extends BaseAttemptParams {
  /** Keepalive interval of the channel, in ms. @default DATAGRAM_KEEPALIVE_MS */
  readonly keepaliveMs?: number;
  /** Binds the attempt's UDP socket for the broker's host (step 1; tests make it fail). @default bindUdpSocket */
  readonly bindSocket?: (host: string) => Promise<UdpSocket>;
}

/** Step 1: our UDP socket's mappings at the broker's primary and alternate ports (each undefined when its Binding got no answer). */
export async function learnUdpMappings(socket: UdpSocket, broker: HostPort, signal: AbortSignal): Promise<{ mapped?: TransportAddress; alternate?: TransportAddress }> {
  const transactions = new UdpTransactions();
  const onMessage = (data: Buffer): void => {
    const message = decodeDatagram(data);
    if (message !== undefined) transactions.deliver(message);
  };
  socket.on('message', onMessage);
  const limit = AbortSignal.any([signal, AbortSignal.timeout(UDP_MAPPING_TIMEOUT_MS)]);
  const bind = async (port: number): Promise<TransportAddress | undefined> => {
    try {
      return getXorMappedAddress(await transactions.request(socket, { family: broker.host.includes(':') ? 'IPv6' : 'IPv4', address: broker.host, port }, StunMessage.request(Method.Binding), limit));
    } catch {
      return undefined;
    }
  };
  try {
    const [mapped, alternate] = await Promise.all([bind(broker.port), bind(alternatePortOf(broker))]);
    return { ...(mapped === undefined ? {} : { mapped }), ...(alternate === undefined ? {} : { alternate }) };
  } finally {
    socket.off('message', onMessage);
  }
}

/** Where PROBEs go for `strategy` (step 3): the peer's private endpoints on one LAN, its next ports for prediction, else its public endpoint. */
export function datagramCandidates(strategy: StrategyName, exchange: Pick<ExchangeResult, 'peerPublicEndpoint' | 'peerPrivateEndpoints' | 'peerMapping'>): DatagramEndpoint[] {
  const peer = exchange.peerPublicEndpoint;
  const family = peer.family;
  const endpoints: TransportAddress[] = [peer];
  // LAN addresses only (a peer's list must not aim our probes at public hosts), as many as the TCP path takes.
  if (strategy === 'lan') endpoints.unshift(...exchange.peerPrivateEndpoints.filter((e) => e.family === family && e.port > 0 && isPrivateAddress(e.address)).slice(0, MAX_PRIVATE_ENDPOINTS));
  if (strategy === 'predicted' && exchange.peerMapping.kind === 'sequential') {
    for (let k = 1; k <= PREDICTION_WINDOW; k++) {
      const port = peer.port + k * exchange.peerMapping.step;
      if (port <= 65_535) endpoints.push({ ...peer, port });
    }
  }
  const seen = new Set<string>();
  return endpoints.filter((e) => !seen.has(`${e.address}:${e.port}`) && seen.add(`${e.address}:${e.port}`) !== undefined).map((e) => ({ address: e.address, port: e.port, family: e.family }));
}

/** Runs one datagram attempt; resolves with the open channel. A failure carries the strategy that ran (`strategy`, undefined when the exchange failed). */
export async function runDatagramAttempt(params: DatagramAttemptParams): Promise<DatagramChannel> {
  const { role, signal } = params;
  const exchangePhase = startPhase(signal, params.exchangeTimeoutMs, role === 'initiator' ? `asking the broker for a datagram channel to ${params.uri}` : `joining a datagram attempt for ${params.uri} at the broker`);
  let socket: UdpSocket | undefined;
  let exchange: ExchangeResult;
  try {
    // Inside the try: a failed bind must end the exchange phase's timer too.
    socket = await (params.bindSocket ?? bindUdpSocket)(params.broker.host);
    const mappings = await learnUdpMappings(socket, params.broker, exchangePhase.signal);
    addU32(params.request, AttrType.Transport, TransportCode.datagram);
    addU32(params.request, AttrType.UdpPort, socket.address().port);
    if (mappings.mapped !== undefined) addXorAddress(params.request, AttrType.UdpMapped, mappings.mapped);
    if (mappings.alternate !== undefined) addXorAddress(params.request, AttrType.UdpMappedAlternate, mappings.alternate);
    const identity = { attemptId: params.attemptId, role, ...(params.sessionKey === undefined ? {} : { sessionKey: params.sessionKey }) };
    exchange = await runExchange(params.broker, params.request, identity, exchangePhase.signal, params.brokerCa, params.dialer).catch((err: unknown) => {
      throw exchangePhase.signal.aborted && !signal.aborted ? exchangePhase.error() : err;
    });
    if (exchange.datagram !== true) {
      throw new NattravError(ErrorCode.BrokerError, 'the broker does not offer datagram channels (it scheduled a TCP stream: it is older than this peer)');
    }
  } catch (err) {
    if (socket !== undefined) closeQuietly(socket);
    throw err;
  } finally {
    exchangePhase.dispose();
  }
  const strategy = exchange.strategy;
  const strategyStarted = performance.now();
  params.onTrace?.({ attempt: params.attempt, strategy, outcome: 'started', ms: 0 });
  const phase = startPhase(signal, strategy === 'relay' ? params.exchangeTimeoutMs : params.punchTimeoutMs, `opening a datagram channel ${role === 'initiator' ? 'to' : 'for'} ${params.uri} by strategy ${strategy}`);
  let channel: DatagramChannel | undefined;
  let releaseSockets = (): void => undefined;
  try {
    let transport: DatagramTransport;
    let candidates: DatagramEndpoint[] | (() => DatagramEndpoint[]);
    if (strategy === 'birthday' && exchange.mapping.kind === 'random') {
      const many = await birthdaySockets(socket, params.broker.host, params.sockets);
      releaseSockets = many.release;
      transport = new MultiUdpTransport(many.sockets);
      candidates = datagramCandidates(strategy, exchange);
    } else if (strategy === 'birthday') {
      transport = new UdpTransport(socket);
      candidates = birthdayPorts(datagramCandidates(strategy, exchange)[0] as DatagramEndpoint);
    } else if (strategy === 'relay') {
      closeQuietly(socket);
      const relayed = await relay({ role, exchange, broker: params.broker, signal: phase.signal, verify: async () => undefined, ...(params.brokerCa === undefined ? {} : { brokerCa: params.brokerCa }), ...(params.dialer === undefined ? {} : { dialer: params.dialer }) });
      const remote = relayed.remoteAddress ?? params.broker.host;
      candidates = [{ address: remote, port: relayed.remotePort ?? params.broker.port, family: remote.includes(':') ? 'IPv6' : 'IPv4' }];
      transport = new RelayTransport(relayed, candidates[0] as DatagramEndpoint);
    } else {
      transport = new UdpTransport(socket);
      candidates = datagramCandidates(strategy, exchange);
    }
    channel = new DatagramChannel({ role, attemptId: exchange.attemptId, secret: exchange.attemptSecret, transport, candidates, hold: true, ...(params.keepaliveMs === undefined ? {} : { keepaliveMs: params.keepaliveMs }) });
    if (strategy !== 'relay') await sleep(exchange.startDelayMs, phase.signal);
    await channel.establish(phase.signal);
  } catch (err) {
    if (channel === undefined) closeQuietly(socket);
    else channel.close();
    const error = phase.signal.aborted && !signal.aborted ? phase.error() : err;
    params.onTrace?.({ attempt: params.attempt, strategy, outcome: 'failed', ms: Math.round(performance.now() - strategyStarted), error: error instanceof Error ? error.message : String(error) });
    throw Object.assign(error instanceof Error ? error : new Error(String(error)), { strategy });
  } finally {
    phase.dispose();
    releaseSockets();
  }
  params.onTrace?.({ attempt: params.attempt, strategy, outcome: 'succeeded', ms: Math.round(performance.now() - strategyStarted) });
  channel.describe({
    path: strategy,
    role,
    uri: params.uri,
    attemptId: Buffer.from(exchange.attemptId).toString('hex'),
    publicEndpoint: exchange.publicEndpoint,
    setupMs: Math.round(performance.now() - params.started),
    attempts: params.attempt,
  });
  return channel;
}

/** Closes `socket` unless it is closed already. */
function closeQuietly(socket: UdpSocket): void {
  try {
    socket.close();
  } catch {
    // ERR_SOCKET_DGRAM_NOT_RUNNING: closed before.
  }
}
