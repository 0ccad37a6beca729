/** 32-bit unsigned attributes: nattrav's START-DELAY and LIFETIME. */
import { checkInteger, malformed, readU32, writeU32 } from './fail.js';

/** A u32 value is 4 bytes, big-endian. */
const U32_LENGTH = 4;

/** Encodes a 32-bit unsigned integer; throws InvalidArgument outside 0-0xFFFFFFFF. */
export function encodeU32(n: number): Uint8Array {
  checkInteger(n, 0, 0xffffffff, 'u32 attribute value');
  const v = new Uint8Array(U32_LENGTH);
  writeU32(v, 0, n);
  return v;
}

/** Decodes a 32-bit unsigned integer; throws StunMalformed naming `attrName` unless the value is 4 bytes. */
export function decodeU32(v: Uint8Array, attrName: string): number {
  if (v.length !== U32_LENGTH) throw malformed(`${attrName} is ${v.length} bytes, not ${U32_LENGTH}`);
  return readU32(v, 0);
}
