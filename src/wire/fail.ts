/**
 * Internal helpers that build the two errors the codec throws. Decoders throw
 * only {@link malformed}; encoders and constructors throw only {@link invalidArgument}.
 */
import { ErrorCode, NattravError } from '../errors.js';

/** The error for bytes that are not a well-formed STUN message or attribute. */
export function malformed(message: string): NattravError {
  return new NattravError(ErrorCode.StunMalformed, message);
}

/** The error for a bad argument to an encoder or constructor. */
export function invalidArgument(message: string): NattravError {
  return new NattravError(ErrorCode.InvalidArgument, message);
}

/** Throws {@link invalidArgument} unless `n` is an integer in [min, max]. */
export function checkInteger(n: unknown, min: number, max: number, what: string): asserts n is number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw invalidArgument(`${what} must be an integer from ${min} to ${max}, got ${String(n)}`);
  }
}

/** Throws {@link invalidArgument} unless `v` is a Uint8Array. */
export function checkBytes(v: unknown, what: string): asserts v is Uint8Array {
  if (!(v instanceof Uint8Array)) throw invalidArgument(`${what} must be a Uint8Array (or Buffer)`);
}

/** Big-endian 16-bit read; the caller has checked the bounds. */
export function readU16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

/** Big-endian 32-bit read (unsigned); the caller has checked the bounds. */
export function readU32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/** Big-endian 16-bit write; the caller has checked the bounds. */
export function writeU16(b: Uint8Array, at: number, n: number): void {
  b[at] = (n >>> 8) & 0xff;
  b[at + 1] = n & 0xff;
}

/** Big-endian 32-bit write; the caller has checked the bounds. */
export function writeU32(b: Uint8Array, at: number, n: number): void {
  b[at] = (n >>> 24) & 0xff;
  b[at + 1] = (n >>> 16) & 0xff;
  b[at + 2] = (n >>> 8) & 0xff;
  b[at + 3] = n & 0xff;
}
