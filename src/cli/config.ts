/**
 * Options from the environment and a config file, for every command:
 * precedence flag > NATTRAV_<OPTION> > config file (a command's section, then
 * the top level) > default. And `nattrav config`, which prints the effective
 * value of every configurable option and where it came from.
 *
 * How it plugs into commander (14): when a command dispatches to a
 * subcommand, the `preSubcommand` hook runs before the subcommand parses its
 * flags. It sets every configurable option of the subcommand that the
 * environment or the file gives (sources `env` / `config`), so the flags
 * parsed next override them, and a `requiredOption` (`--broker`) given by the
 * environment or the file passes commander's check, which comes before
 * `preAction`. A flag for an option that may be repeated starts again from the
 * default instead of adding to the configured value. The program's own options
 * (`--json`) are parsed before the hook runs; it fills those a flag did not set.
 */
import { EventEmitter } from 'node:events';
import { homedir } from 'node:os';
import { CommanderError, type Command } from 'commander';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { ExitCode, Reporter } from './output.js';
import { examples } from './help.js';
import { allCommands, commandPath, commandSpecs, programSpecs, resolveOption, type ConfigValues, type OptionSpec, type ResolveInputs, type ResolvedValue } from './config-spec.js';
import { loadConfig, locateConfig, type ConfigLocation } from './config-file.js';
import { maskUrlPassword } from '../common/url.js';

/** Runs a command with a reporter; main.ts's `run`. */
type Run = (fn: (out: Reporter) => Promise<number>) => void;

const CONFIG_HELP = `
Precedence: flag > NATTRAV_<OPTION> (e.g. NATTRAV_BROKER_CA for --broker-ca; flags
without a value take 1/0, true/false, yes/no, on/off) > config file > default.
The file (--config FILE, NATTRAV_CONFIG, or $XDG_CONFIG_HOME/nattrav/config.json,
~/.config/nattrav/config.json) is JSON; keys are long option names, top-level keys
apply to every command with the option, "commands" holds per-command sections:
  { "broker": "broker.example:3478", "identity": "./alice",
    "commands": { "connect": { "timeout": 5000 }, "ca issue": { "days": 30 } } }
Relative paths resolve against the file's directory.
`;

/** The config file as loaded for this run, and the environment it was loaded in. */
interface LoadedConfig {
  readonly location: ConfigLocation;
  readonly values: ConfigValues | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly home: string;
}

/** The inputs of {@link resolveOption} for `flag` (if any) under `config`. */
function inputsFor(config: LoadedConfig, flag: { value: unknown } | undefined): ResolveInputs {
  return { env: config.env, home: config.home, ...(flag === undefined ? {} : { flag }), ...(config.values === undefined ? {} : { file: config.values }) };
}

/** What {@link addConfig} reads besides the command line. */
export interface ConfigContext {
  /** The environment (NATTRAV_*, XDG_CONFIG_HOME). @default process.env */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The home directory (~/.config, `~/` in the file). @default os.homedir() */
  readonly home?: string;
}

/**
 * Adds the global `--config FILE` option, the `config` command, and the
 * environment / config-file defaults of every command's options (also of
 * commands added after this call).
 */
export function addConfig(program: Command, run: Run, context: ConfigContext = {}): void {
  const env = context.env ?? process.env;
  const home = context.home ?? homedir();
  program.option('--config <file>', 'read option values from this JSON file (default: NATTRAV_CONFIG, or $XDG_CONFIG_HOME/nattrav/config.json or ~/.config/nattrav/config.json when present)');
  let loading: Promise<LoadedConfig> | undefined;
  const config = (): Promise<LoadedConfig> => {
    loading ??= (async () => {
      const location = locateConfig(program.getOptionValue('config') as string | undefined, env, home);
      return { location, env, home, values: await loadConfig(location, programSpecs(program), home) };
    })();
    return loading;
  };
  // Commands whose flags are watched, and commands (with subcommands) that got the hook.
  const watched = new WeakSet<Command>();
  const hooked = new WeakSet<Command>([program]);
  const beforeSubcommand = async (parent: Command, sub: Command): Promise<void> => {
    try {
      const loaded = await config();
      if (parent.parent === null) applyConfigured(parent, loaded);
      watchFlags(sub, watched);
      const weakened = applyConfigured(sub, loaded);
      // Said once the flags are parsed: a flag given after all (--tls) takes the setting back.
      if (weakened.length > 0 && sub.name() !== 'config') {
        sub.hook('preAction', () => warnWeakened(weakened.filter((w) => sub.getOptionValueSource(w.attribute) !== 'cli'), new Reporter(program.getOptionValue('json') === true)));
      }
    } catch (err) {
      if (!isNattravError(err)) throw err;
      // Reported like any bad input (exit 2); the CommanderError only ends the parse.
      new Reporter(program.getOptionValue('json') === true).error(err);
      throw new CommanderError(ExitCode.Usage, 'nattrav.config', err.message);
    }
    if (sub.commands.length > 0 && !hooked.has(sub)) {
      hooked.add(sub);
      sub.hook('preSubcommand', beforeSubcommand);
    }
  };
  program.hook('preSubcommand', beforeSubcommand);
  program.addHelpText(
    'after',
    '\nEvery command\'s options can also be set by NATTRAV_<OPTION> variables (NATTRAV_BROKER, NATTRAV_BROKER_CA, ...)\n' +
      'and a JSON config file; a flag beats the environment, which beats the file. See nattrav config --help.\n',
  );

  program
    .command('config')
    .description('print the effective value of every configurable option and where it came from: flag, env (NATTRAV_*), file or default')
    .argument('[command-line...]', 'a command and its flags, e.g. connect --timeout 5000: show only that command, its flags as "flag"')
    .allowUnknownOption()
    .option('--json', 'print the result as one JSON line on stdout')
    .action((words: string[], options: { json?: boolean }) =>
      run(async (out) => configCommand(program, words, await config(), options.json === true && !out.json ? new Reporter(true) : out)),
    )
    .addHelpText('after', `${CONFIG_HELP}${examples(['nattrav config', 'NATTRAV_BROKER=broker.example:3478 nattrav config connect --timeout 5000 --json'])}`);
}

