/**
 * Files of keys, certificates and CAs: written once with the right mode, read with an
 * error naming the path. Apart from ca.ts and identity.ts, so a peer reads and keeps its
 * key (kept-key.ts) without loading the certificate library.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { ErrorCode, NattravError } from '../errors.js';

/** Mode of files holding private keys, and of directories created for them. */
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Writes a file that must not exist yet; ERR_IDENTITY if it does. */
export async function writeNewFile(path: string, text: string, mode: number): Promise<void> {
  try {
    await writeFile(path, text, { flag: 'wx', mode });
    await chmod(path, mode); // the umask may have narrowed or widened nothing, but make it exact
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new NattravError(ErrorCode.Identity, `${path} already exists; remove it or choose another directory`, { cause: err });
    }
    throw new NattravError(ErrorCode.Identity, `could not write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads a text file; ERR_IDENTITY naming the path when it cannot. */
export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new NattravError(ErrorCode.Identity, `could not read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads a text file, or undefined when it does not exist; ERR_IDENTITY naming the path when it cannot. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new NattravError(ErrorCode.Identity, `could not read ${path}: ${(err as Error).message}`, { cause: err });
  }
}
