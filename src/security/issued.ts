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

/** The subjectAltName URI scheme that marks a broker's certificate: `nattrav-broker://NAME`. */
export const BROKER_URI_PREFIX = 'nattrav-broker://';

/** The subjectAltName entries of `cert`, as Node prints them (`URI:...`, `DNS:...`, `IP Address:...`). */
function altNames(cert: X509Certificate): Array<{ type: string; value: string }> {
  const text = cert.subjectAltName ?? '';
  return text
    .split(/,\s*/)
    .map((entry) => {
      const colon = entry.indexOf(':');
      return { type: entry.slice(0, colon).trim(), value: entry.slice(colon + 1).trim() };
    })
    .filter((entry) => entry.type !== '');
}

/**
 * Why `cert` cannot stand for the broker we dialed at `host`, or undefined. A broker's
 * certificate names the broker: a `nattrav-broker://` URI (what `nattrav ca issue --uri
 * nattrav-broker://NAME` writes), or `host` as a DNS name or IP address. A certificate
 * naming a peer (`nattrav://`) never does, even from the broker's CA: a peer of that CA
 * must not be able to impersonate the broker.
 */
export function brokerCertificateProblem(cert: X509Certificate, host: string): string | undefined {
  const names = altNames(cert);
  const peers = names.filter((n) => n.type === 'URI' && n.value.startsWith('nattrav://')).map((n) => n.value);
  if (peers.length > 0) return `certificate names the peer ${peers.join(', ')}: a peer's certificate cannot authenticate a broker`;
  const wanted = host.toLowerCase().replace(/^\[|\]$/g, '');
  const named = names.some(
    (n) =>
      (n.type === 'URI' && n.value.startsWith(BROKER_URI_PREFIX)) ||
      (n.type === 'DNS' && n.value.toLowerCase() === wanted) ||
      (n.type === 'IP Address' && n.value.toLowerCase() === wanted),
  );
  if (!named) return `certificate names neither a broker (a ${BROKER_URI_PREFIX} URI) nor ${host} (subjectAltName: ${cert.subjectAltName ?? 'none'})`;
  return undefined;
}
