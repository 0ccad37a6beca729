/**
 * The config file: where it is, reading it, and checking every key against
 * the options it may set, so that a typo or a wrong type is an error naming
 * the file and the key instead of a silently ignored setting.
 *
 *   {
 *     "broker": "broker.example:3478",          top level: every command with --broker
 *     "identity": "./alice",                     relative to this file's directory
 *     "commands": {
 *       "connect": { "timeout": 5000 },          one command only; wins over the top level
 *       "ca issue": { "days": 30 }
 *     }
 *   }
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { NOT_CONFIGURABLE, sectionKey, valueFromFile, type ConfigValues, type OptionSpec } from './config-spec.js';

/** The key of the per-command sections. */
export const COMMANDS_KEY = 'commands';

/** Where the config file is, and what chose it. */
export interface ConfigLocation {
  /** The absolute path. */
  readonly path: string;
  /** `flag`: --config; `env`: NATTRAV_CONFIG (both must exist); `default`: the XDG location (read when present). */
  readonly source: 'flag' | 'env' | 'default';
}

/**
 * Where to read the config file from: `--config FILE`, else `NATTRAV_CONFIG`,
 * else `$XDG_CONFIG_HOME/nattrav/config.json` (an absolute XDG_CONFIG_HOME,
 * as the XDG spec wants), else `~/.config/nattrav/config.json`.
 */
export function locateConfig(flag: string | undefined, env: Readonly<Record<string, string | undefined>>, home: string): ConfigLocation {
  if (flag !== undefined) return { path: resolve(flag), source: 'flag' };
  const named = env.NATTRAV_CONFIG;
  if (named !== undefined && named !== '') return { path: resolve(named), source: 'env' };
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg !== undefined && isAbsolute(xdg) ? xdg : join(home, '.config');
  return { path: join(base, 'nattrav', 'config.json'), source: 'default' };
}

function usage(message: string, cause?: unknown): NattravError {
  return new NattravError(ErrorCode.InvalidArgument, message, cause === undefined ? {} : { cause });
}

/**
 * Reads and checks the config file; `undefined` when the default location has
 * no file. A file named by --config or NATTRAV_CONFIG must exist.
 */
export async function loadConfig(location: ConfigLocation, specs: readonly OptionSpec[], home: string): Promise<ConfigValues | undefined> {
  let text: string;
  try {
    // Synchronous: a small file (or none), read before a command's first packet, which an
    // asynchronous read (the thread pool's first job) would delay by a few ms (issue 13 item 4).
    text = readFileSync(location.path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && location.source === 'default') return undefined;
    const namedBy = location.source === 'flag' ? '--config' : location.source === 'env' ? 'NATTRAV_CONFIG' : 'the default location';
    if (code === 'ENOENT') throw usage(`config file ${location.path} (named by ${namedBy}) does not exist`, err);
    throw usage(`could not read config file ${location.path} (named by ${namedBy}): ${(err as Error).message}`, err);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw usage(`${location.path}: not valid JSON: ${(err as Error).message}`, err);
  }
  return checkConfig(raw, location.path, specs, home);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function kind(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'a list' : `a ${typeof value}`;
}

function keyList(specs: readonly OptionSpec[]): string {
  return [...new Set(specs.map((spec) => spec.key))].sort().join(', ');
}

/** Why `key` is not accepted where `where` says, with the keys that are. */
function unknownKey(file: string, where: string, key: string, command: string | undefined, specs: readonly OptionSpec[]): NattravError {
  const excluded = Object.entries(NOT_CONFIGURABLE).some(([path, keys]) => (command === undefined || path === command) && keys.includes(key));
  if (excluded) return usage(`${file}: ${where}: --${key} is given on the command line only (it acts once, names one run's target, or is about configuration)`);
  const scope = command === undefined ? 'no command has an option' : `nattrav ${command} has no option`;
  return usage(`${file}: ${where}: unknown key (${scope} --${key}); known keys: ${keyList(specs)}`);
}

/**
 * Checks a parsed config file against the options it may set: the top level
 * is an object; each top-level key is an option of at least one command (and
 * valid for every command that has it); `commands` maps command paths
 * (`connect`, `ca issue`) to objects of that command's options.
 * Throws NattravError (InvalidArgument) naming the file and the key.
 */
export function checkConfig(raw: unknown, file: string, specs: readonly OptionSpec[], home: string): ConfigValues {
  if (!isObject(raw)) throw usage(`${file}: expected a JSON object of option values, like { "broker": "host:port" }, got ${kind(raw)}`);
  const dir = dirname(file);
  const top: Record<string, unknown> = {};
  const commands: Record<string, Record<string, unknown>> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (key === COMMANDS_KEY) continue;
    const matching = specs.filter((spec) => spec.key === key);
    if (matching.length === 0) throw unknownKey(file, key, key, undefined, specs);
    for (const spec of matching) valueFromFile(spec, value, `${file}: ${key}`, dir, home);
    top[key] = value;
  }
  const sections = raw[COMMANDS_KEY];
  if (sections !== undefined) {
    if (!isObject(sections)) throw usage(`${file}: ${COMMANDS_KEY}: expected an object of command sections, like { "connect": { "timeout": 5000 } }, got ${kind(sections)}`);
    const paths = [...new Set(specs.map((spec) => spec.command))].filter((path) => path !== '');
    for (const [command, section] of Object.entries(sections)) {
      const own = specs.filter((spec) => spec.command === command);
      if (command === '' || own.length === 0) throw usage(`${file}: ${sectionKey(command)}: unknown command; commands with options: ${paths.sort().join(', ')}`);
      if (!isObject(section)) throw usage(`${file}: ${sectionKey(command)}: expected an object of option values, got ${kind(section)}`);
      for (const [key, value] of Object.entries(section)) {
        const spec = own.find((candidate) => candidate.key === key);
        if (spec === undefined) throw unknownKey(file, sectionKey(command, key), key, command, own);
        valueFromFile(spec, value, `${file}: ${sectionKey(command, key)}`, dir, home);
      }
      commands[command] = { ...section };
    }
  }
  return { file, top, commands };
}
