/**
 * The check of a peer's certificate, in one function, for both TLS roles.
 *
 * Node's own verification (`rejectUnauthorized: true`) checks chains but not
 * URI SANs, and rejects the self-signed certificates of self-certifying URIs;
 * so the TLS layer (tls.ts) accepts any certificate in the handshake and calls
 * {@link verifyPeerCertificate} before anyone uses the connection. The rules:
 *
 * 1. The URI: with `expectedUri` (the initiator checking the recipient) the
 *    certificate must name it among its SAN URIs; without (the recipient
 *    checking the initiator) it must name exactly one SAN URI, which is the
 *    peer's URI.
 * 2. The validity period must contain `now`.
 * 3. If the URI is self-certifying (uri.ts): the certificate's key must have
 *    the fingerprint the URI names. Issuer and signature do not matter; the
 *    handshake proved the peer holds that key.
 * 4. Otherwise the certificate must be one of the trust anchors itself (a pinned
 *    certificate), or be signed directly by a trust anchor that is a CA, valid now,
 *    whose subject is the certificate's issuer. Intermediate CAs are not supported.
 * 5. If the certificate limits its extended key usage, it must allow the role
 *    the peer plays (serverAuth for a recipient, clientAuth for an initiator).
 * 6. Else, with `expectedKeyFingerprint` (a key pinned by the user, or the key the
 *    broker holds for a plain name), the certificate's key must have that
 *    fingerprint: the handshake proved the peer holds it.
 * A key pinned by the user (`keyPinned`) must match in every case, also when rule 3
 * or 4 vouched.
 *
 * Without trust anchors (the common case: self-certifying URIs, pinned or broker-given keys)
 * the check runs on node:crypto's X509Certificate and der.ts alone; with anchors it runs
 * verify-ca.ts, on `@peculiar/x509`, loaded then (150 to 200 ms of CPU the first time).
 */
import { X509Certificate } from 'node:crypto';
import { ErrorCode, NattravError } from '../errors.js';
import { keyFingerprint } from './keys.js';
import { certificateParts } from './native-cert.js';
import { uriKeyFingerprint } from './uri.js';

/** What {@link verifyPeerCertificate} checks a certificate against. */
export interface VerifyPeerOptions {
  /** Trust anchors: CA (or pinned) certificates as PEM; a string may hold several. */
  trust: readonly string[];
  /** The URI the peer must hold (the initiator's view of the recipient). Without it the certificate must name exactly one URI. */
  expectedUri?: string;
  /** The role the peer plays, checked against extended key usage. @default 'server' with expectedUri, 'client' without */
  peerRole?: 'server' | 'client';
  /** The time to check validity at. @default new Date() */
  now?: Date;
  /**
   * The fingerprint (lowercase base32 SHA-256 of the SPKI, as in self-certifying URIs) the
   * peer's key must have when neither its URI nor a trust anchor vouches for it (rule 6).
   */
  expectedKeyFingerprint?: string;
  /**
   * `expectedKeyFingerprint` is the user's pin (`expectKey`, `--expect-key`): the key must
   * have it even when the URI or a trust anchor vouches for the certificate.
   */
  keyPinned?: boolean;
}

/** A certificate that passed {@link verifyPeerCertificate}. */
export interface VerifiedPeer {
  /** The peer's URI (from its certificate's SAN). */
  uri: string;
  /** The certificate as PEM. */
  certificatePem: string;
  /** True when the URI is self-certifying and the key matched it; false when a trust anchor or a pinned key vouched. */
  selfCertifying: boolean;
  /** How the peer was authenticated. */
  vouchedBy: 'self-certifying' | 'ca' | 'key';
  /** The fingerprint of the peer's key (base32 SHA-256 of its SPKI). */
  keyFingerprint: string;
}

/** extKeyUsage object identifiers of the roles (RFC 5280 section 4.2.1.12). */
const EKU_FOR_ROLE = { server: '1.3.6.1.5.5.7.3.1', client: '1.3.6.1.5.5.7.3.2' } as const;

/**
 * Checks a peer's certificate (PEM text or DER bytes). Resolves with the peer's
 * URI; rejects with `NattravError(ERR_TLS)` whose message says what was wrong.
 */
