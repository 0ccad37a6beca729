/**
 * Self-certifying nattrav URIs.
 *
 * A self-certifying URI names a peer by its public key, so nobody needs a CA to
 * check who answers it:
 *
 * ```
 * nattrav://k-<fingerprint>[/<label>]
 * ```
 *
 * - `<fingerprint>` is {@link keyFingerprint} of the peer's SubjectPublicKeyInfo
 *   (DER): base32 (RFC 4648 alphabet, lowercase, no padding) of its SHA-256,
 *   exactly 52 characters of `a-z2-7`.
 * - `<label>` (optional) tells several services of one key apart: one or more
 *   `/`-separated segments of RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`),
 *   at most {@link MAX_LABEL_LENGTH} characters in all. No query, no fragment.
 *
 * The match is exact and case-sensitive: `nattrav://K-...`, a 51-character
 * fingerprint or a label with other characters is not self-certifying, and is
 * then an ordinary name that only a CA can vouch for. The holder of a
 * self-certifying URI proves it by a certificate (self-signed or not) whose
 * key has that fingerprint, used in a TLS handshake (see tls.ts).
 */
import { ErrorCode, NattravError } from '../errors.js';
import { FINGERPRINT_LENGTH, keyFingerprint } from './keys.js';

/** The scheme and authority prefix of every self-certifying URI. */
export const SELF_CERTIFYING_PREFIX = 'nattrav://k-';
/** The longest label, in characters. */
export const MAX_LABEL_LENGTH = 200;

const LABEL_PATTERN = /^[A-Za-z0-9._~-]+(?:\/[A-Za-z0-9._~-]+)*$/;
const SELF_CERTIFYING_PATTERN = new RegExp(`^nattrav://k-([a-z2-7]{${String(FINGERPRINT_LENGTH)}})(?:/(.+))?$`);

/** The self-certifying URI of the key whose DER SPKI is `spki`, optionally with a label. */
export function selfCertifyingUri(spki: Uint8Array, label?: string): string {
  const base = `${SELF_CERTIFYING_PREFIX}${keyFingerprint(spki)}`;
  if (label === undefined) return base;
  if (!isValidLabel(label)) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `invalid label ${JSON.stringify(label)}: use 1-${String(MAX_LABEL_LENGTH)} characters of A-Z a-z 0-9 - . _ ~ in /-separated segments`,
    );
  }
  return `${base}/${label}`;
}

/** The key fingerprint in `uri` when it is a self-certifying URI; otherwise undefined. */
export function uriKeyFingerprint(uri: string): string | undefined {
  const match = SELF_CERTIFYING_PATTERN.exec(uri);
  if (match === null) return undefined;
  const label = match[2];
  if (label !== undefined && !isValidLabel(label)) return undefined;
  return match[1];
}

/** True when `uri` is self-certifying and names the key whose DER SPKI is `spki`. */
export function uriMatchesKey(uri: string, spki: Uint8Array): boolean {
  const fingerprint = uriKeyFingerprint(uri);
  return fingerprint !== undefined && fingerprint === keyFingerprint(spki);
}

function isValidLabel(label: string): boolean {
  return label.length <= MAX_LABEL_LENGTH && LABEL_PATTERN.test(label);
}

/** Characters of a URI's name and label segments (RFC 3986 unreserved). */
const URI_CHAR = /[A-Za-z0-9._~-]/;

/**
 * Checks that `uri` is a nattrav URI: `nattrav://NAME[/LABEL...]`, where NAME and each
 * label segment use A-Z a-z 0-9 - . _ ~, at most `maxBytes` bytes in all. Returns it;
 * throws InvalidArgument naming `what` and the first thing that is wrong.
 */
export function checkNattravUri(uri: unknown, what = 'uri', maxBytes = 512): string {
  const fail = (why: string): never => {
    throw new NattravError(ErrorCode.InvalidArgument, `${what} ${JSON.stringify(uri)}: ${why}; expected nattrav://NAME such as nattrav://alice`);
  };
  if (typeof uri !== 'string') return fail('not a string');
  if (uri === '') return fail('empty');
  const bytes = Buffer.byteLength(uri, 'utf8');
  if (bytes > maxBytes) return fail(`${bytes} bytes long, at most ${maxBytes} are allowed`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(uri);
  if (scheme === null) return fail('no scheme');
  if (scheme[1] !== 'nattrav') return fail(`scheme "${String(scheme[1])}:" is not nattrav:`);
  if (!uri.startsWith('nattrav://')) return fail('nattrav: must be followed by //');
  const rest = uri.slice('nattrav://'.length);
  if (rest === '' || rest.startsWith('/')) return fail('no name after nattrav://');
  for (let i = 0; i < rest.length; i++) {
    const ch = rest[i] as string;
    if (ch === '/') {
      if (i === rest.length - 1 || rest[i + 1] === '/') return fail(`empty label at position ${'nattrav://'.length + i + 1}`);
      continue;
    }
    if (!URI_CHAR.test(ch)) {
      return fail(`${JSON.stringify(ch)} at position ${'nattrav://'.length + i} is not allowed (names and labels use A-Z a-z 0-9 - . _ ~, with / between labels)`);
    }
  }
  return uri;
}
