/**
 * A small certificate authority for nattrav identities, and self-signed
 * certificates for self-certifying URIs.
 *
 * A CA is one self-signed certificate (basicConstraints cA=TRUE, critical;
 * keyUsage keyCertSign|cRLSign, critical) and its key. It issues leaf
 * certificates straight from the CA (no intermediates) that name one URI:
 * subjectAltName URI = the URI, subject CN = the URI, keyUsage
 * digitalSignature, extKeyUsage serverAuth+clientAuth, so the same
 * certificate serves a peer as TLS client (initiator) and server (recipient).
 * OpenSSL verifies them (`openssl verify -CAfile ca.pem cert.pem`).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { DEFAULT_KEY_TYPE, KEY_TYPES, generateKeyPair, keyPairFromPrivatePem, type KeyPairPem, type KeyType } from './keys.js';
import { uriKeyFingerprint, uriMatchesKey } from './uri.js';
import { CA_DEFAULTS } from './ca-defaults.js';
import { CLOCK_SKEW_ALLOWANCE_MS, nativeSelfSignedCertificate } from './native-cert.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, readText, writeNewFile } from './files.js';
import { certificateSpki, cryptoPrivateKey, isCaCertificate, parseCertificate, randomSerial, signingAlgorithm, toPem, x509 } from './x509.js';

/** A CA's certificate and private key, as PEM. */
export interface CaFiles {
  certPem: string;
  keyPem: string;
}

/** Options of {@link createCa}. */
export interface CreateCaOptions {
  /** The CA's common name. @default 'nattrav CA' */
  name?: string;
  /** @default 'ecdsa-p256' */
  keyType?: KeyType;
  /** Validity from now, in days. @default 3650 */
  validDays?: number;
}

/** Options of {@link issueCertificate}. */
export interface IssueCertificateOptions {
  /** The issuing CA. */
  ca: CaFiles;
  /** The URI the certificate names (SAN URI and CN). */
  uri: string;
  /** The type of the new key; ignored when `key` is given. @default 'ecdsa-p256' */
  keyType?: KeyType;
  /** Validity from `notBefore`, in days; ignored when `notAfter` is given. @default 365 */
  validDays?: number;
  /** @default now minus {@link CLOCK_SKEW_ALLOWANCE_MS} */
  notBefore?: Date;
  /** @default notBefore plus validDays */
  notAfter?: Date;
  /** Certify this key instead of a new one. */
  key?: KeyPairPem;
}

/** Options of {@link selfSignedCertificate}. */
export interface SelfSignedCertificateOptions {
  key: KeyPairPem;
  /** The URI the certificate names (SAN URI and CN). */
  uri: string;
  /** @default 365 */
  validDays?: number;
}

export { CA_DEFAULTS };
export { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, readText, writeNewFile };

export { CLOCK_SKEW_ALLOWANCE_MS };
/** Milliseconds per day. */
const DAY_MS = 86_400_000;
/** The file names in a CA directory. */
export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca-key.pem';
/** A URI as certificates may name it: a scheme, then no whitespace. */
const URI_PATTERN = /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/;

/** Creates a self-signed CA certificate and its key. */
export async function createCa(options: CreateCaOptions = {}): Promise<CaFiles> {
  const name = options.name ?? CA_DEFAULTS.caName;
  if (name.length === 0) throw new NattravError(ErrorCode.InvalidArgument, 'the CA name must not be empty');
  const key = generateKeyPair(checkKeyType(options.keyType));
  const { notBefore, notAfter } = validity(undefined, undefined, options.validDays ?? CA_DEFAULTS.caValidDays);
  const subject: x509.JsonName = [{ CN: [name] }];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject,
    issuer: subject,
    notBefore,
    notAfter,
    publicKey: key.spki,
    signingKey: await cryptoPrivateKey(key.privateKeyPem, key.type),
    signingAlgorithm: signingAlgorithm(key.type),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(key.spki),
    ],
  });
  return { certPem: toPem(cert), keyPem: key.privateKeyPem };
}

