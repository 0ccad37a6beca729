/** PADDING (RFC 5780 §7.6): free-form bytes that make a message bigger (to test fragmentation). */
import { checkInteger } from './fail.js';

/** Encodes `length` zero bytes; throws InvalidArgument for a length outside 0-65535. */
export function encodePadding(length: number): Uint8Array {
  checkInteger(length, 0, 0xffff, 'PADDING length');
  return new Uint8Array(length);
}

/** Returns the PADDING length; its content does not matter (RFC 5780 §7.6), so it is never malformed. */
export function decodePadding(v: Uint8Array): number {
  return v.length;
}
