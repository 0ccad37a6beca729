/**
 * MESSAGE-INTEGRITY (RFC 8489 §14.5, HMAC-SHA1), MESSAGE-INTEGRITY-SHA256
 * (§14.6) and the long-term credential key (§9.2.2).
 *
 * The HMAC covers the message up to (not including) the integrity attribute,
 * with the header's length field set as if the integrity attribute were the
 * last one in the message.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { ATTRIBUTE_HEADER_LENGTH, HEADER_LENGTH } from './constants.js';
import { writeU16 } from './fail.js';
import { LENGTH_OFFSET, scanMessage, type AttributeSpan } from './scan.js';
import type { StunMessage } from './message.js';

/** The two HMAC hashes STUN uses. */
export type IntegrityHash = 'sha1' | 'sha256';

/**
 * The HMAC of `raw[0, span.offset)` with the length field adjusted to end
 * after the attribute at `span` (whose value is `span.length` bytes).
 */
export function computeIntegrity(hash: IntegrityHash, key: Uint8Array, raw: Uint8Array, span: AttributeSpan): Buffer {
  const header = Uint8Array.from(raw.subarray(0, HEADER_LENGTH));
  writeU16(header, LENGTH_OFFSET, span.offset + ATTRIBUTE_HEADER_LENGTH + span.length - HEADER_LENGTH);
  return createHmac(hash, key).update(header).update(raw.subarray(HEADER_LENGTH, span.offset)).digest();
}

function verify(hash: IntegrityHash, msg: StunMessage, key: Uint8Array): boolean {
  const raw = msg.raw;
  if (raw === undefined || !(key instanceof Uint8Array)) return false;
  let span: AttributeSpan | undefined;
  try {
    const scan = scanMessage(raw, Number.MAX_SAFE_INTEGER);
    span = hash === 'sha1' ? scan.integrity : scan.integritySha256;
  } catch {
    return false; // raw is not a well-formed message (only possible for a hand-built StunMessage)
  }
  if (span === undefined) return false;
  const valueStart = span.offset + ATTRIBUTE_HEADER_LENGTH;
  const received = raw.subarray(valueStart, valueStart + span.length);
  // §14.6: MESSAGE-INTEGRITY-SHA256 may be truncated; compare the leading bytes.
  const expected = computeIntegrity(hash, key, raw, span).subarray(0, span.length);
  return timingSafeEqual(expected, received);
}

/** True when `msg.raw` carries a MESSAGE-INTEGRITY that matches `key`; false when absent, wrong, or the message was not decoded. */
export function verifyMessageIntegrity(msg: StunMessage, key: Uint8Array): boolean {
  return verify('sha1', msg, key);
}

/** True when `msg.raw` carries a MESSAGE-INTEGRITY-SHA256 (possibly truncated) that matches `key`; false otherwise. */
export function verifyMessageIntegritySha256(msg: StunMessage, key: Uint8Array): boolean {
  return verify('sha256', msg, key);
}

/**
 * RFC 8489 §9.2.2 long-term credential key: MD5(username ":" realm ":" password).
 * The caller applies OpaqueString/SASLprep to the password first (RFC 5769 §2.4
 * gives "TheMatrIX" for "The\u00ADM\u00AAtr\u2168").
 */
export function longTermKey(username: string, realm: string, password: string): Uint8Array {
  return createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest();
}
