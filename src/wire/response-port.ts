/** RESPONSE-PORT (RFC 5780 §7.5): a 16-bit port followed by 2 bytes of padding. */
import { checkInteger, malformed, readU16, writeU16 } from './fail.js';

/** RFC 5780 §7.5: port (16 bits) + 16 bits of padding. */
const RESPONSE_PORT_LENGTH = 4;

/** Encodes RESPONSE-PORT; throws InvalidArgument for a port outside 0-65535. */
export function encodeResponsePort(port: number): Uint8Array {
  checkInteger(port, 0, 0xffff, 'RESPONSE-PORT port');
  const v = new Uint8Array(RESPONSE_PORT_LENGTH);
  writeU16(v, 0, port);
  return v;
}

/** Decodes RESPONSE-PORT; throws StunMalformed unless the value is 4 bytes. */
export function decodeResponsePort(v: Uint8Array): number {
  if (v.length !== RESPONSE_PORT_LENGTH) throw malformed(`RESPONSE-PORT is ${v.length} bytes, not ${RESPONSE_PORT_LENGTH}`);
  return readU16(v, 0);
}
