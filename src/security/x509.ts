/**
 * The one place that loads `@peculiar/x509`, and small helpers around it.
 *
 * `@peculiar/x509` needs the `reflect-metadata` polyfill loaded before it
 * (ESM evaluates these two imports in order), and a WebCrypto provider: Node's
 * `webcrypto`, which signs and verifies ECDSA P-256 and Ed25519. Every other
 * security module imports x509 from here, never from the package directly.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;
type EcKeyImportParams = webcrypto.EcKeyImportParams;
import { ErrorCode, NattravError, type ErrorCodeValue } from '../errors.js';
import type { KeyType } from './keys.js';
import { randomSerialBytes } from './native-cert.js';

x509.cryptoProvider.set(webcrypto);

export { x509 };

/** The WebCrypto import parameters of a key type. */
function importAlgorithm(type: KeyType): EcKeyImportParams | Algorithm {
  return type === 'ed25519' ? { name: 'Ed25519' } : { name: 'ECDSA', namedCurve: 'P-256' };
}

/** The certificate signature algorithm of a key type: ecdsa-with-SHA256 or Ed25519. */
export function signingAlgorithm(type: KeyType): EcdsaParams | Algorithm {
  return type === 'ed25519' ? { name: 'Ed25519' } : { name: 'ECDSA', hash: 'SHA-256' };
}

/** A PEM private key as a (non-extractable) WebCrypto signing key. */
export async function cryptoPrivateKey(privateKeyPem: string, type: KeyType): Promise<CryptoKey> {
  const der = createPrivateKey(privateKeyPem).export({ format: 'der', type: 'pkcs8' });
  return webcrypto.subtle.importKey('pkcs8', der, importAlgorithm(type), false, ['sign']);
}

/** A DER SPKI as a WebCrypto verification key. */
export async function cryptoPublicKey(spki: Uint8Array, type: KeyType): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('spki', spki, importAlgorithm(type), true, ['verify']);
}

/** A random positive serial number, as hex. */
export function randomSerial(): string {
  return randomSerialBytes().toString('hex');
}

/**
 * Parses one certificate from PEM text or DER bytes. Throws a NattravError
 * with `code` (ERR_TLS for a peer's certificate, ERR_IDENTITY for our own files).
 */
export function parseCertificate(data: string | Uint8Array, code: ErrorCodeValue = ErrorCode.Identity, what = 'certificate'): x509.X509Certificate {
  try {
    return new x509.X509Certificate(typeof data === 'string' ? data : Buffer.from(data));
  } catch (err) {
    throw new NattravError(code, `could not parse the ${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** Splits PEM text that may hold several certificates into one PEM string per certificate. */
export function splitPemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((pem) => `${pem}\n`) ?? [];
}

/** The URIs in a certificate's subjectAltName extension (empty without one). */
export function sanUris(cert: x509.X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (san === null) return [];
  return san.names.items.filter((name) => name.type === x509.URL).map((name) => name.value);
}

/** The DER SubjectPublicKeyInfo of a certificate. */
export function certificateSpki(cert: x509.X509Certificate): Buffer {
  return Buffer.from(cert.publicKey.rawData);
}

/** A certificate as PEM text with a trailing newline. */
export function toPem(cert: x509.X509Certificate): string {
  return `${cert.toString('pem')}\n`;
}

/** True when the certificate says it is a CA (basicConstraints cA=TRUE). */
export function isCaCertificate(cert: x509.X509Certificate): boolean {
  return cert.getExtension(x509.BasicConstraintsExtension)?.ca === true;
}