/**
 * Settings that turn protection off: typed on the command line they are plain to see,
 * from the environment or a file they could go unnoticed, so those are said aloud.
 */
const WEAKENING: ReadonlyArray<{ readonly attribute: string; readonly value: unknown; readonly what: string }> = [
  { attribute: 'tls', value: false, what: 'TLS is off: connections are neither encrypted nor authenticated end to end' },
  { attribute: 'open', value: true, what: 'the broker runs in OPEN MODE: anyone can register or take over any URI' },
];

/** A protection turned off by the environment or the config file. */
interface Weakened {
  readonly attribute: string;
  readonly key: string;
  readonly source: 'env' | 'file';
  /** The variable (NATTRAV_TLS), or the key and the file (`tls in /etc/nattrav.json`). */
  readonly from: string;
  readonly what: string;
}

/**
 * Sets the options of `command` that the environment or the file gives and no flag set;
 * returns those of them that turn a protection off.
 */
function applyConfigured(command: Command, config: LoadedConfig): Weakened[] {
  const weakened: Weakened[] = [];
  for (const spec of commandSpecs(command)) {
    if (command.getOptionValueSource(spec.attribute) === 'cli') continue;
    const resolved = resolveOption(spec, inputsFor(config, undefined));
    if (resolved.source === 'env' || resolved.source === 'file') {
      command.setOptionValueWithSource(spec.attribute, resolved.value, resolved.source === 'env' ? 'env' : 'config');
      const weakening = WEAKENING.find((w) => w.attribute === spec.attribute && w.value === resolved.value);
      if (weakening !== undefined) {
        const origin = resolved.origin ?? spec.key;
        const from = resolved.source === 'env' ? origin : `${origin} in ${config.values?.file ?? 'the config file'}`;
        weakened.push({ attribute: spec.attribute, key: spec.key, source: resolved.source, from, what: weakening.what });
      }
    }
  }
  return weakened;
}

/** One warning on stderr per protection the environment or the file turned off. */
function warnWeakened(weakened: readonly Weakened[], out: Reporter): void {
  for (const w of weakened) {
    out.event('warning', { option: w.key, source: w.source, from: w.from, message: w.what }, `warning: ${w.what} (set by ${w.from}, not on the command line)`);
  }
}

/**
 * Makes the first flag of a configured option start from the default, so
 * `--allow x` replaces a configured list rather than adding to it (commander
 * hands a repeated option's parser the value so far).
 */
function watchFlags(command: Command, done: WeakSet<Command>): void {
  if (done.has(command)) return;
  done.add(command);
  // commander's Command is an EventEmitter (its typings declare only `on`); the listener must run before commander's own.
  if (!(command instanceof EventEmitter)) throw new Error('commander.Command is expected to be an EventEmitter');
  for (const spec of commandSpecs(command)) {
    for (const option of command.options.filter((candidate) => candidate.attributeName() === spec.attribute)) {
      command.prependListener(`option:${option.name()}`, () => {
        const source = command.getOptionValueSource(spec.attribute);
        if (source === 'env' || source === 'config') command.setOptionValueWithSource(spec.attribute, spec.defaultValue, 'default');
      });
    }
  }
}

/** One line of `nattrav config`: an option of a command and its effective value. */
interface ConfigEntry {
  readonly spec: OptionSpec;
  readonly resolved: ResolvedValue;
}

