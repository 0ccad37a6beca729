/**
 * The little DER (ITU-T X.690) nattrav writes and reads itself, so that the certificates of
 * the common case (a self-signed certificate for a self-certifying URI, made for every
 * connect without an identity, and checked by every peer) need no ASN.1 library: loading
 * `@peculiar/x509` costs 150 to 200 ms of CPU, more than the whole TLS handshake.
 *
 * Writing: definite lengths, the handful of universal types a certificate needs.
 * Reading: {@link readTlv} walks one element; enough to find a certificate's extensions.
 */

/** DER tags used here (X.690 section 8, with the constructed bit where the type is). */
export const Tag = {
  Boolean: 0x01,
  Integer: 0x02,
  BitString: 0x03,
  OctetString: 0x04,
  Oid: 0x06,
  Utf8String: 0x0c,
  UtcTime: 0x17,
  GeneralizedTime: 0x18,
  Sequence: 0x30,
  Set: 0x31,
} as const;

/** One tag-length-value. */
export function tlv(tag: number, content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(tag), encodeLength(content.length), content]);
}

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.of(length);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** SEQUENCE of `parts`. */
export const sequence = (...parts: Uint8Array[]): Buffer => tlv(Tag.Sequence, Buffer.concat(parts));
/** SET of `parts` (the caller orders them; a certificate's names here hold one each). */
export const set = (...parts: Uint8Array[]): Buffer => tlv(Tag.Set, Buffer.concat(parts));
/** OCTET STRING. */
export const octetString = (bytes: Uint8Array): Buffer => tlv(Tag.OctetString, bytes);
/** BIT STRING of whole bytes, or with `unusedBits` trailing bits of the last byte unused. */
export const bitString = (bytes: Uint8Array, unusedBits = 0): Buffer => tlv(Tag.BitString, Buffer.concat([Buffer.of(unusedBits), bytes]));
/** UTF8String. */
export const utf8String = (text: string): Buffer => tlv(Tag.Utf8String, Buffer.from(text, 'utf8'));
/** BOOLEAN TRUE (DER: 0xFF). */
export const TRUE = Buffer.from([Tag.Boolean, 1, 0xff]);
/** `[n]` EXPLICIT: a constructed context-specific tag around `content`. */
export const explicit = (n: number, content: Uint8Array): Buffer => tlv(0xa0 | n, content);

/** INTEGER from unsigned big-endian bytes (leading zeros dropped, a zero byte added where the sign bit is set). */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = Buffer.from(bytes.subarray(start));
  return tlv(Tag.Integer, (trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed);
}

/** OBJECT IDENTIFIER from its dotted form. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const [first = 0, second = 0, ...rest] = arcs;
  const bytes = [40 * first + second];
  for (const arc of rest) {
    const base128 = [arc % 128];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) base128.unshift((n % 128) | 0x80);
    bytes.push(...base128);
  }
  return tlv(Tag.Oid, Buffer.from(bytes));
}

/** A certificate time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 section 4.1.2.5), to the second. */
export function time(date: Date): Buffer {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return date.getUTCFullYear() < 2050 ? tlv(Tag.UtcTime, Buffer.from(digits.slice(2), 'ascii')) : tlv(Tag.GeneralizedTime, Buffer.from(digits, 'ascii'));
}

/** One element read by {@link readTlv}: its tag, its content, its whole encoding, and where the next element starts. */
export interface Element {
  readonly tag: number;
  readonly content: Buffer;
  readonly encoded: Buffer;
  readonly end: number;
}

/** Reads the element at `offset` of `bytes` (single-byte tags, definite lengths); throws RangeError on truncated or malformed input. */
export function readTlv(bytes: Buffer, offset = 0): Element {
  const tag = bytes[offset];
  const first = bytes[offset + 1];
  if (tag === undefined || first === undefined) throw new RangeError('DER: truncated element');
  let length = first;
  let start = offset + 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4) throw new RangeError('DER: unsupported length');
    length = 0;
    for (let i = 0; i < count; i++) {
      const byte = bytes[start + i];
      if (byte === undefined) throw new RangeError('DER: truncated length');
      length = length * 256 + byte;
    }
    start += count;
  }
  const end = start + length;
  if (end > bytes.length) throw new RangeError('DER: element runs past the input');
  return { tag, content: bytes.subarray(start, end), encoded: bytes.subarray(offset, end), end };
}

/** The elements inside a constructed element's content, in order. */
export function children(content: Buffer): Element[] {
  const out: Element[] = [];
  for (let offset = 0; offset < content.length; ) {
    const element = readTlv(content, offset);
    out.push(element);
    offset = element.end;
  }
  return out;
}
