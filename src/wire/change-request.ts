/** CHANGE-REQUEST (RFC 5780 §7.2): 32 bits holding the "change IP" (A) and "change port" (B) flags. */
import { ChangeRequestFlag } from './constants.js';
import { invalidArgument, malformed } from './fail.js';

/** RFC 5780 §7.2: the value is one 32-bit word; the flags sit in its last byte. */
const CHANGE_REQUEST_LENGTH = 4;
const FLAGS_OFFSET = 3;

/** The two flags of CHANGE-REQUEST. */
export interface ChangeRequest {
  /** Flag A: answer from the alternate IP address. */
  changeIp: boolean;
  /** Flag B: answer from the alternate port. */
  changePort: boolean;
}

/** Encodes CHANGE-REQUEST. */
export function encodeChangeRequest(r: ChangeRequest): Uint8Array {
  if (typeof r.changeIp !== 'boolean' || typeof r.changePort !== 'boolean') {
    throw invalidArgument('CHANGE-REQUEST needs boolean changeIp and changePort');
  }
  const v = new Uint8Array(CHANGE_REQUEST_LENGTH);
  v[FLAGS_OFFSET] = (r.changeIp ? ChangeRequestFlag.ChangeIp : 0) | (r.changePort ? ChangeRequestFlag.ChangePort : 0);
  return v;
}

/** Decodes CHANGE-REQUEST (unused bits are ignored); throws StunMalformed unless the value is 4 bytes. */
export function decodeChangeRequest(v: Uint8Array): ChangeRequest {
  if (v.length !== CHANGE_REQUEST_LENGTH) throw malformed(`CHANGE-REQUEST is ${v.length} bytes, not ${CHANGE_REQUEST_LENGTH}`);
  const flags = v[FLAGS_OFFSET];
  return { changeIp: (flags & ChangeRequestFlag.ChangeIp) !== 0, changePort: (flags & ChangeRequestFlag.ChangePort) !== 0 };
}
