/** Helpers for the security tests: certificates the library itself refuses to make. */
import type { KeyPairPem } from '../../src/security/keys.js';
import { cryptoPrivateKey, signingAlgorithm, toPem, x509 } from '../../src/security/x509.js';

const DAY_MS = 86_400_000;

/** What {@link forgeSelfSigned} may vary: the validity period, and extKeyUsage (absent by default). */
export interface ForgeOptions {
  notBefore?: Date;
  notAfter?: Date;
  /** extKeyUsage object identifiers; absent: no extKeyUsage extension. */
  eku?: string[];
}

/** A self-signed certificate naming `uris` for `key` (made by `@peculiar/x509`), without the library's checks (e.g. someone else's self-certifying URI). */
export async function forgeSelfSigned(key: KeyPairPem, uris: string[], options: ForgeOptions = {}): Promise<string> {
  const cert = await x509.X509CertificateGenerator.create({
    subject: [{ CN: ['forged'] }],
    issuer: [{ CN: ['forged'] }],
    notBefore: options.notBefore ?? new Date(Date.now() - DAY_MS),
    notAfter: options.notAfter ?? new Date(Date.now() + DAY_MS),
    publicKey: key.spki,
    signingKey: await cryptoPrivateKey(key.privateKeyPem, key.type),
    signingAlgorithm: signingAlgorithm(key.type),
    extensions: [
      ...(uris.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: x509.URL, value })))]),
      ...(options.eku === undefined ? [] : [new x509.ExtendedKeyUsageExtension(options.eku)]),
    ],
  });
  return toPem(cert);
}
