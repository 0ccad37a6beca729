/** A quick synchronous check of a leaf certificate against one CA, with Node's own X.509 (no chain building). */
import { X509Certificate } from 'node:crypto';

/**
 * Parses `der` and checks it was issued and signed by `ca` and is valid at
 * `now`. Returns the certificate, or why it is not acceptable, naming the CA as `caName`.
 */
export function issuedCertificate(der: Uint8Array, ca: X509Certificate, caName: string, now = new Date()): { cert: X509Certificate } | { problem: string } {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(der));
  } catch {
    return { problem: 'the certificate does not parse as X.509' };
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return { problem: `certificate not issued by ${caName}` };
  if (now < new Date(cert.validFrom)) return { problem: `certificate not valid before ${cert.validFrom}` };
  if (now > new Date(cert.validTo)) return { problem: `certificate expired on ${cert.validTo}` };
  return { cert };
}
