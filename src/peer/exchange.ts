/**
 * One TCP exchange with the broker, as a peer runs it: open a fresh connection,
 * send Connect (initiator) or Join (recipient) carrying our private endpoints,
 * answer the broker's round-trip Probe, and read the final response naming the
 * other peer. The local port of this connection is the one we punch from.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { openSecret, recipientSealKey } from '../security/attempt-secret.js';
import { newEphemeralKey, sessionKey, type EphemeralKey } from '../security/proof.js';
import { brokerCertificateProblem } from '../security/issued.js';
import { connect as netConnect, type Socket } from 'node:net';
import { claimUnusable, DIRECT_DIALER, handshakeMsOf, type Dialer } from './dialer.js';
import { connect as connectTls } from 'node:tls';
import { readOneMessage } from './sockets.js';
import { alternatePortOf, knowsAlternatePort, learnAlternatePort } from './alternate-port.js';
import { localEndpoints, formatEndpoint, type HostPort, toTransportAddress } from '../common/endpoint.js';
import { abortError } from '../common/signal.js';
import { StunChannel } from '../common/stun-channel.js';
import { beforeTls } from '../common/websocket-stream.js';
import { ErrorCode, NattravError } from '../errors.js';
import { AttrType, MAPPING_KEY_LENGTH, MAX_PRIVATE_ENDPOINTS, MessageClass, Method, StunErrorCode, TransportCode } from '../wire/constants.js';
import { decodeMappingKind, type MappingKind } from '../nat/mapping.js';
import { StrategyCode, strategyName, type StrategyName } from '../nat/strategy.js';
import { encodeMessage } from '../wire/codec.js';
import { StunMessage } from '../wire/message.js';
import {
  addAttemptId,
  addRole,
  addU32,
  addXorAddress,
  getAttemptId,
  getErrorCode,
  getU32Attr,
  getXorAddressAttr,
  getXorAddressAttrs,
  getXorMappedAddress,
  getPeerKey,
} from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';

/** What the broker told us for one attempt. */
export interface ExchangeResult {
  readonly attemptId: Uint8Array;
  /** The strategy the broker chose for this attempt. */
  readonly strategy: StrategyName;
  /** How our NAT maps TCP, as the broker measured it. */
  readonly mapping: MappingKind;
  /** How the other peer's NAT maps TCP. */
  readonly peerMapping: MappingKind;
  /** Our own public TCP endpoint as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  readonly peerPublicEndpoint: TransportAddress;
  readonly peerPrivateEndpoints: TransportAddress[];
  readonly startDelayMs: number;
  /** The attempt's secret from the broker: the Hello and Relay requests prove it. */
  readonly attemptSecret: Buffer;
  /** The fingerprint of the key the other peer registered with, when the broker knows it (initiator only). */
  readonly peerKeyFingerprint?: string;
  /** The local address and port of the exchange: punch from these. */
  readonly localAddress: string;
  readonly localPort: number;
  /** True when the broker scheduled a datagram channel (TRANSPORT = datagram in its answer). */
  readonly datagram?: boolean;
}

/** Waits this long for the broker's FIN before dropping the exchange ourselves. */
const BROKER_CLOSE_GRACE_MS = 2_000;
/**
 * Mapping probes per attempt, besides the exchange. One: a second probe from the
 * same local port to the same broker port would be the same 4-tuple.
 */
const MAPPING_PROBES = 1;
/** A mapping probe is one TCP handshake and one round trip; past this it is abandoned. */
const MAPPING_PROBE_TIMEOUT_MS = 3_000;

/** Who we are in the attempt, so mapping probes can name it. */
export interface ExchangeIdentity {
  readonly attemptId: Uint8Array;
  readonly role: 'initiator' | 'recipient';
  /** The recipient's registration session key: its Join carries integrity under it, and the attempt secret comes sealed under it. */
  readonly sessionKey?: Uint8Array;
}

/**
 * Runs one exchange. `request` is the Connect or Join request; our private
 * endpoints (with this connection's local port) are added to it here.
 */
