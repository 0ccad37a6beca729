/** Validation of peer options at the API boundary. */
import { ErrorCode, NattravError } from '../errors.js';
import { MAX_URI_BYTES } from '../wire/constants.js';

/** Checks a URI: non-empty text of at most MAX_URI_BYTES UTF-8 bytes, no control characters. */
export function checkUri(uri: unknown): string {
  if (typeof uri !== 'string' || uri.length === 0) {
    throw new NattravError(ErrorCode.InvalidArgument, 'uri: expected a non-empty string such as "nattrav://alice"');
  }
  if (Buffer.byteLength(uri, 'utf8') > MAX_URI_BYTES) {
    throw new NattravError(ErrorCode.InvalidArgument, `uri: at most ${MAX_URI_BYTES} bytes of UTF-8, got ${Buffer.byteLength(uri, 'utf8')}`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(uri)) {
    throw new NattravError(ErrorCode.InvalidArgument, 'uri: control characters are not allowed');
  }
  return uri;
}

/** `value` if given (must be a positive integer), else `fallback`. */
export function positiveInt(value: unknown, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `${name}: expected a positive integer (milliseconds or count), got ${String(value)}`);
  }
  return value;
}
