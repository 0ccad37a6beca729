/**
 * A peer's identity: its URI, its key and the certificate that binds them,
 * plus the CAs it trusts to vouch for other peers.
 *
 * On disk an identity is a directory as `nattrav ca issue --out DIR` writes
 * it: `cert.pem`, `key.pem` (0600) and optionally `ca.pem` (one or more CA
 * certificates to trust). A peer without one gets {@link ephemeralOrKeptIdentity}:
 * a key kept per URI in `~/.nattrav/keys/` and a fresh self-signed certificate.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { selfSignedCertificate } from './ca.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, readOptional, readText, writeNewFile } from './files.js';
import { defaultKeyDir, keepNewKey, keptKey, keptKeyPath } from './kept-key.js';
import { DEFAULT_KEY_TYPE, generateKeyPair, keyPairFromPrivatePem, type KeyPairPem, type KeyType } from './keys.js';
import { selfCertifyingUri } from './uri.js';
import { certificateSpki, isCaCertificate, parseCertificate, sanUris, splitPemCertificates } from './x509.js';

export { defaultKeyDir, keptKeyPath };

/** Who a peer is in TLS, and whom it trusts. */
export interface Identity {
  readonly uri: string;
  /** PKCS#8 PEM private key. */
  readonly keyPem: string;
  /** PEM certificate naming `uri` (SAN URI) for `keyPem`'s key. */
  readonly certPem: string;
  /** CA certificates (PEM) this peer trusts; empty = trust only self-certifying URIs */
  readonly ca: readonly string[];
}

/** The file names of an identity directory. */
export const IDENTITY_CERT_FILE = 'cert.pem';
export const IDENTITY_KEY_FILE = 'key.pem';
export const IDENTITY_CA_FILE = 'ca.pem';


/**
 * Loads the identity in `dir` (cert.pem, key.pem, optional ca.pem) and checks it:
 * the certificate names exactly one URI and belongs to the key. `caPem` adds trust anchors.
 */
export async function loadIdentity(dir: string, caPem: string[] = []): Promise<Identity> {
  const [certText, keyPem, caText] = await Promise.all([
    readText(join(dir, IDENTITY_CERT_FILE)),
    readText(join(dir, IDENTITY_KEY_FILE)),
    readOptional(join(dir, IDENTITY_CA_FILE)),
  ]);
  const [certPem] = splitPemCertificates(certText);
  if (certPem === undefined) throw new NattravError(ErrorCode.Identity, `${join(dir, IDENTITY_CERT_FILE)} holds no PEM certificate`);
  const ca = [...(caText === undefined ? [] : splitPemCertificates(caText)), ...caPem.flatMap(splitPemCertificates)];
  return checkedIdentity({ certPem, keyPem, ca }, dir);
}

/** Writes `identity` into `dir` (created 0700): cert.pem, key.pem (0600), and ca.pem when it trusts CAs. Never overwrites. */
export async function saveIdentity(dir: string, identity: Identity): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await writeNewFile(join(dir, IDENTITY_KEY_FILE), identity.keyPem, PRIVATE_FILE_MODE);
  await writeNewFile(join(dir, IDENTITY_CERT_FILE), identity.certPem, 0o644);
  if (identity.ca.length > 0) await writeNewFile(join(dir, IDENTITY_CA_FILE), identity.ca.join(''), 0o644);
}

/** Options of {@link ephemeralOrKeptIdentity} and {@link newSelfCertifyingIdentity}. */
export interface KeptIdentityOptions {
  /** Where keys are kept. @default ~/.nattrav/keys */
  dir?: string;
  /** The type of a newly created key. @default 'ecdsa-p256' */
  keyType?: KeyType;
  /** CA certificates (PEM) to trust. @default [] (only self-certifying URIs) */
  ca?: readonly string[];
}

/**
 * For a peer with no configured identity: a key kept in `dir` (default
 * ~/.nattrav/keys/<sha256(uri) hex>.pem, created 0600 on first use) and a fresh
 * self-signed cert naming `uri`. For a self-certifying URI the kept key must be
 * the one it names (see {@link newSelfCertifyingIdentity}); otherwise ERR_IDENTITY.
 */