/** Finds the command `words` start with (`ca issue ...`); the rest are its flags. */
function target(program: Command, words: readonly string[]): { command: Command; flags: string[] } | undefined {
  let command = program;
  let used = 0;
  for (const word of words) {
    const sub = command.commands.find((candidate) => candidate.name() === word || candidate.aliases().includes(word));
    if (sub === undefined) break;
    command = sub;
    used += 1;
  }
  return used === 0 ? undefined : { command, flags: words.slice(used) };
}

/** The flags `flags` give `command`, as commander parses them (positional arguments are ignored). */
function parseFlags(command: Command, flags: readonly string[]): Map<string, unknown> {
  // A bad flag value is reported once, by the caller, as this command's usage error (exit 2).
  const output = command.configureOutput();
  command.configureOutput({ ...output, writeErr: () => undefined });
  let parsed: { operands: string[]; unknown: string[] };
  try {
    parsed = command.parseOptions([...flags]);
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    throw new NattravError(ErrorCode.InvalidArgument, err.message.replace(/^error: /, ''), { cause: err });
  } finally {
    command.configureOutput(output);
  }
  if (parsed.unknown.length > 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `nattrav ${commandPath(command)} has no option ${String(parsed.unknown[0])}`);
  }
  const given = new Map<string, unknown>();
  for (const spec of commandSpecs(command)) {
    if (command.getOptionValueSource(spec.attribute) === 'cli') given.set(spec.attribute, command.getOptionValue(spec.attribute));
  }
  return given;
}

/** `nattrav config [COMMAND [FLAGS...]]`: prints the configurable options' effective values and sources. */
async function configCommand(program: Command, words: readonly string[], config: LoadedConfig, out: Reporter): Promise<number> {
  let commands = allCommands(program);
  let given = new Map<Command, Map<string, unknown>>();
  if (words.length > 0) {
    const found = target(program, words);
    if (found === undefined) {
      const names = program.commands.map((cmd) => cmd.name()).join(', ');
      throw new NattravError(ErrorCode.InvalidArgument, `unknown command ${JSON.stringify(words[0])}; commands: ${names}`);
    }
    commands = [program, ...allCommands(found.command)];
    given = new Map([[found.command, parseFlags(found.command, found.flags)]]);
  }
  const programFlags = new Map(commandSpecs(program).filter((spec) => program.getOptionValueSource(spec.attribute) === 'cli').map((spec) => [spec.attribute, program.getOptionValue(spec.attribute) as unknown]));
  given.set(program, new Map([...programFlags, ...(given.get(program) ?? [])]));
  const entries: ConfigEntry[] = commands.flatMap((command) =>
    commandSpecs(command).map((spec) => {
      const flags = given.get(command);
      const flag = flags?.has(spec.attribute) === true ? { value: flags.get(spec.attribute) } : undefined;
      return { spec, resolved: resolveOption(spec, inputsFor(config, flag)) };
    }),
  );
  const file = { path: config.location.path, source: config.location.source, found: config.values !== undefined };
  const options = entries.map(({ spec, resolved }) => ({
    command: spec.command,
    key: spec.key,
    flags: spec.flags,
    env: spec.env,
    value: maskedUrl(resolved.value) ?? null,
    source: resolved.source,
    ...(resolved.origin === undefined ? {} : { origin: resolved.origin }),
  }));
  out.result('config', { file, options }, humanConfig(file, entries).join('\n'));
  return ExitCode.Ok;
}

/** A URL's password (`--redis redis://user:PASSWORD@host`) is never printed: `***` stands for it. */
function maskedUrl(value: unknown): unknown {
  return typeof value === 'string' ? maskUrlPassword(value) : value;
}

function shown(raw: unknown): string {
  const value = maskedUrl(raw);
  if (value === undefined) return '(not set)';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function humanConfig(file: { path: string; source: string; found: boolean }, entries: readonly ConfigEntry[]): string[] {
  const chosenBy = file.source === 'flag' ? '--config' : file.source === 'env' ? 'NATTRAV_CONFIG' : 'default location';
  const lines = [`config file: ${file.path} (${chosenBy}${file.found ? '' : ', not present'})`];
  const width = Math.max(...entries.map(({ spec }) => spec.key.length)) + 2;
  const valueWidth = Math.min(40, Math.max(...entries.map(({ resolved }) => shown(resolved.value).length)));
  let command: string | undefined;
  for (const { spec, resolved } of entries) {
    if (spec.command !== command) {
      command = spec.command;
      lines.push('', command === '' ? 'nattrav (global options)' : `nattrav ${command}`);
    }
    const from = resolved.origin === undefined ? resolved.source : `${resolved.source} ${resolved.origin}`;
    lines.push(`  ${`--${spec.key}`.padEnd(width)}  ${shown(resolved.value).padEnd(valueWidth)}  ${from}`);
  }
  return lines;
}