/** Issues a leaf certificate naming `uri`, signed by the CA; returns it with its (new or given) key. */
export async function issueCertificate(options: IssueCertificateOptions): Promise<{ certPem: string; keyPem: string }> {
  checkUri(options.uri);
  const caCert = parseCertificate(options.ca.certPem, ErrorCode.Identity, 'CA certificate');
  if (!isCaCertificate(caCert)) throw new NattravError(ErrorCode.Identity, `the CA certificate (${caCert.subject}) is not a CA (basicConstraints cA is not set)`);
  const caKey = keyPairFromPrivatePem(options.ca.keyPem);
  if (!caKey.spki.equals(certificateSpki(caCert))) throw new NattravError(ErrorCode.Identity, 'the CA key does not belong to the CA certificate');
  const key = options.key ?? generateKeyPair(checkKeyType(options.keyType));
  checkSelfCertifying(options.uri, key);
  const { notBefore, notAfter } = validity(options.notBefore, options.notAfter, options.validDays ?? CA_DEFAULTS.leafValidDays);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [options.uri] }],
    issuer: caCert.subjectName,
    notBefore,
    notAfter,
    publicKey: key.spki,
    signingKey: await cryptoPrivateKey(caKey.privateKeyPem, caKey.type),
    signingAlgorithm: signingAlgorithm(caKey.type),
    extensions: [
      ...(await leafExtensions(options.uri, key)),
      await x509.AuthorityKeyIdentifierExtension.create(caKey.spki),
    ],
  });
  return { certPem: toPem(cert), keyPem: key.privateKeyPem };
}

/** A self-signed leaf certificate naming `uri` for `key` (for self-certifying URIs and default identities). */
export async function selfSignedCertificate(options: SelfSignedCertificateOptions): Promise<string> {
  checkUri(options.uri);
  checkSelfCertifying(options.uri, options.key);
  // Made with node:crypto alone (native-cert.ts): the same certificate, without the ASN.1 library's cost.
  return nativeSelfSignedCertificate({ key: options.key, uri: options.uri, ...validity(undefined, undefined, options.validDays ?? CA_DEFAULTS.leafValidDays) });
}

/**
 * Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir`, creating it (0700).
 * Refuses to overwrite an existing CA: a lost CA key cannot be recovered.
 */
export async function writeCaDir(dir: string, files: CaFiles): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await writeNewFile(join(dir, CA_KEY_FILE), files.keyPem, PRIVATE_FILE_MODE);
  await writeNewFile(join(dir, CA_CERT_FILE), files.certPem, 0o644);
}

/** Reads a CA written by {@link writeCaDir}. */
export async function readCaDir(dir: string): Promise<CaFiles> {
  const [certPem, keyPem] = await Promise.all([readText(join(dir, CA_CERT_FILE)), readText(join(dir, CA_KEY_FILE))]);
  return { certPem, keyPem };
}

async function leafExtensions(uri: string, key: KeyPairPem): Promise<x509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    new x509.SubjectAlternativeNameExtension([{ type: x509.URL, value: uri }]),
    await x509.SubjectKeyIdentifierExtension.create(key.spki),
  ];
}

function validity(notBefore: Date | undefined, notAfter: Date | undefined, validDays: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isFinite(validDays) || validDays <= 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `validity of ${String(validDays)} days: pass a positive number of days`);
  }
  const start = notBefore ?? new Date(Date.now() - CLOCK_SKEW_ALLOWANCE_MS);
  const end = notAfter ?? new Date(start.getTime() + validDays * DAY_MS);
  if (end.getTime() <= start.getTime()) {
    throw new NattravError(ErrorCode.InvalidArgument, `notAfter (${end.toISOString()}) must be later than notBefore (${start.toISOString()})`);
  }
  return { notBefore: start, notAfter: end };
}

function checkKeyType(type: KeyType | undefined): KeyType {
  if (type === undefined) return DEFAULT_KEY_TYPE;
  if (!KEY_TYPES.includes(type)) throw new NattravError(ErrorCode.InvalidArgument, `unknown key type ${String(type)}; use one of ${KEY_TYPES.join(', ')}`);
  return type;
}

function checkUri(uri: string): void {
  if (!URI_PATTERN.test(uri)) {
    throw new NattravError(ErrorCode.InvalidArgument, `${JSON.stringify(uri)} is not a URI; pass one like nattrav://alice`);
  }
}

function checkSelfCertifying(uri: string, key: KeyPairPem): void {
  if (uriKeyFingerprint(uri) !== undefined && !uriMatchesKey(uri, key.spki)) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `${uri} is a self-certifying URI of another key; certify the key it names, or name this key's own URI`,
    );
  }
}
