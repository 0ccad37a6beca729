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

/** Seals `secret` under `key` (32 bytes), bound to `attemptId`. */
export function sealSecret(key: Uint8Array, secret: Uint8Array, attemptId: Uint8Array): Buffer {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(attemptId);
  const body = Buffer.concat([cipher.update(secret), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

/** Opens a sealed secret; undefined when it was not sealed under `key` for `attemptId` (never throws). */
export function openSecret(key: Uint8Array, sealed: Uint8Array, attemptId: Uint8Array): Buffer | undefined {
  if (sealed.length !== SEALED_SECRET_LENGTH) return undefined;
  try {
    const bytes = Buffer.from(sealed);
    const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12));
    decipher.setAAD(attemptId);
    decipher.setAuthTag(bytes.subarray(12 + ATTEMPT_SECRET_LENGTH));
    return Buffer.concat([decipher.update(bytes.subarray(12, 12 + ATTEMPT_SECRET_LENGTH)), decipher.final()]);
  } catch {
    return undefined;
  }
}
