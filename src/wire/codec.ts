/**
 * STUN message encoding and decoding (RFC 8489 §5, §14): header, attribute
 * TLVs with padding, and the trailing SOFTWARE / MESSAGE-INTEGRITY /
 * MESSAGE-INTEGRITY-SHA256 / FINGERPRINT attributes.
 */
import {
  ATTRIBUTE_HEADER_LENGTH,
  AttrType,
  FINGERPRINT_LENGTH,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  MAX_MESSAGE_LENGTH,
  MAX_SOFTWARE_BYTES,
  MESSAGE_INTEGRITY_LENGTH,
  MESSAGE_INTEGRITY_SHA256_LENGTH,
} from './constants.js';
import { checkBytes, checkInteger, invalidArgument, readU16, readU32, writeU16, writeU32 } from './fail.js';
import { checkFingerprint, computeFingerprint } from './fingerprint.js';
import { computeIntegrity, type IntegrityHash } from './integrity.js';
import { decodeMessageType, encodeMessageType, isComprehensionRequired, StunMessage } from './message.js';
import { attributeName } from './names.js';
import { checkHeaderPrefix, COOKIE_OFFSET, LENGTH_OFFSET, padded, scanMessage, TRANSACTION_ID_OFFSET } from './scan.js';
import { encodeText } from './text.js';

export { verifyMessageIntegrity, verifyMessageIntegritySha256, longTermKey } from './integrity.js';

/** Options of {@link encodeMessage}. None is set by default. */
export interface EncodeOptions {
  /** Adds SOFTWARE (before integrity). */
  software?: string;
  /** Adds MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with this key. */
  integrityKey?: Uint8Array;
  /** Adds MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) with this key. */
  integritySha256Key?: Uint8Array;
  /** Adds FINGERPRINT (RFC 8489 §14.7) last. @default false */
  fingerprint?: boolean;
  /** Byte used to pad attribute values to 4 bytes; default 0. (RFC 5769 vectors pad with 0x20.) @default 0 */
  paddingByte?: number;
}

/** Attributes that only {@link encodeMessage} itself may place (they depend on the bytes before them). */
const TRAILER_TYPES: ReadonlySet<number> = new Set([AttrType.MessageIntegrity, AttrType.MessageIntegritySha256, AttrType.Fingerprint]);

/**
 * Encodes `msg` (method, class, transaction ID, attributes in order), then
 * appends SOFTWARE, MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
 * FINGERPRINT as `options` asks. Throws InvalidArgument when `msg` already
 * holds one of the last three (re-encode a decoded message without them) or
 * when the result would exceed `MAX_MESSAGE_LENGTH`.
 */
export function encodeMessage(msg: StunMessage, options: EncodeOptions = {}): Buffer {
  const paddingByte = options.paddingByte ?? 0;
  checkInteger(paddingByte, 0, 0xff, 'paddingByte');
  if (options.integrityKey !== undefined) checkBytes(options.integrityKey, 'integrityKey');
  if (options.integritySha256Key !== undefined) checkBytes(options.integritySha256Key, 'integritySha256Key');
  const attributes = msg.attributes.slice();
  for (const a of attributes) {
    if (TRAILER_TYPES.has(a.type)) {
      throw invalidArgument(`${attributeName(a.type)} is added by encodeMessage options (integrityKey, integritySha256Key, fingerprint); remove it from the attributes`);
    }
  }
  if (options.software !== undefined) {
    attributes.push({ type: AttrType.Software, value: encodeText(options.software, MAX_SOFTWARE_BYTES, 'SOFTWARE') });
  }

  let length = 0;
  for (const a of attributes) length += ATTRIBUTE_HEADER_LENGTH + padded(a.value.length);
  const trailerLength =
    (options.integrityKey !== undefined ? ATTRIBUTE_HEADER_LENGTH + MESSAGE_INTEGRITY_LENGTH : 0) +
    (options.integritySha256Key !== undefined ? ATTRIBUTE_HEADER_LENGTH + MESSAGE_INTEGRITY_SHA256_LENGTH : 0) +
    (options.fingerprint === true ? ATTRIBUTE_HEADER_LENGTH + FINGERPRINT_LENGTH : 0);
  const total = HEADER_LENGTH + length + trailerLength;
  if (total > MAX_MESSAGE_LENGTH) throw invalidArgument(`message would be ${total} bytes, over the ${MAX_MESSAGE_LENGTH}-byte limit; send fewer or shorter attributes`);

  const buf = Buffer.alloc(total, paddingByte);
  writeU16(buf, 0, encodeMessageType(msg.method, msg.cls));
  writeU16(buf, LENGTH_OFFSET, length);
  writeU32(buf, COOKIE_OFFSET, MAGIC_COOKIE);
  buf.set(msg.transactionId, TRANSACTION_ID_OFFSET);
  let offset = HEADER_LENGTH;
  for (const a of attributes) {
    writeU16(buf, offset, a.type);
    writeU16(buf, offset + 2, a.value.length);
    buf.set(a.value, offset + ATTRIBUTE_HEADER_LENGTH);
    offset += ATTRIBUTE_HEADER_LENGTH + padded(a.value.length);
  }

  const appendIntegrity = (hash: IntegrityHash, type: number, key: Uint8Array, size: number): void => {
    const span = { type, offset, length: size };
    const mac = computeIntegrity(hash, key, buf, span);
    writeU16(buf, offset, type);
    writeU16(buf, offset + 2, size);
    buf.set(mac, offset + ATTRIBUTE_HEADER_LENGTH);
    offset += ATTRIBUTE_HEADER_LENGTH + size;
    writeU16(buf, LENGTH_OFFSET, offset - HEADER_LENGTH);
  };
  if (options.integrityKey !== undefined) {
    appendIntegrity('sha1', AttrType.MessageIntegrity, options.integrityKey, MESSAGE_INTEGRITY_LENGTH);
  }
  if (options.integritySha256Key !== undefined) {
    appendIntegrity('sha256', AttrType.MessageIntegritySha256, options.integritySha256Key, MESSAGE_INTEGRITY_SHA256_LENGTH);
  }
  if (options.fingerprint === true) {
    writeU16(buf, LENGTH_OFFSET, offset + ATTRIBUTE_HEADER_LENGTH + FINGERPRINT_LENGTH - HEADER_LENGTH);
    writeU16(buf, offset, AttrType.Fingerprint);
    writeU16(buf, offset + 2, FINGERPRINT_LENGTH);
    writeU32(buf, offset + ATTRIBUTE_HEADER_LENGTH, computeFingerprint(buf, offset));
    offset += ATTRIBUTE_HEADER_LENGTH + FINGERPRINT_LENGTH;
  }
  return buf;
}

