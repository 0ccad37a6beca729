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
 */
import { ErrorCode, NattravError } from '../errors.js';
import { keyFingerprint } from './keys.js';
import { uriKeyFingerprint } from './uri.js';
import { certificateSpki, isCaCertificate, parseCertificate, sanUris, splitPemCertificates, toPem, x509 } from './x509.js';

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

const EKU_FOR_ROLE = { server: x509.ExtendedKeyUsage.serverAuth, client: x509.ExtendedKeyUsage.clientAuth } as const;

/**
 * Checks a peer's certificate (PEM text or DER bytes). Resolves with the peer's
 * URI; rejects with `NattravError(ERR_TLS)` whose message says what was wrong.
 */
export async function verifyPeerCertificate(certificate: string | Uint8Array, options: VerifyPeerOptions): Promise<VerifiedPeer> {
  const cert = parseCertificate(certificate, ErrorCode.Tls, "peer's certificate");
  const now = options.now ?? new Date();
  const uris = sanUris(cert);

  // 1. The URI.
  let uri: string;
  if (options.expectedUri !== undefined) {
    if (!uris.includes(options.expectedUri)) {
      const named = uris.length === 0 ? 'no URI' : uris.join(', ');
      throw tlsError(`certificate of ${options.expectedUri} names ${named}`);
    }
    uri = options.expectedUri;
  } else {
    const [only] = uris;
    if (only === undefined || uris.length !== 1) {
      throw tlsError(`the peer's certificate must name exactly one URI in subjectAltName; it names ${uris.length === 0 ? 'none' : uris.join(', ')}`);
    }
    uri = only;
  }

  // 2. The validity period.
  checkValidity(cert, `certificate of ${uri}`, now);

  // 5. Extended key usage (checked before trust: it does not depend on it).
  const role = options.peerRole ?? (options.expectedUri !== undefined ? 'server' : 'client');
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku !== null && !eku.usages.includes(EKU_FOR_ROLE[role])) {
    throw tlsError(`certificate of ${uri} is not valid for TLS ${role} authentication (extKeyUsage)`);
  }

  // 3. Self-certifying URIs.
  const fingerprint = uriKeyFingerprint(uri);
  const actual = keyFingerprint(certificateSpki(cert));
  const verified = (vouchedBy: VerifiedPeer['vouchedBy']): VerifiedPeer => {
    const pin = options.keyPinned === true ? options.expectedKeyFingerprint : undefined;
    if (pin !== undefined && actual !== pin) {
      const by = vouchedBy === 'ca' ? 'a trusted CA issued its certificate' : `the URI names it`;
      throw new NattravError(ErrorCode.KeyMismatch, `the key of ${uri} is ${actual}, not the pinned ${pin} (${by}, but a pin must match)`);
    }
    return { uri, certificatePem: toPem(cert), selfCertifying: vouchedBy === 'self-certifying', vouchedBy, keyFingerprint: actual };
  };
  if (fingerprint !== undefined) {
    if (actual !== fingerprint) throw tlsError(`certificate key does not match self-certifying URI ${uri}`);
    return verified('self-certifying');
  }

  // 4. A trust anchor vouches.
  const anchors = options.trust.flatMap(splitPemCertificates).map((pem) => parseCertificate(pem, ErrorCode.Identity, 'trusted CA certificate'));
  const raw = Buffer.from(cert.rawData);
  if (anchors.some((anchor) => raw.equals(Buffer.from(anchor.rawData)))) return verified('ca');
  for (const anchor of anchors) {
    if (!isCaCertificate(anchor) || anchor.subject !== cert.issuer) continue;
    if (!(await signedBy(cert, anchor))) continue;
    checkValidity(anchor, `the CA certificate of ${uri} (${anchor.subject})`, now);
    return verified('ca');
  }

  // 6. A key we were told to expect.
  if (options.expectedKeyFingerprint !== undefined) {
    if (actual === options.expectedKeyFingerprint) return verified('key');
    throw new NattravError(
      ErrorCode.KeyMismatch,
      `the key of ${uri} is ${actual}, not the expected ${options.expectedKeyFingerprint}${anchors.length === 0 ? '' : ', and no trusted CA issued its certificate'}`,
    );
  }
  if (anchors.length === 0) {
    throw tlsError(`certificate of ${uri} not issued by a trusted CA (no CA is configured, ${uri} is not a self-certifying URI, and no key was given to expect)`);
  }
  throw tlsError(`certificate of ${uri} not issued by a trusted CA (issuer ${cert.issuer})`);
}

async function signedBy(cert: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false; // an unsupported algorithm or a malformed signature is not a valid signature
  }
}

function checkValidity(cert: x509.X509Certificate, what: string, now: Date): void {
  if (now.getTime() > cert.notAfter.getTime()) throw tlsError(`${what} expired on ${cert.notAfter.toISOString()}`);
  if (now.getTime() < cert.notBefore.getTime()) throw tlsError(`${what} is not valid before ${cert.notBefore.toISOString()}`);
}

function tlsError(message: string): NattravError {
  return new NattravError(ErrorCode.Tls, message);
}
