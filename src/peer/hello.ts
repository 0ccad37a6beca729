/**
 * The Hello: the proof that both ends of a connection belong to the same attempt (they
 * know its ID and the attempt secret the broker gave both; every Hello message carries
 * MESSAGE-INTEGRITY-SHA256 under that secret), and what each side runs after it (SECURITY),
 * so a plain peer and a TLS peer fail with a reason instead of garbage.
 *
 * Wherever it can, it costs no round trip of its own (issue 13). Three ways, named by the
 * initiator's SECURITY:
 *
 * - `tls-flight` (SecurityMode.TlsFlightCertified, or TlsFlight), the TLS default:
 *   1. The initiator writes its Hello request and, without waiting, its TLS ClientHello. The
 *      Hello carries the initiator's certificate (INITIATOR-CERTIFICATE, SECURITY
 *      tls-flight-certified) unless it is over MAX_HELLO_CERTIFICATE_BYTES (SECURITY tls-flight).
 *   2. The recipient checks the Hello and goes straight into the TLS server handshake; it
 *      writes no answer. Its certificate, checked against the URI's key, a CA or the key the
 *      broker gave (PEER-KEY), authenticates it, which is what its answer used to prove.
 *      With the initiator's certificate in the Hello the recipient decides on it (and on its
 *      allow-list) before its TLS answer, so TLS needs no confirmation round trip after it
 *      (security/tls.ts; {@link helloCertificateOf} hands the certificate over).
 *      Used only where that check exists and the initiator has one candidate connection
 *      (see {@link initiatorHello}); a refusal is a STUN message, which the initiator's TLS
 *      layer sees as a non-TLS record (secure.ts's explainTlsFlightFailure reports it).
 * - `tls-answered` (SecurityMode.TlsAnsweredCertified, or Tls), the request/response of older nattrav:
 *   1. The initiator writes its Hello request, with its certificate as in the flight (else
 *   SECURITY tls, as older initiators do). 2. The recipient answers with a success response
 *   under the secret. Then TLS, without the confirmation round trip when the certificate came.
 *   Used where a race must tell which candidate is the recipient before TLS, and by older
 *   initiators (recipients still answer it).
 * - `plain` (SecurityMode.PlainProofs), without TLS:
 *   both write their proof the moment the connection is up (the initiator a Hello request
 *   with ROLE initiator, the recipient a Hello indication with ROLE recipient, so neither can
 *   be reflected back to its sender), and each checks the other's on arrival. The connection
 *   is handed over only after the peer's proof checked out.
 *
 * Bytes that follow a Hello on the stream are the next layer's (TLS, or application data)
 * and are put back.
 */
import type { Socket } from 'node:net';
import { readOneMessage } from './sockets.js';
import { openHelloCertificate, sealHelloCertificate } from '../security/attempt-secret.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { StrategyName } from '../nat/strategy.js';
import { encodeMessage, verifyMessageIntegritySha256 } from '../wire/codec.js';
import { AttrType, MAX_HELLO_CERTIFICATE_BYTES, MessageClass, Method, SecurityMode, StunErrorCode } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addAttemptId, addInitiatorCertificate, addRole, addU32, getAttemptId, getInitiatorCertificate, getRole, getSecurityMode, type SecurityModeValue } from '../wire/nattrav.js';

/** What the Hello proves: the attempt ID, and the attempt secret both peers got from the broker. */
export interface HelloAttempt {
  readonly attemptId: Uint8Array;
  readonly attemptSecret: Uint8Array;
}

/** How the initiator runs its Hello (see the module comment). */
export type InitiatorHello = 'plain' | 'tls-flight' | 'tls-answered';

/** What each way announces in SECURITY (the TLS flight with the initiator's certificate: {@link SecurityMode.TlsFlightCertified}). */
const WIRE_MODE: Readonly<Record<InitiatorHello, SecurityModeValue>> = {
  plain: SecurityMode.PlainProofs,
  'tls-flight': SecurityMode.TlsFlight,
  'tls-answered': SecurityMode.Tls,
};