/**
 * Decodes one whole message; verifies FINGERPRINT when present (mismatch ->
 * StunMalformed); checks header, length (multiple of 4, matches buffer, whole
 * message <= `MAX_MESSAGE_LENGTH`), magic cookie, attribute TLVs and padding,
 * that FINGERPRINT is last and that after MESSAGE-INTEGRITY(-SHA256) only the
 * allowed attributes follow: RFC 8489 §14.5/§14.6 say other attributes there
 * are ignored, so they are left out of `attributes` (they stay in `raw`).
 * The input is copied; attribute values are views of `raw`.
 * Throws only StunMalformed (InvalidArgument if `buf` is not a Uint8Array).
 * `maxMessageLength` (whole message, header included) is for the stream decoder. @default MAX_MESSAGE_LENGTH
 */
export function decodeMessage(buf: Uint8Array, maxMessageLength: number = MAX_MESSAGE_LENGTH): StunMessage {
  checkBytes(buf, 'decodeMessage input');
  checkInteger(maxMessageLength, HEADER_LENGTH, HEADER_LENGTH + 0xffff, 'maxMessageLength');
  const raw = Buffer.from(buf);
  const scan = scanMessage(raw, maxMessageLength);
  if (scan.fingerprint !== undefined) checkFingerprint(raw, scan.fingerprint);
  const { method, cls } = decodeMessageType(readU16(raw, 0));
  const attributes = scan.spans.map((s) => {
    const start = s.offset + ATTRIBUTE_HEADER_LENGTH;
    return { type: s.type, value: raw.subarray(start, start + s.length) };
  });
  const transactionId = raw.subarray(TRANSACTION_ID_OFFSET, HEADER_LENGTH);
  return new StunMessage({ method, cls, transactionId, attributes }, raw);
}

/**
 * The message in a datagram, or undefined when it is not a well-formed STUN
 * message: what every UDP receiver does with stray or malformed bytes (RFC 8489
 * §6.3: silently discard). Never throws.
 */
export function decodeDatagram(buf: Uint8Array): StunMessage | undefined {
  if (!isStunMessage(buf)) return undefined;
  try {
    return decodeMessage(buf);
  } catch {
    return undefined;
  }
}

/**
 * Cheap check for demultiplexing: at least a header, first two bits zero,
 * magic cookie present, length a multiple of 4 and within `MAX_MESSAGE_LENGTH`.
 * Does not require the whole message to be present; {@link decodeMessage} checks the rest.
 */
export function isStunMessage(buf: Uint8Array): boolean {
  if (!(buf instanceof Uint8Array) || buf.length < HEADER_LENGTH) return false;
  if (readU32(buf, COOKIE_OFFSET) !== MAGIC_COOKIE) return false;
  try {
    checkHeaderPrefix(buf, MAX_MESSAGE_LENGTH);
    return true;
  } catch {
    return false;
  }
}

/**
 * RFC 8489 §6.3.1: the comprehension-required types (< 0x8000) in `msg` that
 * are not in `known`, each once, in order of appearance. A request with any
 * gets a 420 error listing them in UNKNOWN-ATTRIBUTES. MESSAGE-INTEGRITY and
 * MESSAGE-INTEGRITY-SHA256 count only if `known` lists them.
 */
export function unknownComprehensionRequired(msg: StunMessage, known: ReadonlySet<number>): number[] {
  const unknown: number[] = [];
  for (const a of msg.attributes) {
    if (isComprehensionRequired(a.type) && !known.has(a.type) && !unknown.includes(a.type)) unknown.push(a.type);
  }
  return unknown;
}
