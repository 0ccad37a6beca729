/**
 * TLS between peers, after the connection is made (direct or relayed): wraps
 * the socket with security/tls.ts and carries the connection info over.
 */
import { performance } from 'node:perf_hooks';
import { generateKeyPair } from '../security/keys.js';
import { CA_DEFAULTS } from '../security/ca-defaults.js';
import { nativeSelfSignedCertificate, validityFromNow } from '../security/native-cert.js';
import type { Identity } from '../security/identity.js';
import { PEER_CLOSED, secureConnection } from '../security/tls.js';
import { ErrorCode, NattravError } from '../errors.js';
import { OLDER_RECIPIENT, helloCertificateOf, sentHelloCertificate, sentTlsFlight } from './hello.js';
import type { VerifiedPeer } from '../security/verify.js';
import { selfCertifyingUri } from '../security/uri.js';
import { attachInfo, factsOf, type NattravSocket } from './info.js';

/** A throwaway self-certifying identity, for an initiator that has none (node:crypto alone: a few ms, no certificate library). */
export async function throwawayIdentity(): Promise<Identity> {
  const key = generateKeyPair();
  const uri = selfCertifyingUri(key.spki);
  return { uri, keyPem: key.privateKeyPem, certPem: nativeSelfSignedCertificate({ key, uri, ...validityFromNow(CA_DEFAULTS.leafValidDays) }), ca: [] };
}

/** Runs mutual TLS over a connected nattrav socket; resolves with the TLS socket carrying the updated info. */
export async function secure(
  socket: NattravSocket,
  options: {
    identity: Identity;
    ca: string[];
    expectedPeerUri?: string;
    expectedKeyFingerprint?: string;
    /** `expectedKeyFingerprint` is the user's pin (verify.ts). */
    keyPinned?: boolean;
    signal?: AbortSignal;
    started: number;
    /** Recipient only: refuses a verified initiator with a reason (security/tls.ts step 4). */
    admit?: (peer: VerifiedPeer) => string | undefined;
  },
): Promise<NattravSocket> {
  const role = socket.nattrav.role;
  const tlsStarted = performance.now();
  // The certified flight (hello.ts): the initiator's certificate came in its Hello, so the recipient decides before TLS.
  const helloCertificate = role === 'recipient' ? helloCertificateOf(socket) : undefined;
  const result = await secureConnection(socket, {
    role,
    identity: options.identity,
    ca: options.ca,
    ...(options.expectedPeerUri === undefined ? {} : { expectedPeerUri: options.expectedPeerUri }),
    ...(options.expectedKeyFingerprint === undefined ? {} : { expectedKeyFingerprint: options.expectedKeyFingerprint, keyPinned: options.keyPinned === true }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.admit === undefined ? {} : { admit: options.admit }),
    ...(helloCertificate === undefined ? {} : { helloCertificate }),
    ...(role === 'initiator' && sentHelloCertificate(socket) ? { certifiedFlight: true } : {}),
  }).catch((err: unknown) => {
    throw sentTlsFlight(socket) ? explainTlsFlightFailure(err) : err;
  });
  return attachInfo(
    result.socket,
    {
      ...factsOf(socket.nattrav),
      peerUri: result.peerUri,
      peerKeyFingerprint: result.peerKeyFingerprint,
      peerVouchedBy: result.vouchedBy,
      tls: true,
      setupMs: Math.round(performance.now() - options.started),
      tlsMs: Math.round(performance.now() - tlsStarted),
    },
    socket,
  );
}

/** True when `err` says the peer closed during the TLS handshake (or before its confirmation), explained or not. */
export function closedDuringTls(err: unknown): boolean {
  return err instanceof NattravError && err.code === ErrorCode.Tls && err.message.startsWith(PEER_CLOSED);
}

/** TLS errors (Node's codes) that mean the peer answered with bytes that are no TLS record. */
const NOT_TLS_RECORD: ReadonlySet<string> = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG']);

/**
 * What a failed TLS handshake after the one-flight Hello (hello.ts) is reported as. A recipient
 * that refuses the Hello answers with a STUN message (its refusal, or a plain recipient's proof),
 * which TLS sees as a record of no known version: that is the security mismatch, reported as
 * ERR_PLAIN_REQUIRED naming what to change. A close before the TLS answer gets the hint that an
 * older recipient closes on this Hello. Anything else is `err` itself.
 */
export function explainTlsFlightFailure(err: unknown): unknown {
  if (!(err instanceof NattravError) || err.code !== ErrorCode.Tls) return err;
  if (err.message === PEER_CLOSED) return new NattravError(ErrorCode.Tls, `${err.message} (${OLDER_RECIPIENT})`, { cause: err });
  const cause = (err.cause as { code?: string } | undefined)?.code;
  if (cause === undefined || !NOT_TLS_RECORD.has(cause)) return err;
  return new NattravError(
    ErrorCode.PlainRequired,
    'the recipient runs without TLS and this side requires it (drop --tls / tls on one side, or add it on the other): ' +
      'it answered our TLS handshake with a plain message (or it runs a nattrav older than the one-flight Hello: upgrade it)',
    { cause: err },
  );
}