export async function ephemeralOrKeptIdentity(uri: string, options: KeptIdentityOptions = {}): Promise<Identity> {
  const key = await keptKey(uri, options);
  const certPem = await selfSignedCertificate({ key, uri });
  return { uri, keyPem: key.privateKeyPem, certPem, ca: options.ca ?? [] };
}

/**
 * A new key, its self-certifying URI (`nattrav://k-<fingerprint>[/<label>]`)
 * and a self-signed certificate; the key is kept in `dir` so that
 * {@link ephemeralOrKeptIdentity} finds it again for that URI.
 */
export async function newSelfCertifyingIdentity(options: KeptIdentityOptions & { label?: string } = {}): Promise<Identity> {
  const key = generateKeyPair(options.keyType ?? DEFAULT_KEY_TYPE);
  const uri = selfCertifyingUri(key.spki, options.label);
  const dir = options.dir ?? defaultKeyDir();
  await keepNewKey(dir, keptKeyPath(dir, uri), key);
  const certPem = await selfSignedCertificate({ key, uri });
  return { uri, keyPem: key.privateKeyPem, certPem, ca: options.ca ?? [] };
}

/**
 * The identity kept in `dir`: loaded when `dir` holds one (cert.pem and key.pem, as
 * {@link saveIdentity} or `nattrav ca issue` write them), else a new self-certifying one
 * (`nattrav://k-<fingerprint>[/<label>]`) saved there, so the same URI comes back next time.
 * `created` says which. A directory with only one of the two files is an error (ERR_IDENTITY).
 */
export async function loadOrCreateIdentity(dir: string, options: { keyType?: KeyType; label?: string } = {}): Promise<{ identity: Identity; created: boolean }> {
  const [cert, key] = await Promise.all([readOptional(join(dir, IDENTITY_CERT_FILE)), readOptional(join(dir, IDENTITY_KEY_FILE))]);
  if (cert !== undefined || key !== undefined) return { identity: await loadIdentity(dir), created: false };
  const pair = generateKeyPair(options.keyType ?? DEFAULT_KEY_TYPE);
  const uri = selfCertifyingUri(pair.spki, options.label);
  const identity: Identity = { uri, keyPem: pair.privateKeyPem, certPem: await selfSignedCertificate({ key: pair, uri }), ca: [] };
  await saveIdentity(dir, identity);
  return { identity, created: true };
}


/** Checks that an identity is usable: one SAN URI, the key belongs to the certificate, the CAs are CAs. */
export function checkedIdentity(identity: { certPem: string; keyPem: string; ca: readonly string[] }, where = 'the identity'): Identity {
  const cert = parseCertificate(identity.certPem, ErrorCode.Identity, `certificate of ${where}`);
  const uris = sanUris(cert);
  const [uri] = uris;
  if (uri === undefined || uris.length !== 1) {
    throw new NattravError(ErrorCode.Identity, `the certificate of ${where} must name exactly one URI in subjectAltName; it names ${uris.length === 0 ? 'none' : uris.join(', ')}`);
  }
  let key: KeyPairPem;
  try {
    key = keyPairFromPrivatePem(identity.keyPem);
  } catch (err) {
    throw new NattravError(ErrorCode.Identity, `the key of ${where} is not usable: ${(err as Error).message}`, { cause: err });
  }
  if (!key.spki.equals(certificateSpki(cert))) throw new NattravError(ErrorCode.Identity, `the key of ${where} does not belong to its certificate (${uri})`);
  for (const pem of identity.ca) {
    const caCert = parseCertificate(pem, ErrorCode.Identity, `CA certificate of ${where}`);
    if (!isCaCertificate(caCert)) throw new NattravError(ErrorCode.Identity, `${caCert.subject} in the CA list of ${where} is not a CA certificate`);
  }
  return { uri, keyPem: identity.keyPem, certPem: identity.certPem, ca: [...identity.ca] };
}


