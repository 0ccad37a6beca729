/**
 * The per-attempt secret (issue: "attempts bound to their peers"). The broker draws
 * 32 random bytes for each attempt and hands them to each peer over that peer's own
 * channel, sealed so a bystander who sees every packet cannot read them:
 * - to the initiator under X25519(broker ephemeral, initiator ephemeral) (the
 *   initiator's Connect carries its EPHEMERAL-KEY; the answer carries the broker's);
 * - to the recipient under its registration's session key.
 * Relay requests and both Hello messages carry MESSAGE-INTEGRITY-SHA256 under the
 * secret, so a party that only knows the attempt ID can neither relay, nor answer,
 * nor start the Hello. (A broker the initiator cannot authenticate could still play
 * both ends: that is what end-to-end TLS and --broker-ca are for.)
 *
 * Sealed form (the ATTEMPT-SECRET attribute): 12-byte AES-GCM nonce || ciphertext || 16-byte tag,
 * with the attempt ID as additional data.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/** Length of the secret, in bytes. */
export const ATTEMPT_SECRET_LENGTH = 32;
/** Length of the sealed secret (nonce + ciphertext + tag). */
export const SEALED_SECRET_LENGTH = 12 + ATTEMPT_SECRET_LENGTH + 16;

const RECIPIENT_INFO = Buffer.from('nattrav attempt secret for the recipient');
/** Open mode has no session: the secret is sealed under this all-zero key, which hides nothing (documented). */
const OPEN_MODE_KEY = Buffer.alloc(32);

/** A fresh attempt secret. */
export function newAttemptSecret(): Buffer {
  return randomBytes(ATTEMPT_SECRET_LENGTH);
}

/** The key sealing the recipient's copy: HKDF over its session key, salted with the attempt ID (open mode: none). */
export function recipientSealKey(sessionKey: Uint8Array | undefined, attemptId: Uint8Array): Buffer {
  if (sessionKey === undefined) return OPEN_MODE_KEY;
  return Buffer.from(hkdfSync('sha256', sessionKey, Buffer.from(attemptId), RECIPIENT_INFO, 32));
}

/** What sealing adds to its plaintext: the 12-byte nonce and the 16-byte tag. */
export const SEAL_OVERHEAD = 12 + 16;

/** AES-256-GCM under `key`: nonce || ciphertext || tag, with `aad` as additional data. */
function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

/** Opens what {@link seal} made; undefined when it was not sealed under `key` with `aad` (never throws). */
function open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer | undefined {
  if (sealed.length < SEAL_OVERHEAD) return undefined;
  try {
    const bytes = Buffer.from(sealed);
    const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12));
    decipher.setAAD(aad);
    decipher.setAuthTag(bytes.subarray(bytes.length - 16));
    return Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** Seals `secret` under `key` (32 bytes), bound to `attemptId`. */
export function sealSecret(key: Uint8Array, secret: Uint8Array, attemptId: Uint8Array): Buffer {
  return seal(key, secret, attemptId);
}

/** Opens a sealed secret; undefined when it was not sealed under `key` for `attemptId` (never throws). */
export function openSecret(key: Uint8Array, sealed: Uint8Array, attemptId: Uint8Array): Buffer | undefined {
  return sealed.length === SEALED_SECRET_LENGTH ? open(key, sealed, attemptId) : undefined;
}

const CERTIFICATE_INFO = Buffer.from('nattrav initiator certificate in the Hello');

/** The key sealing the initiator's certificate in its Hello: HKDF over the attempt secret, salted with the attempt ID. */
function certificateKey(attemptSecret: Uint8Array, attemptId: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', attemptSecret, Buffer.from(attemptId), CERTIFICATE_INFO, 32));
}

/**
 * Seals the initiator's certificate (DER) for its Hello (INITIATOR-CERTIFICATE), so that only
 * holders of the attempt secret (the two peers, and the broker that drew it) learn who connects:
 * the Hello travels before TLS, in the clear, and may reach a host that is not the recipient.
 */
export function sealHelloCertificate(attemptSecret: Uint8Array, attemptId: Uint8Array, certificate: Uint8Array): Buffer {
  return seal(certificateKey(attemptSecret, attemptId), certificate, attemptId);
}

/** Opens what {@link sealHelloCertificate} made; undefined when it was not sealed under this attempt's secret (never throws). */
export function openHelloCertificate(attemptSecret: Uint8Array, attemptId: Uint8Array, sealed: Uint8Array): Buffer | undefined {
  return open(certificateKey(attemptSecret, attemptId), sealed, attemptId);
}