export async function runExchange(
  broker: HostPort,
  request: StunMessage,
  identity: ExchangeIdentity,
  signal: AbortSignal,
  brokerCa?: string,
  dialer: Dialer = DIRECT_DIALER,
): Promise<ExchangeResult> {
  // The initiator's X25519 key: the broker seals the attempt secret for it (a bystander cannot open it).
  const ephemeral = identity.role === 'initiator' ? newEphemeralKey() : undefined;
  if (ephemeral !== undefined) request.add(AttrType.EphemeralKey, ephemeral.publicKey);
  // Our mapping probes carry integrity the broker can check: under a key the initiator
  // sends with its Connect, under the session key for the recipient.
  const probeKey = identity.role === 'initiator' ? randomBytes(MAPPING_KEY_LENGTH) : identity.sessionKey;
  if (identity.role === 'initiator' && probeKey !== undefined) request.add(AttrType.MappingKey, probeKey);
  const raw = await dialer.dial(broker, signal);
  // Our TCP handshake is the round trip the broker schedules with (CONNECT-RTT): no Probe needed.
  // A recipient sends it only to a broker whose alternate port it knows: the Probe is also where a
  // broker it never registered with (a cluster's JOIN-AT) tells it, in time for its mapping probe.
  const handshake = handshakeMsOf(raw);
  if (handshake !== undefined && (identity.role === 'initiator' || knowsAlternatePort(broker))) addU32(request, AttrType.ConnectRtt, Math.max(1, Math.round(handshake)));
  const socket = brokerCa === undefined ? raw : await secureBrokerConnection(raw, broker, brokerCa, signal);
  if (identity.role === 'initiator') claimUnusable(request, dialer);
  // One more connection from the same local port to the broker's alternate port (as
  // it announced, else port + 1) shows the broker how our NAT maps TCP. Losing it only
  // costs precision. Through a proxy or tunnel the local port is not ours to probe from.
  const probeFrom = { address: socket.localAddress ?? '0.0.0.0', port: socket.localPort ?? 0 };
  let probedPort = alternatePortOf(broker);
  const probeMapping = (): void => {
    if (dialer.kind !== 'direct') return;
    for (let i = 0; i < MAPPING_PROBES; i++) void sendMappingProbe(broker, probedPort, probeFrom, identity, probeKey, signal);
  };
  probeMapping();
  const channel = new StunChannel(socket, (message) => {
    if (message.cls === MessageClass.Request && message.method === Method.Probe) {
      channel.send(message.successResponse(), { fingerprint: true });
      // The broker's round-trip probe names its alternate port: a peer that guessed wrong
      // (its first attempt through this broker) probes again, in time for the broker's wait.
      const announced = learnAlternatePort(broker, message);
      if (announced !== undefined && announced !== probedPort) {
        probedPort = announced;
        probeMapping();
      }
    }
  });
  try {
    const localAddress = socket.localAddress ?? '0.0.0.0';
    const localPort = socket.localPort ?? 0;
    // The exchange's own source address first (it may be loopback, which interface listings leave out).
    const own = toTransportAddress(localAddress, localPort);
    const others = localEndpoints(localPort, own.family).filter((e) => e.address !== own.address);
    for (const endpoint of [own, ...others].slice(0, MAX_PRIVATE_ENDPOINTS)) {
      addXorAddress(request, AttrType.PrivateEndpoint, endpoint);
    }
    let response: StunMessage;
    try {
      response = await channel.request(request, signal, {
        fingerprint: true,
        ...(identity.sessionKey === undefined ? {} : { integritySha256Key: identity.sessionKey }),
      });
    } catch (err) {
      if (signal.aborted) throw abortError(signal);
      throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: ${formatEndpoint({ address: broker.host, port: broker.port })} closed the exchange before answering`, { cause: err, address: broker.host, port: broker.port });
    }
    if (response.cls === MessageClass.ErrorResponse) throw brokerError(response, broker);
    const result = readExchangeAnswer(response, broker, identity, ephemeral, { localAddress, localPort });
    // The broker closes first; answer its FIN, or drop the socket if it never comes.
    setTimeout(() => socket.destroy(), BROKER_CLOSE_GRACE_MS).unref();
    return result;
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/**
 * Reads the broker's answer for an attempt (the final answer of an exchange, or an answer
 * down a standby, standby.ts) into an {@link ExchangeResult}; `local` is where we punch from.
 * Throws ERR_PROTOCOL or ERR_BROKER_AUTH when it lacks what an attempt needs.
 */
export function readExchangeAnswer(
  response: StunMessage,
  broker: HostPort,
  identity: Pick<ExchangeIdentity, 'role' | 'sessionKey'>,
  ephemeral: EphemeralKey | undefined,
  local: { readonly localAddress: string; readonly localPort: number },
): ExchangeResult {
  const { localAddress, localPort } = local;
  const attemptId = getAttemptId(response);
  const peerPublicEndpoint = getXorAddressAttr(response, AttrType.PeerPublicEndpoint);
  const publicEndpoint = getXorMappedAddress(response);
  if (attemptId === undefined || peerPublicEndpoint === undefined || publicEndpoint === undefined) {
    throw new NattravError(ErrorCode.Protocol, 'the broker answered without attempt ID, peer endpoint or mapped address');
  }
  const strategy = strategyName(getU32Attr(response, AttrType.Strategy) ?? StrategyCode.direct);
  const peerKey = getPeerKey(response);
  learnAlternatePort(broker, response);
  const attemptSecret = openAttemptSecret(response, attemptId, identity, ephemeral);
  if (attemptSecret === undefined) {
    throw new NattravError(ErrorCode.BrokerAuth, 'the broker answered without an attempt secret sealed for us: it is not a broker we can work with (or not the broker we registered with)');
  }
  if (strategy === undefined) throw new NattravError(ErrorCode.Protocol, 'the broker chose a strategy this peer does not know');
  return {
    attemptId,
    strategy,
    mapping: decodeMappingKind(getU32Attr(response, AttrType.Mapping) ?? 0),
    peerMapping: decodeMappingKind(getU32Attr(response, AttrType.PeerMapping) ?? 0),
    publicEndpoint,
    peerPublicEndpoint,
    peerPrivateEndpoints: getXorAddressAttrs(response, AttrType.PeerPrivateEndpoint),
    startDelayMs: Math.min(getU32Attr(response, AttrType.StartDelay) ?? 0, 10_000),
    attemptSecret,
    ...(peerKey === undefined ? {} : { peerKeyFingerprint: peerKey }),
    localAddress,
    localPort,
    ...(getU32Attr(response, AttrType.Transport) === TransportCode.datagram ? { datagram: true } : {}),
  };
}

/**
 * Opens a TCP connection to the broker through `dialer`; with `brokerCa`, upgrades it
 * to TLS 1.3 (STARTTLS) and requires the broker's certificate to chain to that CA, so
 * a fake broker cannot answer our exchanges. Failures: ERR_BROKER_UNREACHABLE,
 * ERR_BROKER_AUTH, or the dialer's own (a proxy's).
 */
export async function openBrokerConnection(broker: HostPort, signal: AbortSignal, brokerCa?: string, dialer: Dialer = DIRECT_DIALER): Promise<Socket> {
  const raw = await dialer.dial(broker, signal);
  return brokerCa === undefined ? raw : secureBrokerConnection(raw, broker, brokerCa, signal);
}

/**
 * Upgrades `raw`, a connection to the broker, to TLS 1.3 (STARTTLS) and requires the
 * broker's certificate to chain to `brokerCa` and name a broker. Both the StartTls
 * answer and the handshake stop when `signal` aborts (with its reason); `raw` is
 * destroyed on any failure. ERR_BROKER_AUTH when the broker cannot prove itself.
 */
export async function secureBrokerConnection(raw: Socket, broker: HostPort, brokerCa: string, signal: AbortSignal): Promise<Socket> {
  try {
    raw.write(encodeMessage(StunMessage.request(Method.StartTls), { fingerprint: true }));
    const answer = await readOneMessage(raw, signal);
    if (answer.cls !== MessageClass.SuccessResponse) {
      throw new NattravError(ErrorCode.BrokerAuth, 'broker authentication failed: the broker offers no TLS (it has no certificate)');
    }
    const secure = connectTls({
      socket: beforeTls(raw),
      ca: brokerCa,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      // The chain is Node's to check against brokerCa; that the certificate names a broker (not a peer) is ours.
      checkServerIdentity: (_host, peer) => {
        const problem = brokerCertificateProblem(new X509Certificate(peer.raw), broker.host);
        return problem === undefined ? undefined : new Error(problem);
      },
    });
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      secure.once('secureConnect', () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
      secure.once('error', (err: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(new NattravError(ErrorCode.BrokerAuth, `broker authentication failed: ${err.message}`, { cause: err }));
      });
    });
    secure.setNoDelay(true);
    return secure;
  } catch (err) {
    raw.destroy();
    throw err;
  }
}

/** One MappingProbe from `from` (the exchange's local address and port) to the broker's `port`, with integrity under `key`; errors are ignored. */
export async function sendMappingProbe(
  broker: HostPort,
  port: number,
  from: { address: string; port: number },
  identity: Pick<ExchangeIdentity, 'attemptId' | 'role'>,
  key: Uint8Array | undefined,
  signal: AbortSignal,
): Promise<void> {
  const probe = StunMessage.request(Method.MappingProbe);
  addAttemptId(probe, identity.attemptId);
  addRole(probe, identity.role);
  const limit = AbortSignal.any([signal, AbortSignal.timeout(MAPPING_PROBE_TIMEOUT_MS)]);
  const socket = netConnect({ host: broker.host, port, localAddress: from.address, localPort: from.port });
  socket.on('error', () => socket.destroy());
  const stop = (): void => {
    socket.destroy();
  };
  limit.addEventListener('abort', stop, { once: true });
  socket.once('close', () => limit.removeEventListener('abort', stop));
  socket.once('connect', () => {
    socket.write(encodeMessage(probe, { fingerprint: true, ...(key === undefined ? {} : { integritySha256Key: key }) }));
  });
  // The broker answers and closes first; we answer its FIN.
  socket.on('data', () => undefined);
  socket.on('end', () => socket.end());
}

/** Maps a broker error response to the matching exception. */
export function brokerError(response: StunMessage, broker: HostPort): NattravError {
  const error = getErrorCode(response);
  const reason = error?.reason ?? 'no reason given';
  const where = { address: broker.host, port: broker.port };
  switch (error?.code) {
    case StunErrorCode.NotFound:
      return new NattravError(ErrorCode.UnknownUri, reason, where);
    case StunErrorCode.RecipientUnreachable:
      return new NattravError(ErrorCode.RecipientUnreachable, reason, where);
    case StunErrorCode.NoRegistrationInFamily:
      return new NattravError(ErrorCode.FamilyUnavailable, reason, where);
    default:
      return new NattravError(ErrorCode.BrokerError, `broker error ${error?.code ?? '?'}: ${reason}`, where);
  }
}

/** Opens the attempt secret of the broker's answer (see security/attempt-secret.ts); undefined when absent or not ours. */
function openAttemptSecret(response: StunMessage, attemptId: Uint8Array, identity: Pick<ExchangeIdentity, 'role' | 'sessionKey'>, ephemeral: EphemeralKey | undefined): Buffer | undefined {
  const sealed = response.get(AttrType.AttemptSecret);
  if (sealed === undefined) return undefined;
  if (identity.role === 'recipient') return openSecret(recipientSealKey(identity.sessionKey, attemptId), sealed, attemptId);
  const brokerKey = response.get(AttrType.EphemeralKey);
  const key = ephemeral === undefined || brokerKey === undefined ? undefined : sessionKey(ephemeral, brokerKey, attemptId);
  return key === undefined ? undefined : openSecret(key, sealed, attemptId);
}
