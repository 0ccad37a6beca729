/** ERROR-CODE (RFC 8489 §14.8): reserved bits, class (3 bits), number (0-99), UTF-8 reason phrase. */
import { MAX_ERROR_CODE, MAX_REASON_BYTES, MIN_ERROR_CODE } from './constants.js';
import { checkInteger, malformed } from './fail.js';
import { decodeText, encodeText } from './text.js';

/** RFC 8489 §14.8: 21 reserved bits, then 3 class bits, then the 8-bit number. */
const ERROR_CODE_HEADER_LENGTH = 4;
/** The class is the hundreds digit, 3-6. */
const MIN_ERROR_CLASS = 3;
const MAX_ERROR_CLASS = 6;
const ERROR_CLASS_MASK = 0x07;
/** The number is the code modulo 100. */
const MAX_ERROR_NUMBER = 99;

/** The decoded content of an ERROR-CODE attribute. */
export interface ErrorCodeAttribute {
  /** 300-699 (see `StunErrorCode`). */
  code: number;
  /** The reason phrase (UTF-8, at most `MAX_REASON_BYTES`). */
  reason: string;
}

/** Encodes ERROR-CODE; throws InvalidArgument for a code outside 300-699 or a reason over `MAX_REASON_BYTES`. */
export function encodeErrorCode(e: ErrorCodeAttribute): Uint8Array {
  checkInteger(e.code, MIN_ERROR_CODE, MAX_ERROR_CODE, 'ERROR-CODE code');
  const reason = encodeText(e.reason, MAX_REASON_BYTES, 'ERROR-CODE reason phrase');
  const v = new Uint8Array(ERROR_CODE_HEADER_LENGTH + reason.length);
  v[2] = Math.floor(e.code / 100);
  v[3] = e.code % 100;
  v.set(reason, ERROR_CODE_HEADER_LENGTH);
  return v;
}

/** Decodes ERROR-CODE; throws StunMalformed for a short value, a class outside 3-6, a number over 99 or a bad reason. */
export function decodeErrorCode(v: Uint8Array): ErrorCodeAttribute {
  if (v.length < ERROR_CODE_HEADER_LENGTH) {
    throw malformed(`ERROR-CODE is ${v.length} bytes, shorter than its ${ERROR_CODE_HEADER_LENGTH}-byte header`);
  }
  // RFC 8489 §14.8: receivers ignore the reserved bits.
  const cls = v[2] & ERROR_CLASS_MASK;
  const num = v[3];
  if (cls < MIN_ERROR_CLASS || cls > MAX_ERROR_CLASS) throw malformed(`ERROR-CODE class ${cls} is outside ${MIN_ERROR_CLASS}-${MAX_ERROR_CLASS}`);
  if (num > MAX_ERROR_NUMBER) throw malformed(`ERROR-CODE number ${num} is over ${MAX_ERROR_NUMBER}`);
  const reason = decodeText(v.subarray(ERROR_CODE_HEADER_LENGTH), MAX_REASON_BYTES, 'ERROR-CODE reason phrase');
  return { code: cls * 100 + num, reason };
}
