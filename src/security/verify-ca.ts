/**
 * The whole check of a peer's certificate with `@peculiar/x509`, for when trust anchors are
 * configured (verify.ts has the rules; it runs this module only then, since loading the
 * library costs 150 to 200 ms of CPU).
 */
import { ErrorCode, NattravError } from '../errors.js';
import { keyFingerprint } from './keys.js';
import { uriKeyFingerprint } from './uri.js';
import { peerUriOf, type VerifiedPeer, type VerifyPeerOptions } from './verify.js';
import { certificateSpki, isCaCertificate, parseCertificate, sanUris, splitPemCertificates, toPem, x509 } from './x509.js';

const EKU_FOR_ROLE = { server: x509.ExtendedKeyUsage.serverAuth, client: x509.ExtendedKeyUsage.clientAuth } as const;

/**
 * verify.ts's rules with `@peculiar/x509`, trust anchors included (rule 4): what
 * {@link verifyPeerCertificate} runs when a CA or pinned certificate is configured.
 */
export async function verifyWithAnchors(certificate: string | Uint8Array, options: VerifyPeerOptions): Promise<VerifiedPeer> {
  const cert = parseCertificate(certificate, ErrorCode.Tls, "peer's certificate");
  const now = options.now ?? new Date();
  const uris = sanUris(cert);

  // 1. The URI.
  const uri = peerUriOf(uris, options.expectedUri);

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
