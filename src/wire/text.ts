/**
 * UTF-8 text attributes: SOFTWARE (RFC 8489 §14.14), USERNAME (§14.3),
 * REALM (§14.9), NONCE (§14.10), and nattrav's URI.
 */
import { checkInteger, invalidArgument, malformed } from './fail.js';

const encoder = new TextEncoder();
/** `fatal` rejects invalid UTF-8; `ignoreBOM` keeps a leading U+FEFF instead of silently dropping it. */
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Encodes `text` as UTF-8; throws InvalidArgument when it is longer than `maxBytes`. */
export function encodeText(text: string, maxBytes: number, attrName: string): Uint8Array {
  if (typeof text !== 'string') throw invalidArgument(`${attrName} must be a string`);
  checkInteger(maxBytes, 0, 0xffff, `maxBytes for ${attrName}`);
  const bytes = encoder.encode(text);
  if (bytes.length > maxBytes) {
    throw invalidArgument(`${attrName} is ${bytes.length} bytes of UTF-8; shorten it to at most ${maxBytes}`);
  }
  return bytes;
}

/** Decodes UTF-8 text; throws StunMalformed when it is invalid UTF-8 or longer than `maxBytes`. */
export function decodeText(v: Uint8Array, maxBytes: number, attrName: string): string {
  if (v.length > maxBytes) throw malformed(`${attrName} is ${v.length} bytes, more than the ${maxBytes} allowed`);
  try {
    return decoder.decode(v);
  } catch {
    throw malformed(`${attrName} is not valid UTF-8`);
  }
}
