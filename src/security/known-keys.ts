/**
 * Keys remembered per URI, like SSH's known_hosts: the first time an initiator
 * reaches a plain name (no CA vouches for it, and it is not self-certifying), the
 * key the broker holds for it is accepted and remembered; later a different key
 * for the same name is refused unless the user accepts the change or pins a key.
 *
 * The file has one line per URI: `<uri> <fingerprint>`, the fingerprint being the
 * lowercase base32 SHA-256 of the key's SubjectPublicKeyInfo (as in self-certifying
 * URIs). Lines starting with # and blank lines are ignored.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { FINGERPRINT_LENGTH } from './keys.js';

/** The default file: ~/.nattrav/known_keys. */
export function defaultKnownKeysFile(): string {
  return join(homedir(), '.nattrav', 'known_keys');
}

const FINGERPRINT_PATTERN = new RegExp(`^[a-z2-7]{${String(FINGERPRINT_LENGTH)}}$`);

/** Checks a key fingerprint given by a user (`--expect-key`); returns it. */
export function checkFingerprint(value: unknown, what = 'expectKey'): string {
  if (typeof value !== 'string' || !FINGERPRINT_PATTERN.test(value)) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `${what}: expected a key fingerprint of ${String(FINGERPRINT_LENGTH)} characters a-z 2-7 (as printed by nattrav listen, or the part after k- of a self-certifying URI), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Every remembered key in `file` (empty when the file does not exist). */
export async function readKnownKeys(file: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw new NattravError(ErrorCode.Identity, `cannot read the known keys in ${file}: ${(err as Error).message}`, { cause: err });
  }
  const keys = new Map<string, string>();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const [uri, fingerprint] = trimmed.split(/\s+/);
    if (uri !== undefined && fingerprint !== undefined && FINGERPRINT_PATTERN.test(fingerprint)) keys.set(uri, fingerprint);
  }
  return keys;
}

/** Writes in progress per file, so concurrent connects in one process do not lose each other's keys. */
const writing = new Map<string, Promise<void>>();

/** Remembers `fingerprint` for `uri` in `file` (replacing an older key), written atomically, mode 0600. */
export function rememberKey(file: string, uri: string, fingerprint: string): Promise<void> {
  const previous = writing.get(file) ?? Promise.resolve();
  const next = previous.then(() => writeKey(file, uri, fingerprint));
  const settled = next.catch(() => undefined);
  writing.set(file, settled);
  void settled.then(() => {
    if (writing.get(file) === settled) writing.delete(file);
  });
  return next;
}

async function writeKey(file: string, uri: string, fingerprint: string): Promise<void> {
  const keys = await readKnownKeys(file);
  if (keys.get(uri) === fingerprint) return;
  keys.set(uri, fingerprint);
  try {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const text = `# nattrav known keys: <uri> <key fingerprint>\n${[...keys].map(([u, f]) => `${u} ${f}`).join('\n')}\n`;
    // Unique per write: other processes may be writing the same file.
    const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(temp, text, { mode: 0o600 });
    await rename(temp, file);
  } catch (err) {
    throw new NattravError(ErrorCode.Identity, `cannot remember the key of ${uri} in ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** What decides the key an initiator expects for a plain name. */
export interface ExpectedKeyInput {
  readonly uri: string;
  /** A key the user pinned (`--expect-key`). */
  readonly pinned?: string;
  /** The key the broker holds for the URI, from the exchange. */
  readonly fromBroker?: string;
  /** The key remembered for the URI. */
  readonly remembered?: string;
  /** Accept a broker key that differs from the remembered one (and remember it). */
  readonly acceptChange?: boolean;
  /** Where the remembered key lives, for messages. */
  readonly file?: string;
}

/** The key to expect, and whether to remember it once the peer proved it. */
export interface ExpectedKey {
  readonly fingerprint: string | undefined;
  readonly remember: boolean;
}

/**
 * Decides which key to expect (pure): a pinned key wins; else the broker's, which must
 * match the remembered one unless the change is accepted; else the remembered one.
 * Throws ERR_KEY_MISMATCH when the broker's key differs from the remembered key.
 */
export function expectedKey(input: ExpectedKeyInput): ExpectedKey {
  if (input.pinned !== undefined) return { fingerprint: input.pinned, remember: input.pinned !== input.remembered };
  if (input.fromBroker === undefined) return { fingerprint: input.remembered, remember: false };
  if (input.remembered === undefined) return { fingerprint: input.fromBroker, remember: true };
  if (input.remembered === input.fromBroker) return { fingerprint: input.fromBroker, remember: false };
  if (input.acceptChange === true) return { fingerprint: input.fromBroker, remember: true };
  throw new NattravError(
    ErrorCode.KeyMismatch,
    `the key of ${input.uri} changed: the broker now gives ${input.fromBroker}, but ${input.remembered} is remembered${input.file === undefined ? '' : ` in ${input.file}`}. ` +
      'Someone may be impersonating it (or a fake broker); if the key really changed, accept it with --accept-new-key (acceptChangedKey), or pin one with --expect-key',
  );
}
