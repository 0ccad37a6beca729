/**
 * The CLI as one CommonJS file with a V8 code cache (issue 13 item 4: `nattrav connect`
 * reaches its first packet within 150 ms of process start). Node 20 loads the CLI's ES
 * modules one file at a time and compiles each on every start; a bundle read at once and
 * compiled from a code cache skips most of that. `npm run build` makes the three files
 * (scripts/bundle-cli.mjs, with esbuild) next to main.js; the `nattrav` bin (nattrav.cts)
 * runs the bundle when it is current and the ES modules otherwise: no bundle, a bundle
 * older than the files it was made from (a `tsc` run since), or NATTRAV_BUNDLE=0.
 * A cache made by another V8 (another Node version) is not used: the bundle is compiled.
 *
 * CommonJS because a `vm.Script` takes a code cache and Node 20 has no compile cache for
 * ES modules. This file is loaded by the bin before anything else, so it imports only
 * Node's own modules.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Script } from 'node:vm';

/** The bundle of main.js and everything it imports, next to main.js. */
export const BUNDLE_FILE = 'nattrav-bundle.cjs';
/** V8's code cache of the bundle (`vm.Script#createCachedData`), made by the build's Node. */
export const CACHE_FILE = 'nattrav-bundle.cache';
/** What the bundle was made from and with: a {@link BundleManifest}. Written last. */
export const MANIFEST_FILE = 'nattrav-bundle.json';
/** Set to 0 to run the ES modules even when the bundle is current (to compare, or to debug). */
export const BUNDLE_ENV = 'NATTRAV_BUNDLE';

/** A file's size and modification time, its path relative to the manifest's directory. */
export interface FileStamp {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
}

/** What bundle-cli.mjs wrote: the bundle, its cache, and the compiled files it was made from. */
export interface BundleManifest {
  readonly version: 1;
  /** `process.versions.v8` of the Node that made the cache. */
  readonly v8: string;
  readonly bundle: FileStamp;
  /** Absent when no cache could be made. */
  readonly cache?: FileStamp;
  /** Our compiled files in the bundle (dist/src/**); packages are refreshed by an install, which builds again. */
  readonly inputs: readonly FileStamp[];
}

/** How the bin started the CLI: from the bundle with its cache, from the bundle compiled anew, or from the ES modules. */
export type StartMode = 'bundle-cached' | 'bundle' | 'modules';

/** The stamp of `path` (relative to `dir`) as it is now. */
export function stampOf(dir: string, path: string): FileStamp {
  // Not path.join: normalising each of some 240 paths costs more than their stat calls.
  const stat = statSync(`${dir}/${path}`);
  return { path, size: stat.size, mtimeMs: stat.mtimeMs };
}

/**
 * Whether the bundle in `dir` may run in place of the ES modules: it is the file the
 * manifest names, and every input still has its size and is not newer than the bundle
 * (a `tsc` run rewrites them all; `npm pack` gives every file one date, so equal is current).
 */
export function bundleIsCurrent(dir: string, manifest: BundleManifest): boolean {
  try {
    const bundle = stampOf(dir, manifest.bundle.path);
    if (bundle.size !== manifest.bundle.size || manifest.inputs.length === 0) return false;
    for (const input of manifest.inputs) {
      const now = stampOf(dir, input.path);
      if (now.size !== input.size || now.mtimeMs > bundle.mtimeMs) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** The cache to give V8, when it was made for this bundle by this V8; undefined otherwise. */
export function cacheFor(dir: string, manifest: BundleManifest): Buffer | undefined {
  const cache = manifest.cache;
  if (cache === undefined || manifest.v8 !== process.versions.v8) return undefined;
  try {
    const data = readFileSync(join(dir, cache.path));
    const bundle = stampOf(dir, manifest.bundle.path);
    return data.length === cache.size && stampOf(dir, cache.path).mtimeMs >= bundle.mtimeMs ? data : undefined;
  } catch {
    return undefined;
  }
}

/** The bundle's source. The build leaves it all ASCII, so latin1 reads it exactly, faster than utf8 decodes it. */
export function readBundle(file: string): string {
  return readFileSync(file, 'latin1');
}

/**
 * The bundle's source as a CommonJS module function, compiled (from `cachedData` when V8
 * accepts it). The build makes its cache with this same function, so the code matches.
 * A `#!` line becomes a comment of the same length: lines and columns stay the bundle's.
 * The bundle must hold no import() (bundle-cli.mjs checks): a script has no module loader.
 */
export function compileBundle(file: string, source: string, cachedData?: Buffer): Script {
  const body = source.startsWith('#!') ? `//${source.slice(2)}` : source;
  return new Script(`(function (exports, require, module, __filename, __dirname) {${body}\n})`, {
    filename: file,
    ...(cachedData === undefined ? {} : { cachedData }),
  });
}

/**
 * Runs the bundle in `dir` when it is current (and NATTRAV_BUNDLE is not 0); returns how,
 * or undefined when the caller must load the ES modules instead. Errors of the CLI itself
 * propagate; a bundle that does not compile counts as absent.
 */
export function runBundle(dir: string): StartMode | undefined {
  if (process.env[BUNDLE_ENV] === '0') return undefined;
  let manifest: BundleManifest;
  let script: Script;
  let cached: boolean;
  const file = join(dir, BUNDLE_FILE);
  try {
    manifest = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as BundleManifest;
    if (manifest.version !== 1 || !bundleIsCurrent(dir, manifest)) return undefined;
    const cachedData = cacheFor(dir, manifest);
    script = compileBundle(file, readBundle(file), cachedData);
    cached = cachedData !== undefined && !script.cachedDataRejected;
  } catch {
    return undefined;
  }
  const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
  const module = { exports: {} };
  run.call(module.exports, module.exports, createRequire(file), module, file, dir);
  return cached ? 'bundle-cached' : 'bundle';
}
