/**
 * TCP simultaneous open through two NATs (see ../shared/TRAVERSAL-NOTES.md):
 * both peers connect() to each other's public endpoint from the local port they
 * used toward the broker, and keep that socket. The first SYN to reach the far
 * NAT is dropped; the other crosses the mapping it opened. We never "SYN, abort,
 * then listen": Linux conntrack marks the listener's SYN/ACK invalid.
 *
 * Then the Hello handshake proves both ends belong to the same attempt:
 * 1. The initiator sends Hello(attempt ID).
 * 2. The recipient checks the ID and answers with a success response.
 * Bytes that follow a Hello on the stream are application data and are put back.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { listenOn, plainAddress, readOneMessage } from './sockets.js';
import { formatEndpoint } from '../common/endpoint.js';
import { abortError, sleep } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import { encodeMessage, verifyMessageIntegritySha256 } from '../wire/codec.js';
import { AttrType, MessageClass, Method, SecurityMode, StunErrorCode } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addAttemptId, addU32, getAttemptId, getSecurityMode, type SecurityModeValue } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';

/** After a RST (the far side's SYN not sent yet, or a NAT answering), try the same port again this soon. */
const REFUSED_RETRY_MS = 100;

/** What to punch. */
export interface PunchParams {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remote: TransportAddress;
  readonly startDelayMs: number;
  /** Aborts on the caller's abort or the punch time limit. */
  readonly signal: AbortSignal;
  /**
   * After a refusal (RST), stop connecting and accept the peer's SYN on our
   * port instead. Only for a recipient without a NAT in front of it: a RST
   * then means the initiator is directly reachable too, and two reachable
   * hosts otherwise refuse each other's SYNs forever. Behind a NAT a listener
   * would fail (its SYN/ACK is invalid to conntrack), so NATed peers keep connecting.
   */
  readonly listenOnRefusal?: boolean;
}

/**
 * Opens the connection by simultaneous open. Retries after a refusal (RST) from
 * the same port until `signal` fires; the kernel itself retransmits lost SYNs.
 */
export async function simultaneousOpen(params: PunchParams): Promise<Socket> {
  await sleep(params.startDelayMs, params.signal);
  let lastError: unknown;
  while (!params.signal.aborted) {
    try {
      return await connectOnce(params);
    } catch (err) {
      lastError = err;
      const code = (err as { code?: string }).code;
      if (params.signal.aborted) break;
      if (code !== 'ECONNREFUSED' && code !== 'ECONNRESET' && code !== 'EADDRINUSE') {
        throw punchError(params, err);
      }
      if (code === 'ECONNREFUSED' && params.listenOnRefusal === true) return acceptFrom(params);
      await sleep(REFUSED_RETRY_MS, params.signal).catch(() => undefined);
    }
  }
  const reason = abortError(params.signal);
  if (lastError !== undefined && reason.code === ErrorCode.Timeout) {
    throw new NattravError(reason.code, `${reason.message} (last error: ${(lastError as { code?: string }).code ?? String(lastError)})`, { cause: lastError, address: params.remote.address, port: params.remote.port });
  }
  throw reason;
}

function connectOnce(params: PunchParams): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({
      host: params.remote.address,
      port: params.remote.port,
      localAddress: params.localAddress,
      localPort: params.localPort,
      allowHalfOpen: true,
    });
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(params.signal));
    };
    params.signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      params.signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
    const onError = (err: Error): void => {
      params.signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
  });
}

/** Listens on our punch port until the expected peer connects (see {@link PunchParams.listenOnRefusal}). */
async function acceptFrom(params: PunchParams): Promise<Socket> {
  // Retries while the closing exchange still holds the port; other errors name the port.
  const listener = await listenOn(params.localAddress, params.localPort, params.signal);
  try {
    return await new Promise<Socket>((resolve, reject) => {
      const onAbort = (): void => reject(abortError(params.signal));
      if (params.signal.aborted) onAbort();
      params.signal.addEventListener('abort', onAbort, { once: true });
      listener.on('connection', (socket: Socket) => {
        if (plainAddress(socket.remoteAddress) !== params.remote.address || socket.remotePort !== params.remote.port) {
          socket.destroy();
          return;
        }
        params.signal.removeEventListener('abort', onAbort);
        socket.setNoDelay(true);
        resolve(socket);
      });
    });
  } finally {
    listener.close();
  }
}

