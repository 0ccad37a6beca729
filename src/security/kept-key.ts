/**
 * The key a peer without a configured identity proves: kept per URI in a directory
 * (default ~/.nattrav/keys), created on first use. Apart from identity.ts, which makes
 * the certificate for it: a recipient registers with the key alone and loads the
 * certificate library afterwards (issue 13: first packet soon after start).
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, readOptional, readText, writeNewFile } from './files.js';
import { DEFAULT_KEY_TYPE, generateKeyPair, keyPairFromPrivatePem, type KeyPairPem, type KeyType } from './keys.js';
import { uriKeyFingerprint, uriMatchesKey } from './uri.js';

/** Random bytes in the name of a temporary key file. */
const TEMP_SUFFIX_BYTES = 6;

/** Where kept keys live when no `dir` is given: `~/.nattrav/keys`. */
export function defaultKeyDir(): string {
  return join(homedir(), '.nattrav', 'keys');
}

/** The file a kept key for `uri` lives in. */
export function keptKeyPath(dir: string, uri: string): string {
  return join(dir, `${createHash('sha256').update(uri).digest('hex')}.pem`);
}

/**
 * The key kept in `options.dir` for `uri`: read, or for a plain name created (0600) on
 * first use. For a self-certifying URI the kept key must be the one it names; otherwise
 * ERR_IDENTITY.
 */
export async function keptKey(uri: string, options: { dir?: string; keyType?: KeyType } = {}): Promise<KeyPairPem> {
  const dir = options.dir ?? defaultKeyDir();
  const path = keptKeyPath(dir, uri);
  let key: KeyPairPem;
  const existing = await readOptional(path);
  if (existing !== undefined) {
    key = keyPairFromPrivatePem(existing);
  } else if (uriKeyFingerprint(uri) !== undefined) {
    throw new NattravError(ErrorCode.Identity, `no key for the self-certifying URI ${uri} in ${dir}; only the holder of its key can use it`);
  } else {
    key = await keepNewKey(dir, path, generateKeyPair(options.keyType ?? DEFAULT_KEY_TYPE));
  }
  if (uriKeyFingerprint(uri) !== undefined && !uriMatchesKey(uri, key.spki)) {
    throw new NattravError(ErrorCode.Identity, `the key kept in ${path} is not the key of the self-certifying URI ${uri}`);
  }
  return key;
}

/** Keeps `key` at `path` (atomically, never overwriting); the key already there when another process kept one first. */
export async function keepNewKey(dir: string, path: string, key: KeyPairPem): Promise<KeyPairPem> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  // Write a private temporary file, then link it into place: atomic, and never overwrites.
  const temporary = `${path}.${String(process.pid)}.${randomBytes(TEMP_SUFFIX_BYTES).toString('hex')}.tmp`;
  await writeNewFile(temporary, key.privateKeyPem, PRIVATE_FILE_MODE);
  try {
    await link(temporary, path);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new NattravError(ErrorCode.Identity, `could not keep the key in ${path}: ${(err as Error).message}`, { cause: err });
    }
    return keyPairFromPrivatePem(await readText(path)); // another process kept one first: use it
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
}