/**
 * Strategies where the initiator holds one candidate connection at a time, to the endpoint the
 * broker named (or through the broker): nothing has to be told apart before TLS. The others
 * (lan, reversal, predicted, birthday) race several candidates, and the recipient's answer
 * picks the one that is really the recipient.
 */
const ONE_CANDIDATE: ReadonlySet<StrategyName> = new Set<StrategyName>(['direct', 'public', 'portmap', 'socks5-bind', 'relay']);

/**
 * The initiator's way for an attempt: plain without TLS; with TLS the one-flight Hello when the
 * strategy has one candidate and TLS will authenticate the recipient's key (`recipientKeyChecked`:
 * a self-certifying URI, a CA, a pinned key or the broker's PEER-KEY), else the answered Hello.
 * `singleTarget`: this attempt's run of a racing strategy aims at one peer endpoint and holds one
 * candidate at a time (predicted from a sequential NAT towards a cone: strategies/predicted.ts).
 */
export function initiatorHello(tls: boolean, strategy: StrategyName, recipientKeyChecked: boolean, singleTarget = false): InitiatorHello {
  if (!tls) return 'plain';
  return recipientKeyChecked && (ONE_CANDIDATE.has(strategy) || singleTarget) ? 'tls-flight' : 'tls-answered';
}

/** Sockets whose Hello announced the TLS flight: a TLS failure on them is explained by secure.ts (explainTlsFlightFailure). */
const tlsFlights = new WeakSet<Socket>();
/** Initiator side: sockets whose Hello carried our certificate (the recipient decides before TLS and sends no confirmation). */
const certifiedFlights = new WeakSet<Socket>();
/** Recipient side: the certificate the initiator's Hello carried on a socket (checked before TLS, compared after it). */
const helloCertificates = new WeakMap<Socket, Uint8Array>();

/** What a recipient running nattrav before these Hellos does with one: it does not know their SECURITY and closes. */
export const OLDER_RECIPIENT = 'a recipient running an older nattrav closes on a Hello it does not know: upgrade it';

/** True when `socket`'s Hello announced the TLS flight: a failed TLS handshake on it is explained by secure.ts. */
export function sentTlsFlight(socket: Socket): boolean {
  return tlsFlights.has(socket);
}

/** Initiator side: true when `socket`'s Hello carried our certificate, so TLS on it runs without the recipient's confirmation. */
export function sentHelloCertificate(socket: Socket): boolean {
  return certifiedFlights.has(socket);
}

/** Recipient side: the initiator's certificate (DER) from its Hello on `socket`, when it sent one. */
export function helloCertificateOf(socket: Socket): Uint8Array | undefined {
  return helloCertificates.get(socket);
}

/** The error for a SECURITY unlike ours, naming what the other side wants and what to change. */
function securityMismatch(ourTls: boolean, side: 'initiator' | 'recipient'): NattravError {
  return ourTls
    ? new NattravError(ErrorCode.PlainRequired, `the ${side} runs without TLS and this side requires it (drop --tls / tls on one side, or add it on the other)`)
    : new NattravError(ErrorCode.TlsRequired, `the ${side} requires TLS and this side runs without it (use --tls / the tls option on both sides)`);
}

/** True for the SECURITY values that announce TLS. */
function isTls(mode: SecurityModeValue): boolean {
  return mode === SecurityMode.Tls || mode === SecurityMode.TlsFlight || mode === SecurityMode.TlsFlightCertified || mode === SecurityMode.TlsAnsweredCertified;
}

/** A Hello message's bytes, with integrity under the attempt secret. */
function sealed(message: StunMessage, attempt: HelloAttempt): Buffer {
  return encodeMessage(message, { integritySha256Key: attempt.attemptSecret, fingerprint: true });
}

