/**
 * The recipient's side of a datagram channel: a ConnectionRequest with TRANSPORT =
 * datagram makes the server join the attempt with a UDP socket (attempt.ts) and hand
 * the open channel to its `'datagram'` listeners. A server with an allow-list refuses
 * datagram channels: they carry no identity of the initiator to check it against; so does
 * one whose way to the broker is a proxy or tunnel (UDP would go around it). The refusal
 * is the server's answer to the ConnectionRequest, so the initiator hears it at once.
 */
import { performance } from 'node:perf_hooks';
import type { HostPort } from '../../common/endpoint.js';
import { ErrorCode, NattravError } from '../../errors.js';
import { Method } from '../../wire/constants.js';
import { StunMessage } from '../../wire/message.js';
import { addAttemptId } from '../../wire/nattrav.js';
import type { Dialer } from '../dialer.js';
import type { SocketBudget } from '../strategies/socket-budget.js';
import { runDatagramAttempt } from './attempt.js';
import type { DatagramChannel } from './channel.js';

/** What the server lends a datagram attempt. */
export interface DatagramJoin {
  readonly attemptId: Uint8Array;
  readonly broker: HostPort;
  readonly uri: string;
  readonly signal: AbortSignal;
  readonly exchangeTimeoutMs: number;
  readonly punchTimeoutMs: number;
  readonly sessionKey?: Uint8Array;
  readonly brokerCa?: string;
  readonly dialer?: Dialer;
  /** The server's budget of attempt sockets. */
  readonly sockets?: SocketBudget;
  /** Why the server cannot take a datagram channel now (no 'datagram' listener, an allow-list), or undefined. */
  readonly refusal: string | undefined;
}

/** Joins a datagram attempt as the recipient; resolves with the open channel. */
export async function joinDatagram(join: DatagramJoin): Promise<DatagramChannel> {
  if (join.refusal !== undefined) throw new NattravError(ErrorCode.NotAllowed, join.refusal);
  const request = StunMessage.request(Method.Join);
  addAttemptId(request, join.attemptId);
  return runDatagramAttempt({
    broker: join.broker,
    request,
    attemptId: join.attemptId,
    role: 'recipient',
    uri: join.uri,
    signal: join.signal,
    exchangeTimeoutMs: join.exchangeTimeoutMs,
    punchTimeoutMs: join.punchTimeoutMs,
    started: performance.now(),
    // Each attempt is new to the recipient: the initiator counts its retries.
    attempt: 1,
    ...(join.sessionKey === undefined ? {} : { sessionKey: join.sessionKey }),
    ...(join.brokerCa === undefined ? {} : { brokerCa: join.brokerCa }),
    ...(join.dialer === undefined ? {} : { dialer: join.dialer }),
    ...(join.sockets === undefined ? {} : { sockets: join.sockets }),
  });
}

/**
 * Why a server with these settings refuses a datagram channel, or undefined: with
 * `listeners` 'datagram' listeners, an allow-list or not, and its way to the broker
 * (`dialer`: undefined or kind 'direct' is our own sockets; a proxy or tunnel hides our
 * address, which plain UDP would reveal).
 */
export function datagramRefusal(server: { listeners: number; allowList: boolean; dialer?: Dialer | undefined }): string | undefined {
  if (server.dialer !== undefined && server.dialer.kind !== 'direct') return `the server reaches the broker through ${server.dialer.kind}, and a datagram channel would go around it over plain UDP (revealing its address)`;
  if (server.allowList) return 'a datagram channel proves no identity of the initiator, and this server admits only listed identities';
  if (server.listeners === 0) return "the server has no 'datagram' listener";
  return undefined;
}
