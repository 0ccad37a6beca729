/** FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message up to the attribute, XOR 0x5354554E. */
import { crc32 } from 'node:zlib';
import { ATTRIBUTE_HEADER_LENGTH, FINGERPRINT_XOR } from './constants.js';
import { malformed, readU32 } from './fail.js';
import type { AttributeSpan } from './scan.js';

/** The FINGERPRINT value for a message whose FINGERPRINT attribute header starts at `offset` (length field already final). */
export function computeFingerprint(raw: Uint8Array, offset: number): number {
  return (crc32(raw.subarray(0, offset)) ^ FINGERPRINT_XOR) >>> 0;
}

/** Throws StunMalformed unless the FINGERPRINT at `span` matches the message. */
export function checkFingerprint(raw: Uint8Array, span: AttributeSpan): void {
  const received = readU32(raw, span.offset + ATTRIBUTE_HEADER_LENGTH);
  const expected = computeFingerprint(raw, span.offset);
  if (received !== expected) {
    throw malformed(`FINGERPRINT 0x${received.toString(16).padStart(8, '0')} does not match the message (expected 0x${expected.toString(16).padStart(8, '0')})`);
  }
}
