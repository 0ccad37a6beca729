/**
 * Internal: the one place that walks a message's header and attribute TLVs
 * (RFC 8489 §5, §14) and applies the ordering rules of §14.5-§14.7. Used by
 * `decodeMessage`, the integrity checks and the stream decoder.
 */
import {
  ATTRIBUTE_HEADER_LENGTH,
  AttrType,
  FINGERPRINT_LENGTH,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  MAX_MESSAGE_LENGTH,
  MESSAGE_INTEGRITY_LENGTH,
  MESSAGE_INTEGRITY_SHA256_LENGTH,
  MESSAGE_INTEGRITY_SHA256_MIN_LENGTH,
} from './constants.js';
import { malformed, readU16, readU32 } from './fail.js';
import { attributeName } from './names.js';

/** RFC 8489 §5: the two most significant bits of the first byte are zero. */
const FIRST_BYTE_TOP_BITS = 0xc0;
/** RFC 8489 §5: offset of the 16-bit message length in the header. */
export const LENGTH_OFFSET = 2;
/** RFC 8489 §5: offset of the magic cookie in the header. */
export const COOKIE_OFFSET = 4;
/** RFC 8489 §5: offset of the 12-byte transaction ID in the header. */
export const TRANSACTION_ID_OFFSET = 8;
/** RFC 8489 §14: attribute values are padded to a multiple of 4 bytes. */
export const ALIGNMENT = 4;

/** The padded length of a value of `n` bytes. */
export function padded(n: number): number {
  return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1);
}

/** Where one attribute sits in the raw message. */
export interface AttributeSpan {
  /** The attribute type. */
  type: number;
  /** Offset of the attribute header (type, length) from the start of the message. */
  offset: number;
  /** Length of the value, without padding. */
  length: number;
}

/** The attributes a receiver must process, in order, and where the checksums sit. */
export interface ScanResult {
  /** Attributes not ignored under §14.5/§14.6, in wire order (including MI, MI-SHA256 and FINGERPRINT). */
  spans: AttributeSpan[];
  /** The MESSAGE-INTEGRITY that counts (the first, before any MESSAGE-INTEGRITY-SHA256), if any. */
  integrity: AttributeSpan | undefined;
  /** The MESSAGE-INTEGRITY-SHA256 that counts, if any. */
  integritySha256: AttributeSpan | undefined;
  /** FINGERPRINT (always the last attribute), if any. */
  fingerprint: AttributeSpan | undefined;
}

/**
 * Checks the header bytes that are present (`buf` may hold fewer than 20):
 * first two bits, length a multiple of 4 and within `maxMessageLength`, and
 * the magic cookie. Throws StunMalformed; returns the body length once known.
 */
export function checkHeaderPrefix(buf: Uint8Array, maxMessageLength: number): number | undefined {
  if (buf.length >= 1 && (buf[0] & FIRST_BYTE_TOP_BITS) !== 0) {
    throw malformed(`first byte 0x${buf[0].toString(16).padStart(2, '0')} is not STUN: its two most significant bits must be zero`);
  }
  const cookieBytes = Math.min(Math.max(buf.length - COOKIE_OFFSET, 0), 4);
  for (let i = 0; i < cookieBytes; i++) {
    const expected = (MAGIC_COOKIE >>> (24 - 8 * i)) & 0xff;
    if (buf[COOKIE_OFFSET + i] !== expected) throw malformed('magic cookie is not 0x2112A442');
  }
  if (buf.length < LENGTH_OFFSET + 2) return undefined;
  const length = readU16(buf, LENGTH_OFFSET);
  if (length % ALIGNMENT !== 0) throw malformed(`message length ${length} is not a multiple of ${ALIGNMENT}`);
  if (HEADER_LENGTH + length > maxMessageLength) {
    throw malformed(`message of ${HEADER_LENGTH + length} bytes exceeds the ${maxMessageLength}-byte limit`);
  }
  return length;
}

function describe(span: AttributeSpan): string {
  return attributeName(span.type);
}

/**
 * Validates a whole message (`raw` must be exactly header + length) and
 * returns its attribute spans. Throws StunMalformed. Does not check the
 * FINGERPRINT value (see `codec.ts`).
 */
export function scanMessage(raw: Uint8Array, maxMessageLength = MAX_MESSAGE_LENGTH): ScanResult {
  if (raw.length < HEADER_LENGTH) throw malformed(`message of ${raw.length} bytes is shorter than the ${HEADER_LENGTH}-byte header`);
  const length = checkHeaderPrefix(raw, maxMessageLength) ?? 0;
  if (readU32(raw, COOKIE_OFFSET) !== MAGIC_COOKIE) throw malformed('magic cookie is not 0x2112A442');
  if (raw.length !== HEADER_LENGTH + length) {
    throw malformed(`message length field says ${length} bytes but ${raw.length - HEADER_LENGTH} follow the header`);
  }
  const result: ScanResult = { spans: [], integrity: undefined, integritySha256: undefined, fingerprint: undefined };
  for (let offset = HEADER_LENGTH; offset < raw.length; ) {
    if (offset + ATTRIBUTE_HEADER_LENGTH > raw.length) throw malformed(`attribute header at offset ${offset} overruns the message`);
    const span: AttributeSpan = { type: readU16(raw, offset), offset, length: readU16(raw, offset + 2) };
    const next = offset + ATTRIBUTE_HEADER_LENGTH + padded(span.length);
    if (next > raw.length) {
      throw malformed(`${describe(span)} at offset ${offset} with length ${span.length} (padded) overruns the ${raw.length}-byte message`);
    }
    offset = next;
    if (result.fingerprint !== undefined) throw malformed(`FINGERPRINT must be the last attribute, but ${describe(span)} follows it`);
    if (span.type === AttrType.Fingerprint) {
      // §14.7: FINGERPRINT may follow MESSAGE-INTEGRITY(-SHA256) and must be last.
      if (span.length !== FINGERPRINT_LENGTH) throw malformed(`FINGERPRINT is ${span.length} bytes, not ${FINGERPRINT_LENGTH}`);
      result.fingerprint = span;
    } else if (result.integritySha256 !== undefined) {
      continue; // §14.6: everything but FINGERPRINT after MESSAGE-INTEGRITY-SHA256 is ignored.
    } else if (span.type === AttrType.MessageIntegritySha256) {
      const n = span.length;
      if (n < MESSAGE_INTEGRITY_SHA256_MIN_LENGTH || n > MESSAGE_INTEGRITY_SHA256_LENGTH || n % ALIGNMENT !== 0) {
        throw malformed(`MESSAGE-INTEGRITY-SHA256 is ${n} bytes; it must be 16-32 and a multiple of 4`);
      }
      result.integritySha256 = span;
    } else if (result.integrity !== undefined) {
      continue; // §14.5: everything but MI-SHA256 and FINGERPRINT after MESSAGE-INTEGRITY is ignored.
    } else if (span.type === AttrType.MessageIntegrity) {
      if (span.length !== MESSAGE_INTEGRITY_LENGTH) throw malformed(`MESSAGE-INTEGRITY is ${span.length} bytes, not ${MESSAGE_INTEGRITY_LENGTH}`);
      result.integrity = span;
    }
    result.spans.push(span);
  }
  return result;
}