export async function verifyPeerCertificate(certificate: string | Uint8Array, options: VerifyPeerOptions): Promise<VerifiedPeer> {
  if (options.trust.length > 0) return (await import('./verify-ca.js')).verifyWithAnchors(certificate, options);
  return verifyWithoutAnchors(certificate, options);
}

/** Rules 1, 2, 5, 3 and 6, in that order, as verify-ca.ts runs them when no anchor is configured. */
function verifyWithoutAnchors(certificate: string | Uint8Array, options: VerifyPeerOptions): VerifiedPeer {
  let cert: X509Certificate;
  let parts: ReturnType<typeof certificateParts>;
  try {
    cert = new X509Certificate(typeof certificate === 'string' ? certificate : Buffer.from(certificate));
    parts = certificateParts(cert.raw);
  } catch (err) {
    throw new NattravError(ErrorCode.Tls, `could not parse the peer's certificate: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const now = options.now ?? new Date();
  const uris = parts.sanUris;

  // 1. The URI.
  const uri = peerUriOf(uris, options.expectedUri);

  // 2. The validity period.
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  // node:crypto gives "Bad time value" for a time it cannot read: no validity, no certificate.
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) throw tlsError(`certificate of ${uri} has a validity period that cannot be read`);
  if (now.getTime() > notAfter.getTime()) throw tlsError(`certificate of ${uri} expired on ${notAfter.toISOString()}`);
  if (now.getTime() < notBefore.getTime()) throw tlsError(`certificate of ${uri} is not valid before ${notBefore.toISOString()}`);

  // 5. Extended key usage (node:crypto's `keyUsage` is the extKeyUsage list, undefined without one).
  const role = options.peerRole ?? (options.expectedUri !== undefined ? 'server' : 'client');
  const eku = cert.keyUsage as string[] | undefined;
  if (eku !== undefined && !eku.includes(EKU_FOR_ROLE[role])) {
    throw tlsError(`certificate of ${uri} is not valid for TLS ${role} authentication (extKeyUsage)`);
  }

  // 3. Self-certifying URIs.
  const fingerprint = uriKeyFingerprint(uri);
  const actual = keyFingerprint(parts.spki);
  const verified = (vouchedBy: 'self-certifying' | 'key'): VerifiedPeer => {
    const pin = options.keyPinned === true ? options.expectedKeyFingerprint : undefined;
    if (pin !== undefined && actual !== pin) {
      throw new NattravError(ErrorCode.KeyMismatch, `the key of ${uri} is ${actual}, not the pinned ${pin} (the URI names it, but a pin must match)`);
    }
    return { uri, certificatePem: cert.toString(), selfCertifying: vouchedBy === 'self-certifying', vouchedBy, keyFingerprint: actual };
  };
  if (fingerprint !== undefined) {
    if (actual !== fingerprint) throw tlsError(`certificate key does not match self-certifying URI ${uri}`);
    return verified('self-certifying');
  }

  // 6. A key we were told to expect.
  if (options.expectedKeyFingerprint !== undefined) {
    if (actual === options.expectedKeyFingerprint) return verified('key');
    throw new NattravError(ErrorCode.KeyMismatch, `the key of ${uri} is ${actual}, not the expected ${options.expectedKeyFingerprint}`);
  }
  throw tlsError(`certificate of ${uri} not issued by a trusted CA (no CA is configured, ${uri} is not a self-certifying URI, and no key was given to expect)`);
}

/** Rule 1: the peer's URI among a certificate's subjectAltName `uris`: `expectedUri`, or the only one. Throws ERR_TLS naming what it found. */
export function peerUriOf(uris: readonly string[], expectedUri: string | undefined): string {
  if (expectedUri !== undefined) {
    if (!uris.includes(expectedUri)) throw tlsError(`certificate of ${expectedUri} names ${uris.length === 0 ? 'no URI' : uris.join(', ')}`);
    return expectedUri;
  }
  const [only] = uris;
  if (only === undefined || uris.length !== 1) {
    throw tlsError(`the peer's certificate must name exactly one URI in subjectAltName; it names ${uris.length === 0 ? 'none' : uris.join(', ')}`);
  }
  return only;
}

function tlsError(message: string): NattravError {
  return new NattravError(ErrorCode.Tls, message);
}
