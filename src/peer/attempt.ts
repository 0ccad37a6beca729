/**
 * One attempt, as either peer runs it: the broker exchange (Connect or Join),
 * the simultaneous open, and the Hello, each phase under its own time limit.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { toTransportAddress, type HostPort } from '../common/endpoint.js';
import { startPhase } from '../common/signal.js';
import type { StunMessage } from '../wire/message.js';
import { runExchange } from './exchange.js';
import { attachInfo, type ConnectionRole, type NattravSocket } from './info.js';
import { helloAsInitiator, helloAsRecipient, simultaneousOpen } from './punch.js';

/** What one attempt needs. */
export interface AttemptParams {
  readonly broker: HostPort;
  /** The Connect (initiator) or Join (recipient) request. */
  readonly request: StunMessage;
  readonly role: ConnectionRole;
  readonly uri: string;
  readonly signal: AbortSignal;
  readonly exchangeTimeoutMs: number;
  readonly punchTimeoutMs: number;
  /** `performance.now()` when the connection was first asked for. */
  readonly started: number;
  /** This attempt's number (1 = the first). */
  readonly attempt: number;
}

/** Runs one attempt; resolves with the connected socket carrying its info. */
export async function runAttempt(params: AttemptParams): Promise<NattravSocket> {
  const { role, uri, signal } = params;
  const initiator = role === 'initiator';
  const exchange = startPhase(signal, params.exchangeTimeoutMs, initiator ? `asking the broker for ${uri}` : `joining an attempt for ${uri} at the broker`);
  let result;
  try {
    result = await runExchange(params.broker, params.request, exchange.signal).catch((err: unknown) => {
      throw exchange.signal.aborted && !signal.aborted ? exchange.error() : err;
    });
  } finally {
    exchange.dispose();
  }
  const punch = startPhase(signal, params.punchTimeoutMs, `opening the direct connection ${initiator ? 'to' : 'for'} ${uri}`);
  let socket: Socket | undefined;
  try {
    socket = await simultaneousOpen({
      localAddress: result.localAddress,
      localPort: result.localPort,
      remote: result.peerPublicEndpoint,
      startDelayMs: result.startDelayMs,
      signal: punch.signal,
      // A recipient whose exchange's mapped endpoint equals its local one has no NAT in front of it.
      listenOnRefusal:
        !initiator &&
        result.publicEndpoint.port === result.localPort &&
        result.publicEndpoint.address === toTransportAddress(result.localAddress, 0).address,
    });
    if (initiator) await helloAsInitiator(socket, result.attemptId, punch.signal);
    else await helloAsRecipient(socket, result.attemptId, punch.signal);
  } catch (err) {
    socket?.destroy();
    throw err;
  } finally {
    punch.dispose();
  }
  return attachInfo(socket, {
    path: 'direct',
    role,
    uri,
    local: toTransportAddress(socket.localAddress ?? '0.0.0.0', socket.localPort ?? 0),
    remote: toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0),
    publicEndpoint: result.publicEndpoint,
    peerPrivateEndpoints: result.peerPrivateEndpoints,
    setupMs: Math.round(performance.now() - params.started),
    attempts: params.attempt,
    attemptId: Buffer.from(result.attemptId).toString('hex'),
  });
}
