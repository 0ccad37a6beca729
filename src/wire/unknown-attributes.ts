/** UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): a list of 16-bit attribute types, sent with a 420 error. */
import { checkInteger, invalidArgument, malformed, readU16, writeU16 } from './fail.js';

/** Each listed type is 16 bits. */
const TYPE_LENGTH = 2;

/** Encodes the list; throws InvalidArgument for a type outside 0-0xFFFF or a list too long for one attribute. */
export function encodeUnknownAttributes(types: number[]): Uint8Array {
  if (!Array.isArray(types)) throw invalidArgument('UNKNOWN-ATTRIBUTES takes an array of attribute types');
  if (types.length * TYPE_LENGTH > 0xffff) throw invalidArgument(`UNKNOWN-ATTRIBUTES cannot list ${types.length} types`);
  const v = new Uint8Array(types.length * TYPE_LENGTH);
  types.forEach((t, i) => {
    checkInteger(t, 0, 0xffff, 'UNKNOWN-ATTRIBUTES type');
    writeU16(v, i * TYPE_LENGTH, t);
  });
  return v;
}

/** Decodes the list; throws StunMalformed when the length is odd. */
export function decodeUnknownAttributes(v: Uint8Array): number[] {
  if (v.length % TYPE_LENGTH !== 0) throw malformed(`UNKNOWN-ATTRIBUTES length ${v.length} is not a multiple of ${TYPE_LENGTH}`);
  const types: number[] = [];
  for (let i = 0; i < v.length; i += TYPE_LENGTH) types.push(readU16(v, i));
  return types;
}
