/** Validation of peer options at the API boundary. */
import { ErrorCode, NattravError } from '../errors.js';
import { checkNattravUri } from '../security/uri.js';
import { MAX_URI_BYTES } from '../wire/constants.js';

/** Checks a URI (see {@link checkNattravUri}): `nattrav://NAME[/LABEL]`, at most MAX_URI_BYTES of UTF-8. */
export function checkUri(uri: unknown): string {
  return checkNattravUri(uri, 'uri', MAX_URI_BYTES);
}

/** `value` if given (must be a positive integer), else `fallback`. */
export function positiveInt(value: unknown, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `${name}: expected a positive integer (milliseconds or count), got ${String(value)}`);
  }
  return value;
}

/** `allow` checked: nattrav URIs, at least one, and TLS on (it is what proves them). */
export function allowList(allow: readonly string[] | undefined, tlsOff: boolean): ReadonlySet<string> | undefined {
  if (allow === undefined) return undefined;
  if (!Array.isArray(allow) || allow.length === 0) {
    throw new NattravError(ErrorCode.InvalidArgument, 'allow: expected a non-empty array of nattrav URIs (leave it out to accept every verified initiator)');
  }
  if (tlsOff) {
    throw new NattravError(ErrorCode.InvalidArgument, 'allow needs TLS: initiators prove their identity in the TLS handshake; drop tls: false (--no-tls) or drop allow (--allow)');
  }
  return new Set(allow.map((uri, i) => checkNattravUri(uri, `allow[${i}]`)));
}
