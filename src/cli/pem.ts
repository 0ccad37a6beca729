/** Reading PEM files named by command-line options. */
import { readFile } from 'node:fs/promises';
import { ErrorCode, NattravError } from '../errors.js';

/** Reads a PEM file named by an option, with an error naming the option. */
export async function readPem(path: string, option: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new NattravError(ErrorCode.InvalidArgument, `${option}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
}

