/**
 * Which command-line options can also come from the environment or a config
 * file, and how a value from either is turned into what the flag would give.
 * Pure: no files, no process state; the environment is passed in.
 *
 * Every option of every command is configurable, except the ones in
 * {@link NOT_CONFIGURABLE} (one-shot actions and values that name one
 * invocation's target), so an option added to a command gets its
 * NATTRAV_<NAME> variable and its config-file key without extra code.
 * Positional arguments are never configurable.
 */
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { InvalidArgumentError, type Command, type Option } from 'commander';
import { ErrorCode, NattravError } from '../errors.js';
import { collect } from './repeatable.js';

/** Where an option's effective value came from, in order of precedence. */
export type ConfigSource = 'flag' | 'env' | 'file' | 'default';

/**
 * Options that stay on the command line, by command path ('' is the program
 * itself) and key: they act once (`--accept-new-key`, `--takeover`), name the target or the
 * output of one run (`ca issue --uri`, `lab matrix --report`), or are about
 * configuration itself (`--config`).
 */
export const NOT_CONFIGURABLE: Readonly<Record<string, readonly string[]>> = {
  '': ['config', 'version'],
  connect: ['expect-key', 'accept-new-key'],
  listen: ['takeover'],
  expose: ['takeover'],
  forward: ['expect-key', 'accept-new-key', 'listen'],
  broker: ['list-limits'],
  'ca init': ['name'],
  'ca issue': ['ca', 'uri', 'out'],
  'lab matrix': ['report'],
  portmap: ['map'],
};

/** One configurable option of one command (a `--x`/`--no-x` pair is one option). */
export interface OptionSpec {
  /** The command path, e.g. `connect` or `ca issue`; `''` for the program's own options. */
  readonly command: string;
  /** The config-file key: the long flag without `--` (and without `no-` for `--no-x`), e.g. `broker-ca`. */
  readonly key: string;
  /** The name of the value in the command's options object (commander's attribute name), e.g. `brokerCa`. */
  readonly attribute: string;
  /** The environment variable, e.g. `NATTRAV_BROKER_CA`. */
  readonly env: string;
  /** The flags as the user writes them, for messages, e.g. `--broker-ca <file>` or `--tls/--no-tls`. */
  readonly flags: string;
  /** `boolean` for flags without a value (and `--no-x`), `value` for `--x <v>`, `optional` for `--x [v]`. */
  readonly kind: 'boolean' | 'value' | 'optional';
  /** The value names a file or directory (`<file>`/`<dir>` in the flags): relative paths in a config file resolve against its directory. */
  readonly path: boolean;
  /** The option may be given several times (variadic, a list default, or repeatable.ts `collect`): a config file may give a list. */
  readonly multiple: boolean;
  /** The value when nothing sets it. */
  readonly defaultValue: unknown;
  /** The value `--x` alone stands for when `--x [v]` has a preset. */
  readonly preset: unknown;
  /** The option's argument parser, which also validates (`previous` is the value so far). */
  readonly parse: ((value: string, previous: unknown) => unknown) | undefined;
}

/** A value and where it came from; `origin` names the variable, or the key in the file (`timeout`, `commands.connect.timeout`). */
export interface ResolvedValue {
  readonly value: unknown;
  readonly source: ConfigSource;
  readonly origin?: string;
}

