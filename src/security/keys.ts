/**
 * Identity keys: generation, PEM round trips, signatures and fingerprints.
 *
 * Two key types are supported: ECDSA on P-256 (signatures are SHA-256, DER
 * encoded, as X.509 and TLS use them) and Ed25519. Private keys are PKCS#8 PEM,
 * public keys SubjectPublicKeyInfo (SPKI) PEM or DER. Everything here is
 * synchronous `node:crypto`; certificates live in ca.ts.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { ErrorCode, NattravError } from '../errors.js';

/** The key types nattrav identities use. */
export type KeyType = 'ecdsa-p256' | 'ed25519';

/** Every {@link KeyType}, for option validation and help text. */
export const KEY_TYPES: readonly KeyType[] = ['ecdsa-p256', 'ed25519'];

/** The key type used when none is given. */
export const DEFAULT_KEY_TYPE: KeyType = 'ecdsa-p256';

/** A key pair as PEM text, with the public key's DER SPKI. */
export interface KeyPairPem {
  /** PKCS#8 PEM. */
  privateKeyPem: string;
  /** SubjectPublicKeyInfo PEM. */
  publicKeyPem: string;
  /** SubjectPublicKeyInfo DER */
  spki: Buffer;
  type: KeyType;
}

/** The digest of ECDSA signatures (Ed25519 has its own). */
const ECDSA_DIGEST = 'sha256';
/** The curve of `ecdsa-p256` keys, as node:crypto names it. */
const P256_CURVE = 'prime256v1';
/** The fingerprint hash. */
const FINGERPRINT_HASH = 'sha256';
/** RFC 4648 section 6 alphabet, lowercased. */
const BASE32_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
/** Bits per base32 character. */
const BASE32_BITS = 5;
/** Length of a {@link keyFingerprint}: ceil(256 / 5). */
export const FINGERPRINT_LENGTH = 52;

/** A fresh key pair. @param type @default 'ecdsa-p256' */
export function generateKeyPair(type: KeyType = DEFAULT_KEY_TYPE): KeyPairPem {
  if (!KEY_TYPES.includes(type)) {
    throw new NattravError(ErrorCode.InvalidArgument, `unknown key type ${String(type)}; use one of ${KEY_TYPES.join(', ')}`);
  }
  const { privateKey } =
    type === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: P256_CURVE });
  return fromPrivateKeyObject(privateKey);
}

/** The key pair of a PKCS#8 (or SEC1 "EC PRIVATE KEY") PEM private key. Throws ERR_INVALID_ARGUMENT for other keys. */
export function keyPairFromPrivatePem(pem: string): KeyPairPem {
  return fromPrivateKeyObject(privateKeyObject(pem));
}

/** The key type of a key object, or undefined when nattrav does not use that kind of key. */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === P256_CURVE) return 'ecdsa-p256';
  return undefined;
}

/** Signs `data`: ECDSA-SHA256 (DER signature) or Ed25519, by the key's type. */
export function sign(privateKeyPem: string, data: Uint8Array): Buffer {
  const key = privateKeyObject(privateKeyPem);
  return cryptoSign(keyTypeOf(key) === 'ed25519' ? null : ECDSA_DIGEST, data, key);
}

/**
 * Checks a signature made by {@link sign} with the key whose DER SPKI is `spki`.
 * Never throws: a malformed key or signature, or an unsupported key type, is `false`.
 */
export function verify(spki: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    const key = importPublicKey(spki);
    const type = keyTypeOf(key);
    if (type === undefined) return false;
    return cryptoVerify(type === 'ed25519' ? null : ECDSA_DIGEST, data, key, signature);
  } catch {
    return false;
  }
}

/**
 * The public key of a DER SPKI, imported the fast way where it is the same key (see
 * publicKeyInput). Throws what createPublicKey throws for a key it refuses (a point off the
 * curve, a coordinate out of range, garbage), exactly as the DER import would.
 */
export function importPublicKey(spki: Uint8Array): KeyObject {
  return createPublicKey(publicKeyInput(Buffer.from(spki)));
}

/** DER SPKI prefixes of the keys nattrav makes: Ed25519 (RFC 8410) and P-256 with an uncompressed point (RFC 5480). */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex');
const P256_COORDINATE_BYTES = 32;

/**
 * How to import a DER SPKI: for Ed25519 and uncompressed P-256 (every key nattrav makes) the
 * same key as a JWK, which OpenSSL 3 imports ten to twenty times faster than DER (its decoder
 * framework costs 250-400 us a key); anything else as DER.
 */
function publicKeyInput(spki: Buffer): Parameters<typeof createPublicKey>[0] {
  if (spki.length === ED25519_SPKI_PREFIX.length + 32 && spki.subarray(0, ED25519_SPKI_PREFIX.length).equals(ED25519_SPKI_PREFIX)) {
    return { key: { kty: 'OKP', crv: 'Ed25519', x: spki.subarray(ED25519_SPKI_PREFIX.length).toString('base64url') }, format: 'jwk' };
  }
  if (spki.length === P256_SPKI_PREFIX.length + 2 * P256_COORDINATE_BYTES && spki.subarray(0, P256_SPKI_PREFIX.length).equals(P256_SPKI_PREFIX)) {
    const x = spki.subarray(P256_SPKI_PREFIX.length, P256_SPKI_PREFIX.length + P256_COORDINATE_BYTES);
    const y = spki.subarray(P256_SPKI_PREFIX.length + P256_COORDINATE_BYTES);
    return { key: { kty: 'EC', crv: 'P-256', x: x.toString('base64url'), y: y.toString('base64url') }, format: 'jwk' };
  }
  return { key: spki, format: 'der', type: 'spki' };
}

/** Base32 (RFC 4648, lowercase, no padding) of SHA-256(spki): always {@link FINGERPRINT_LENGTH} characters. */
export function keyFingerprint(spki: Uint8Array): string {
  return base32(createHash(FINGERPRINT_HASH).update(spki).digest());
}

/** RFC 4648 base32, lowercase, without padding. */
export function base32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= BASE32_BITS) {
      bits -= BASE32_BITS;
      out += BASE32_ALPHABET[(buffer >>> bits) & 0x1f];
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32_ALPHABET[(buffer << (BASE32_BITS - bits)) & 0x1f];
  return out;
}

/** Parses a PEM private key of a supported type; throws ERR_INVALID_ARGUMENT otherwise. */
function privateKeyObject(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new NattravError(ErrorCode.InvalidArgument, 'not a PEM private key', { cause: err });
  }
  if (keyTypeOf(key) === undefined) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `unsupported private key (${key.asymmetricKeyType ?? 'unknown'}); nattrav uses ${KEY_TYPES.join(' or ')} keys`,
    );
  }
  return key;
}

function fromPrivateKeyObject(privateKey: KeyObject): KeyPairPem {
  const type = keyTypeOf(privateKey) as KeyType; // checked by privateKeyObject / generated
  const publicKey = createPublicKey(privateKey);
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    spki: publicKey.export({ format: 'der', type: 'spki' }),
    type,
  };
}
