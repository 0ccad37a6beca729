/**
 * Proof that a new registration comes from the instance that held the URI's session before
 * (broker/instances.ts): knowledge of that session's key. The peer sends the old session's ID
 * and an HMAC-SHA256 under its key over the new proof's nonce (single-use, so the proof cannot
 * be replayed) and the URI. Only the holder and the broker know a session key: a second
 * process with the same private key cannot produce it, and gets asked about instead.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Domain separation of the MAC. */
const LABEL = 'nattrav previous session v1';
/** Bytes of the MAC (HMAC-SHA256). */
export const PREVIOUS_SESSION_MAC_LENGTH = 32;

/** The MAC proving knowledge of `sessionKey` for the proof with `nonce` registering `uri`. */
export function previousSessionMac(sessionKey: Uint8Array, nonce: Uint8Array, uri: string): Buffer {
  return createHmac('sha256', sessionKey).update(LABEL).update('\0').update(nonce).update('\0').update(uri, 'utf8').digest();
}

/** Whether `mac` proves knowledge of `sessionKey` for `nonce` and `uri` (constant time). */
export function verifyPreviousSessionMac(sessionKey: Uint8Array, nonce: Uint8Array, uri: string, mac: Uint8Array): boolean {
  const expected = previousSessionMac(sessionKey, nonce, uri);
  return mac.length === expected.length && timingSafeEqual(expected, mac);
}