/** A config file's values, validated: top-level keys and per-command sections, as written. */
export interface ConfigValues {
  /** The file, absolute: named in errors and by `nattrav config`; relative paths resolve against its directory. */
  readonly file: string;
  /** Keys for every command that has the option. */
  readonly top: Readonly<Record<string, unknown>>;
  /** Keys for one command, by command path (`connect`, `ca issue`); these win over top-level keys. */
  readonly commands: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/** The path of `command` below the program, e.g. `ca issue`; `''` for the program. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let cmd: Command | null = command; cmd?.parent; cmd = cmd.parent) names.unshift(cmd.name());
  return names.join(' ');
}

/** The program and every command below it, parents before children. */
export function allCommands(program: Command): Command[] {
  return [program, ...program.commands.flatMap((cmd) => allCommands(cmd))];
}

/** The environment variable for a config key: `broker-ca` -> `NATTRAV_BROKER_CA`. */
export function envName(key: string): string {
  return `NATTRAV_${key.toUpperCase().replace(/-/g, '_')}`;
}

function keyOf(option: Option): string | undefined {
  const long = option.long?.replace(/^--/, '');
  return option.negate ? long?.replace(/^no-/, '') : long;
}

/** The configurable options of one command, in the order they were declared. */
export function commandSpecs(command: Command): OptionSpec[] {
  const path = commandPath(command);
  const excluded = NOT_CONFIGURABLE[path] ?? [];
  const byKey = new Map<string, Option[]>();
  for (const option of command.options) {
    const key = keyOf(option);
    if (key === undefined || excluded.includes(key)) continue;
    byKey.set(key, [...(byKey.get(key) ?? []), option]);
  }
  return [...byKey].map(([key, options]) => {
    const first = options[0] as Option;
    // commander's isBoolean() is false for --no-x; what counts is whether a value follows the flag.
    const valued = options.find((option) => option.required || option.optional) ?? first;
    const parseArg = valued.parseArg;
    return {
      command: path,
      key,
      attribute: first.attributeName(),
      env: envName(key),
      flags: options.map((option) => option.flags).join('/'),
      kind: valued.required ? 'value' : valued.optional ? 'optional' : 'boolean',
      path: /<(file|dir)\b[^>]*>/.test(valued.flags),
      multiple: valued.variadic || Array.isArray(valued.defaultValue) || parseArg === collect,
      defaultValue: defaultOf(options),
      preset: valued.presetArg,
      parse: parseArg === undefined ? undefined : (value: string, previous: unknown) => parseArg(value, previous),
    } satisfies OptionSpec;
  });
}

/** The value commander gives before parsing: the declared default, or `true` for a `--no-x` without a `--x`. */
function defaultOf(options: readonly Option[]): unknown {
  const declared = options.find((option) => option.defaultValue !== undefined)?.defaultValue as unknown;
  const loneNegation = options.every((option) => option.negate);
  return loneNegation ? (declared ?? true) : declared;
}

/** Every configurable option of the program and its commands. */
export function programSpecs(program: Command): OptionSpec[] {
  return allCommands(program).flatMap((cmd) => commandSpecs(cmd));
}

const TRUE_WORDS = ['1', 'true', 'yes', 'on'];
const FALSE_WORDS = ['0', 'false', 'no', 'off'];

function invalid(where: string, spec: OptionSpec, message: string): NattravError {
  const command = spec.command === '' ? 'nattrav' : `nattrav ${spec.command}`;
  return new NattravError(ErrorCode.InvalidArgument, `${where}: ${message} (for ${spec.flags} of ${command})`);
}

function parsed(spec: OptionSpec, text: string, previous: unknown, where: string): unknown {
  if (spec.parse === undefined) {
    if (!spec.multiple) return text;
    // As commander collects a repeated option: the first value replaces the default.
    return previous === spec.defaultValue || !Array.isArray(previous) ? [text] : [...(previous as unknown[]), text];
  }
  try {
    // A copy: a parser that pushes onto `previous` must not change the option's default list.
    return spec.parse(text, Array.isArray(previous) ? [...(previous as unknown[])] : previous);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw invalid(where, spec, `${JSON.stringify(text)} is invalid: ${err.message}`);
    throw err;
  }
}

/** Converts an environment variable's text the way the flag would take it; booleans are 1/0, true/false, yes/no, on/off. */
export function valueFromEnv(spec: OptionSpec, text: string): unknown {
  if (spec.kind === 'boolean') {
    const word = text.trim().toLowerCase();
    if (TRUE_WORDS.includes(word)) return true;
    if (FALSE_WORDS.includes(word)) return false;
    throw invalid(spec.env, spec, `expected 1 or 0 (true/false, yes/no, on/off), got ${JSON.stringify(text)}`);
  }
  return parsed(spec, text, spec.defaultValue, spec.env);
}

/** Expands `~/` and resolves a relative path against the config file's directory. */
function filePath(value: string, dir: string, home: string): string {
  if (value === '~' || value.startsWith('~/')) return join(home, value.slice(1));
  return isAbsolute(value) ? value : resolve(dir, value);
}

/**
 * Converts a config file's value (`where` names the file and key) the way the
 * flag would take it: booleans for flags, strings or numbers for values, a
 * list for an option that may be repeated.
 */
export function valueFromFile(spec: OptionSpec, raw: unknown, where: string, dir: string, home: string = homedir()): unknown {
  if (spec.kind === 'boolean' || (spec.kind === 'optional' && typeof raw === 'boolean')) {
    if (typeof raw !== 'boolean') throw invalid(where, spec, `expected true or false, got ${describe(raw)}`);
    if (spec.kind === 'boolean') return raw;
    return raw ? (spec.preset ?? true) : spec.defaultValue;
  }
  const items = spec.multiple && Array.isArray(raw) ? (raw as unknown[]) : [raw];
  let value = spec.defaultValue;
  for (const item of items) {
    if (typeof item !== 'string' && !(typeof item === 'number' && Number.isFinite(item))) {
      throw invalid(where, spec, `expected ${spec.multiple ? 'a string, a number or a list of them' : 'a string or a number'}, got ${describe(item)}`);
    }
    const text = String(item);
    value = parsed(spec, spec.path ? filePath(text, dir, home) : text, value, where);
  }
  return value;
}

/** How a key in a command's section is named in messages: `commands.connect.timeout`, `commands["ca issue"].days`. */
export function sectionKey(command: string, key?: string): string {
  const section = /^[a-z][a-z0-9-]*$/.test(command) ? `commands.${command}` : `commands[${JSON.stringify(command)}]`;
  return key === undefined ? section : `${section}.${key}`;
}

function describe(raw: unknown): string {
  if (raw === null) return 'null';
  if (Array.isArray(raw)) return 'a list';
  return typeof raw === 'object' ? 'an object' : `${typeof raw} ${JSON.stringify(raw)}`;
}

/** The inputs of {@link resolveOption}. */
export interface ResolveInputs {
  /** The value given as a flag, when it was. */
  readonly flag?: { readonly value: unknown };
  /** The environment (NATTRAV_* variables). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The config file, when there is one. */
  readonly file?: ConfigValues;
  /** The home directory, for `~/` in file paths. */
  readonly home?: string;
}

/**
 * The effective value of one option: a flag beats the environment, the
 * environment beats the config file (a command's section beats its top-level
 * keys), the file beats the default. An empty variable counts as unset. Throws NattravError (InvalidArgument) for
 * a value the option does not accept.
 */
export function resolveOption(spec: OptionSpec, inputs: ResolveInputs): ResolvedValue {
  if (inputs.flag !== undefined) return { value: inputs.flag.value, source: 'flag' };
  // An empty variable counts as unset, as with NATTRAV_CONFIG and XDG_CONFIG_HOME.
  const text = inputs.env[spec.env];
  if (text !== undefined && text !== '') return { value: valueFromEnv(spec, text), source: 'env', origin: spec.env };
  const file = inputs.file;
  if (file !== undefined) {
    const fromFile = (raw: unknown, origin: string): ResolvedValue => ({
      value: valueFromFile(spec, raw, `${file.file}: ${origin}`, dirname(file.file), inputs.home),
      source: 'file',
      origin,
    });
    const section = file.commands[spec.command];
    if (section !== undefined && Object.hasOwn(section, spec.key)) return fromFile(section[spec.key], sectionKey(spec.command, spec.key));
    if (Object.hasOwn(file.top, spec.key)) return fromFile(file.top[spec.key], spec.key);
  }
  return { value: spec.defaultValue, source: 'default' };
}