/** The initiator's Hello request: attempt ID, SECURITY, (except the answered way, which older recipients read) ROLE, and the certificate of a certified flight. */
function initiatorProof(attempt: HelloAttempt, way: InitiatorHello, certificate: Uint8Array | undefined): StunMessage {
  const hello = StunMessage.request(Method.Hello);
  addAttemptId(hello, attempt.attemptId);
  addU32(hello, AttrType.Security, certificate === undefined ? WIRE_MODE[way] : way === 'tls-answered' ? SecurityMode.TlsAnsweredCertified : SecurityMode.TlsFlightCertified);
  // Older recipients read the answered Hello without ROLE; the new values are new to them anyway.
  if (way !== 'tls-answered' || certificate !== undefined) addRole(hello, 'initiator');
  // Sealed: the Hello is in the clear, and may reach a host that is not the recipient.
  if (certificate !== undefined) addInitiatorCertificate(hello, sealHelloCertificate(attempt.attemptSecret, attempt.attemptId, certificate));
  return hello;
}

/**
 * The initiator's Hello on a connected candidate. `tls-flight` resolves once written (the TLS
 * ClientHello goes next, without waiting); with `certificate` (our TLS certificate, DER, at
 * most MAX_HELLO_CERTIFICATE_BYTES; ignored by `plain`) a TLS Hello carries it and TLS then
 * runs without the recipient's confirmation. `plain` and `tls-answered` resolve once the
 * recipient's proof (or answer) checked out, and reject when it is not this attempt's recipient.
 */
export async function helloAsInitiator(socket: Socket, attempt: HelloAttempt, signal: AbortSignal, way: InitiatorHello, certificate?: Uint8Array): Promise<void> {
  const certified = way !== 'plain' && certificate !== undefined && certificate.length <= MAX_HELLO_CERTIFICATE_BYTES ? certificate : undefined;
  const hello = initiatorProof(attempt, way, certified);
  socket.write(sealed(hello, attempt));
  if (certified !== undefined) certifiedFlights.add(socket);
  if (way === 'tls-flight') {
    tlsFlights.add(socket);
    return;
  }
  const answer = await readOneMessage(socket, signal).catch((err: unknown) => {
    const unknownToOlder = way === 'plain' || certified !== undefined;
    throw unknownToOlder && err instanceof NattravError && err.code === ErrorCode.Closed ? new NattravError(ErrorCode.Closed, `${err.message} (${OLDER_RECIPIENT})`, { cause: err }) : err;
  });
  // Only a peer the broker told the secret to can write integrity under it.
  if (!verifyMessageIntegritySha256(answer, attempt.attemptSecret)) {
    throw new NattravError(ErrorCode.Protocol, 'the peer did not prove the attempt secret: it is not the recipient of this attempt');
  }
  const ours = way === 'tls-answered';
  const sameTransaction = Buffer.from(answer.transactionId).equals(Buffer.from(hello.transactionId));
  if (answer.method === Method.Hello && sameTransaction && answer.cls === MessageClass.ErrorResponse) {
    const theirs = getSecurityMode(answer);
    if (theirs !== undefined && isTls(theirs) !== ours) throw securityMismatch(ours, 'recipient');
  }
  if (way === 'plain') return checkRecipientProof(answer, attempt);
  // A plain recipient writes its proof at once, so it arrives before its refusal of our Hello.
  if (answer.method === Method.Hello && answer.cls === MessageClass.Indication && getRole(answer) === 'recipient' && getSecurityMode(answer) === SecurityMode.PlainProofs) {
    throw securityMismatch(true, 'recipient');
  }
  if (answer.method !== Method.Hello || answer.cls !== MessageClass.SuccessResponse || !sameTransaction) {
    throw new NattravError(ErrorCode.Protocol, 'the peer did not accept our Hello: it is not the recipient of this attempt');
  }
}

