/**
 * One TCP exchange with the broker, as a peer runs it: open a fresh connection,
 * send Connect (initiator) or Join (recipient) carrying our private endpoints,
 * answer the broker's round-trip Probe, and read the final response naming the
 * other peer. The local port of this connection is the one we punch from.
 */
import { lookup } from 'node:dns/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { localEndpoints, formatEndpoint, type HostPort, toTransportAddress } from '../common/endpoint.js';
import { abortError } from '../common/signal.js';
import { StunChannel } from '../common/stun-channel.js';
import { ErrorCode, NattravError } from '../errors.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import {
  addXorAddress,
  getAttemptId,
  getErrorCode,
  getU32Attr,
  getXorAddressAttr,
  getXorAddressAttrs,
  getXorMappedAddress,
} from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';

/** What the broker told us for one attempt. */
export interface ExchangeResult {
  readonly attemptId: Uint8Array;
  /** Our own public TCP endpoint as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  readonly peerPublicEndpoint: TransportAddress;
  readonly peerPrivateEndpoints: TransportAddress[];
  readonly startDelayMs: number;
  /** The local address and port of the exchange: punch from these. */
  readonly localAddress: string;
  readonly localPort: number;
}

/** Waits this long for the broker's FIN before dropping the exchange ourselves. */
const BROKER_CLOSE_GRACE_MS = 2_000;

/**
 * Runs one exchange. `request` is the Connect or Join request; our private
 * endpoints (with this connection's local port) are added to it here.
 */
export async function runExchange(broker: HostPort, request: StunMessage, signal: AbortSignal): Promise<ExchangeResult> {
  const socket = await openBrokerConnection(broker, signal);
  const channel = new StunChannel(socket, (message) => {
    if (message.cls === MessageClass.Request && message.method === Method.Probe) {
      channel.send(message.successResponse(), { fingerprint: true });
    }
  });
  try {
    const localAddress = socket.localAddress ?? '0.0.0.0';
    const localPort = socket.localPort ?? 0;
    for (const endpoint of localEndpoints(localPort, toTransportAddress(localAddress, localPort).family)) {
      addXorAddress(request, AttrType.PrivateEndpoint, endpoint);
    }
    let response: StunMessage;
    try {
      response = await channel.request(request, signal, { fingerprint: true });
    } catch (err) {
      if (signal.aborted) throw abortError(signal);
      throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: ${formatEndpoint({ address: broker.host, port: broker.port })} closed the exchange before answering`, { cause: err, address: broker.host, port: broker.port });
    }
    if (response.cls === MessageClass.ErrorResponse) throw brokerError(response, broker);
    const attemptId = getAttemptId(response);
    const peerPublicEndpoint = getXorAddressAttr(response, AttrType.PeerPublicEndpoint);
    const publicEndpoint = getXorMappedAddress(response);
    if (attemptId === undefined || peerPublicEndpoint === undefined || publicEndpoint === undefined) {
      throw new NattravError(ErrorCode.Protocol, 'the broker answered without attempt ID, peer endpoint or mapped address');
    }
    // The broker closes first; answer its FIN, or drop the socket if it never comes.
    setTimeout(() => socket.destroy(), BROKER_CLOSE_GRACE_MS).unref();
    return {
      attemptId,
      publicEndpoint,
      peerPublicEndpoint,
      peerPrivateEndpoints: getXorAddressAttrs(response, AttrType.PeerPrivateEndpoint),
      startDelayMs: Math.min(getU32Attr(response, AttrType.StartDelay) ?? 0, 10_000),
      localAddress,
      localPort,
    };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/**
 * Opens a TCP connection to the broker; failures become ERR_BROKER_UNREACHABLE.
 * The socket is bound explicitly (to the wildcard address, port 0) so that libuv
 * sets SO_REUSEADDR on it: an auto-bound socket lacks it, and the punch could then
 * not reuse its port while the exchange is still open.
 */
export async function openBrokerConnection(broker: HostPort, signal: AbortSignal): Promise<Socket> {
  let resolved: { address: string; family: number };
  try {
    resolved = await lookup(broker.host);
  } catch (err) {
    throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: cannot resolve ${broker.host}`, { cause: err, address: broker.host, port: broker.port });
  }
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const socket = netConnect({
      host: resolved.address,
      port: broker.port,
      localAddress: resolved.family === 6 ? '::' : '0.0.0.0',
    });
    socket.setNoDelay(true);
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: Error & { code?: string }) => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(
        new NattravError(
          ErrorCode.BrokerUnreachable,
          `broker unreachable: ${formatEndpoint({ address: broker.host, port: broker.port })} (${err.code ?? err.message})`,
          { cause: err, address: broker.host, port: broker.port },
        ),
      );
    });
  });
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
    default:
      return new NattravError(ErrorCode.BrokerError, `broker error ${error?.code ?? '?'}: ${reason}`, where);
  }
}