function punchError(params: PunchParams, err: unknown): NattravError {
  const code = (err as { code?: string }).code ?? String(err);
  return new NattravError(
    ErrorCode.ConnectFailed,
    `simultaneous open from port ${params.localPort} to ${formatEndpoint(params.remote)} failed: ${code}`,
    { cause: err, address: params.remote.address, port: params.remote.port },
  );
}

/**
 * What the Hello proves: the attempt ID, and the attempt secret both peers got from the
 * broker (each Hello message carries MESSAGE-INTEGRITY-SHA256 under it), so a bystander
 * who knows the attempt ID can neither start nor answer it.
 */
export interface HelloAttempt {
  readonly attemptId: Uint8Array;
  readonly attemptSecret: Uint8Array;
}

/** What each side runs after the Hello, so a plain peer and a TLS peer fail with a reason instead of garbage. */
function securityOf(tls: boolean): SecurityModeValue {
  return tls ? SecurityMode.Tls : SecurityMode.Plain;
}

/** The error for a Hello whose SECURITY differs from ours, naming what the other side wants. */
function securityMismatch(ourTls: boolean, side: 'initiator' | 'recipient'): NattravError {
  return ourTls
    ? new NattravError(ErrorCode.PlainRequired, `the ${side} runs without TLS and this side requires it (drop --tls / tls on one side, or add it on the other)`)
    : new NattravError(ErrorCode.TlsRequired, `the ${side} requires TLS and this side runs without it (use --tls / the tls option on both sides)`);
}

/** Step 1 (initiator): send Hello (attempt ID, our SECURITY) and wait for the recipient's success response. */
export async function helloAsInitiator(socket: Socket, attempt: HelloAttempt, signal: AbortSignal, tls: boolean): Promise<void> {
  const hello = StunMessage.request(Method.Hello);
  addAttemptId(hello, attempt.attemptId);
  addU32(hello, AttrType.Security, securityOf(tls));
  socket.write(encodeMessage(hello, { integritySha256Key: attempt.attemptSecret, fingerprint: true }));
  const answer = await readOneMessage(socket, signal);
  // Only the recipient the broker told the secret to can answer with integrity under it.
  if (!verifyMessageIntegritySha256(answer, attempt.attemptSecret)) {
    throw new NattravError(ErrorCode.Protocol, 'the peer did not prove the attempt secret: it is not the recipient of this attempt');
  }
  const sameTransaction = Buffer.from(answer.transactionId).equals(Buffer.from(hello.transactionId));
  if (answer.method === Method.Hello && sameTransaction && answer.cls === MessageClass.ErrorResponse) {
    const theirs = getSecurityMode(answer);
    if (theirs !== undefined && theirs !== securityOf(tls)) throw securityMismatch(tls, 'recipient');
  }
  if (answer.method !== Method.Hello || answer.cls !== MessageClass.SuccessResponse || !sameTransaction) {
    throw new NattravError(ErrorCode.Protocol, 'the peer did not accept our Hello: it is not the recipient of this attempt');
  }
}

/**
 * Step 2 (recipient): wait for the initiator's Hello naming `attemptId` and accept it.
 * A Hello whose SECURITY differs from ours is refused with an error response carrying
 * our own, so both sides report the mismatch.
 */
export async function helloAsRecipient(socket: Socket, attempt: HelloAttempt, signal: AbortSignal, tls: boolean): Promise<void> {
  const hello = await readOneMessage(socket, signal);
  const id = hello.method === Method.Hello && hello.cls === MessageClass.Request ? getAttemptId(hello) : undefined;
  if (id === undefined || !Buffer.from(id).equals(Buffer.from(attempt.attemptId))) {
    throw new NattravError(ErrorCode.Protocol, 'the connecting peer sent no Hello for this attempt');
  }
  if (!verifyMessageIntegritySha256(hello, attempt.attemptSecret)) {
    throw new NattravError(ErrorCode.Protocol, 'the connecting peer did not prove the attempt secret: it is not the initiator of this attempt');
  }
  const theirs = getSecurityMode(hello) ?? SecurityMode.Plain;
  if (theirs !== securityOf(tls)) {
    const refusal = hello.errorResponse(StunErrorCode.Forbidden, tls ? 'TLS required' : 'plain TCP required');
    addU32(refusal, AttrType.Security, securityOf(tls));
    await new Promise<void>((resolve) => socket.end(encodeMessage(refusal, { integritySha256Key: attempt.attemptSecret, fingerprint: true }), resolve));
    throw securityMismatch(tls, 'initiator');
  }
  socket.write(encodeMessage(hello.successResponse(), { integritySha256Key: attempt.attemptSecret, fingerprint: true }));
}