/** `plain`, initiator side: the recipient's proof is a Hello indication for this attempt with ROLE recipient. */
function checkRecipientProof(proof: StunMessage, attempt: HelloAttempt): void {
  // Our own Hello sent back to us has integrity under the secret too: its role (and class) tell it apart.
  if (getRole(proof) === 'initiator') throw new NattravError(ErrorCode.Protocol, 'the peer sent a proof that is not the recipient\'s (our own Hello reflected?)');
  const id = proof.method === Method.Hello ? getAttemptId(proof) : undefined;
  if (proof.cls !== MessageClass.Indication || getRole(proof) !== 'recipient' || id === undefined || !Buffer.from(id).equals(Buffer.from(attempt.attemptId))) {
    throw new NattravError(ErrorCode.Protocol, 'the peer sent no proof for this attempt: it is not the recipient of this attempt');
  }
  if (getSecurityMode(proof) !== SecurityMode.PlainProofs) throw securityMismatch(false, 'recipient');
}

/**
 * The recipient's Hello on a connected candidate: resolves when the connecting peer proved it is
 * this attempt's initiator, rejects (and the connection must be closed) otherwise. Without TLS
 * our own proof is written at once; with TLS nothing is written for the one-flight Hello, and
 * the success response for the answered one (older initiators). A SECURITY unlike ours is
 * refused with an error response carrying ours, so both sides report the mismatch.
 */
export async function helloAsRecipient(socket: Socket, attempt: HelloAttempt, signal: AbortSignal, tls: boolean): Promise<void> {
  if (!tls) {
    const proof = StunMessage.indication(Method.Hello);
    addAttemptId(proof, attempt.attemptId);
    addU32(proof, AttrType.Security, SecurityMode.PlainProofs);
    addRole(proof, 'recipient');
    socket.write(sealed(proof, attempt));
  }
  const hello = await readOneMessage(socket, signal);
  if (getRole(hello) === 'recipient') throw new NattravError(ErrorCode.Protocol, 'the connecting peer sent a recipient\'s Hello (our own proof reflected?)');
  const id = hello.method === Method.Hello && hello.cls === MessageClass.Request ? getAttemptId(hello) : undefined;
  if (id === undefined || !Buffer.from(id).equals(Buffer.from(attempt.attemptId))) {
    throw new NattravError(ErrorCode.Protocol, 'the connecting peer sent no Hello for this attempt');
  }
  if (!verifyMessageIntegritySha256(hello, attempt.attemptSecret)) {
    throw new NattravError(ErrorCode.Protocol, 'the connecting peer did not prove the attempt secret: it is not the initiator of this attempt');
  }
  const theirs = getSecurityMode(hello) ?? SecurityMode.Plain;
  if (isTls(theirs) !== tls) {
    const refusal = hello.errorResponse(StunErrorCode.Forbidden, tls ? 'TLS required' : 'plain TCP required');
    addU32(refusal, AttrType.Security, tls ? SecurityMode.TlsFlight : SecurityMode.PlainProofs);
    await new Promise<void>((resolve) => socket.end(sealed(refusal, attempt), resolve));
    throw securityMismatch(tls, 'initiator');
  }
  if (theirs === SecurityMode.Plain) {
    throw new NattravError(ErrorCode.Protocol, 'the initiator runs a nattrav older than the plain proofs without a round trip: upgrade it (or use TLS on both sides)');
  }
  if (theirs === SecurityMode.TlsFlightCertified || theirs === SecurityMode.TlsAnsweredCertified) {
    const sealed = getInitiatorCertificate(hello);
    if (sealed === undefined) throw new NattravError(ErrorCode.Protocol, 'the initiator announced its certificate in the Hello (SECURITY tls-flight-certified or tls-answered-certified) but sent none');
    const certificate = openHelloCertificate(attempt.attemptSecret, attempt.attemptId, sealed);
    if (certificate === undefined) throw new NattravError(ErrorCode.Protocol, 'the certificate in the initiator\'s Hello is not sealed under this attempt\'s secret');
    helloCertificates.set(socket, certificate);
  }
  if (theirs === SecurityMode.Tls || theirs === SecurityMode.TlsAnsweredCertified) socket.write(sealed(hello.successResponse(), attempt));
}
