/** What a certificate says, in plain fields: for `nattrav ca show` and for logs. */
import { createPublicKey } from 'node:crypto';
import { ErrorCode } from '../errors.js';
import { keyFingerprint, keyTypeOf, type KeyType } from './keys.js';
import { uriMatchesKey } from './uri.js';
import { certificateSpki, isCaCertificate, parseCertificate, sanUris } from './x509.js';

/** The facts of one certificate. */
export interface CertificateInfo {
  subject: string;
  issuer: string;
  /** Hex serial number. */
  serialNumber: string;
  /** SAN URIs. */
  uris: string[];
  /** ISO 8601. */
  notBefore: string;
  /** ISO 8601. */
  notAfter: string;
  /** The key type, or the algorithm name for keys nattrav does not use. */
  keyType: KeyType | string;
  /** {@link keyFingerprint} of the certificate's key: the `k-...` part of its self-certifying URI. */
  fingerprint: string;
  /** True when basicConstraints says cA. */
  isCa: boolean;
  /** True when the certificate signs itself (subject = issuer). */
  selfIssued: boolean;
  /** The SAN URIs that are self-certifying URIs of this certificate's key. */
  selfCertifyingUris: string[];
}

/** Describes a certificate given as PEM text or DER bytes; ERR_IDENTITY when it does not parse. */
export function describeCertificate(certificate: string | Uint8Array): CertificateInfo {
  const cert = parseCertificate(certificate, ErrorCode.Identity);
  const spki = certificateSpki(cert);
  const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  const uris = sanUris(cert);
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber,
    uris,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    keyType: keyTypeOf(key) ?? key.asymmetricKeyType ?? 'unknown',
    fingerprint: keyFingerprint(spki),
    isCa: isCaCertificate(cert),
    selfIssued: cert.subject === cert.issuer,
    selfCertifyingUris: uris.filter((uri) => uriMatchesKey(uri, spki)),
  };
}
