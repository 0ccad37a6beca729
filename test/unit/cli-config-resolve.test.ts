/**
 * The pure parts of configuration: which options are configurable and how
 * (spec), the precedence flag > env > file section > file top level > default,
 * turning env and file values into what the flag would give, checking a
 * config file, and where the file is looked for. Plus the commander hook on
 * an in-process program: a configured value satisfies a required option, and a
 * flag for a repeatable option replaces the configured list.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Command, InvalidArgumentError } from 'commander';
import { addConfig } from '../../src/cli/config.js';
import { checkConfig, locateConfig } from '../../src/cli/config-file.js';
import { commandSpecs, envName, programSpecs, resolveOption, valueFromEnv, valueFromFile, type ConfigValues, type OptionSpec } from '../../src/cli/config-spec.js';
import { ExitCode, type Reporter } from '../../src/cli/output.js';
import { isNattravError } from '../../src/index.js';

function milliseconds(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError('expected a positive whole number of milliseconds');
  return value;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A program shaped like nattrav's: the same kinds of options the real commands have. */
function testProgram(): Command {
  const program = new Command().name('t').option('--json').exitOverride().configureOutput({ writeErr: () => undefined });
  program
    .command('connect')
    .argument('<uri>')
    .requiredOption('--broker <host:port>')
    .option('--timeout <ms>', 'ms', milliseconds)
    .option('-v, --verbose')
    .option('--tls')
    .option('--no-tls')
    .option('--identity <dir>')
    .option('--expect-key <fp>')
    .option('--allow <uri>', 'repeatable', collect, [])
    .option('--peer <uri...>', 'variadic')
    .action(() => undefined);
  program.command('netcheck').option('--no-tcp').option('--listen <host:port>', 'listen', '0.0.0.0:3478').action(() => undefined);
  return program;
}

function spec(program: Command, command: string, key: string): OptionSpec {
  const found = programSpecs(program).find((candidate) => candidate.command === command && candidate.key === key);
  assert.ok(found, `no spec ${command} ${key}`);
  return found;
}

function rejects(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => isNattravError(err) && err.code === 'ERR_INVALID_ARGUMENT' && pattern.test(err.message));
}

describe('config specs: every option of every command, minus the per-invocation ones', () => {
  test('keys, variables, kinds, paths, lists and defaults come from the commander options', () => {
    const program = testProgram();
    const connect = program.commands[0] as Command;
    const keys = commandSpecs(connect).map((s) => s.key);
    // --expect-key is never configurable; --tls/--no-tls is one key.
    assert.deepEqual(keys, ['broker', 'timeout', 'verbose', 'tls', 'identity', 'allow', 'peer']);
    assert.deepEqual(commandSpecs(program).map((s) => [s.command, s.key]), [['', 'json']]);

    const broker = spec(program, 'connect', 'broker');
    assert.equal(broker.env, 'NATTRAV_BROKER');
    assert.equal(broker.kind, 'value');
    assert.equal(broker.path, false);
    assert.equal(spec(program, 'connect', 'tls').flags, '--tls/--no-tls');
    assert.equal(spec(program, 'connect', 'tls').kind, 'boolean');
    assert.equal(spec(program, 'connect', 'tls').defaultValue, undefined);
    assert.equal(spec(program, 'connect', 'identity').path, true);
    assert.equal(spec(program, 'connect', 'allow').multiple, true);
    assert.equal(spec(program, 'connect', 'peer').multiple, true);
    assert.equal(spec(program, 'connect', 'timeout').multiple, false);
    // A lone --no-x defaults to true, its key is x.
    assert.equal(spec(program, 'netcheck', 'tcp').defaultValue, true);
    assert.equal(spec(program, 'netcheck', 'tcp').env, 'NATTRAV_TCP');
    assert.equal(spec(program, 'netcheck', 'listen').defaultValue, '0.0.0.0:3478');
    assert.equal(envName('broker-ca'), 'NATTRAV_BROKER_CA');
    assert.equal(envName('relay-max-bytes'), 'NATTRAV_RELAY_MAX_BYTES');
  });
});

describe('resolveOption: flag > env > file section > file top level > default', () => {
  const program = testProgram();
  const timeout = spec(program, 'connect', 'timeout');
  const file: ConfigValues = { file: '/etc/nattrav/config.json', top: { timeout: 3000 }, commands: { connect: { timeout: 4000 } } };

  test('each source wins over the ones below it', () => {
    const env = { NATTRAV_TIMEOUT: '2000' };
    assert.deepEqual(resolveOption(timeout, { flag: { value: '1000' }, env, file }), { value: '1000', source: 'flag' });
    assert.deepEqual(resolveOption(timeout, { env, file }), { value: '2000', source: 'env', origin: 'NATTRAV_TIMEOUT' });
    assert.deepEqual(resolveOption(timeout, { env: {}, file }), { value: '4000', source: 'file', origin: 'commands.connect.timeout' });
    assert.deepEqual(resolveOption(timeout, { env: {}, file: { ...file, commands: {} } }), { value: '3000', source: 'file', origin: 'timeout' });
    assert.deepEqual(resolveOption(timeout, { env: {} }), { value: undefined, source: 'default' });
    const listen = spec(program, 'netcheck', 'listen');
    assert.deepEqual(resolveOption(listen, { env: {}, file }), { value: '0.0.0.0:3478', source: 'default' });
  });

  test('a section only applies to its own command', () => {
    const other: ConfigValues = { file: '/c.json', top: {}, commands: { netcheck: { listen: '127.0.0.1:1' } } };
    assert.equal(resolveOption(timeout, { env: {}, file: other }).source, 'default');
    assert.equal(resolveOption(spec(program, 'netcheck', 'listen'), { env: {}, file: other }).value, '127.0.0.1:1');
  });

  test('a bad value names where it came from and what the option expects', () => {
    rejects(() => resolveOption(timeout, { env: { NATTRAV_TIMEOUT: 'soon' } }), /^NATTRAV_TIMEOUT: "soon" is invalid: expected a positive whole number of milliseconds \(for --timeout <ms> of nattrav connect\)$/);
    const bad: ConfigValues = { file: '/c.json', top: {}, commands: { connect: { timeout: -5 } } };
    rejects(() => resolveOption(timeout, { env: {}, file: bad }), /^\/c\.json: commands\.connect\.timeout: "-5" is invalid: expected a positive/);
  });
});

describe('values from the environment and the file', () => {
  const program = testProgram();

  test('booleans from the environment: 1/0, true/false, yes/no, on/off, anything else is an error', () => {
    const verbose = spec(program, 'connect', 'verbose');
    for (const word of ['1', 'true', 'YES', 'on']) assert.equal(valueFromEnv(verbose, word), true, word);
    for (const word of ['0', 'false', 'No', 'off']) assert.equal(valueFromEnv(verbose, word), false, word);
    rejects(() => valueFromEnv(verbose, 'maybe'), /^NATTRAV_VERBOSE: expected 1 or 0 .*got "maybe"/);
    rejects(() => valueFromEnv(verbose, 'y'), /NATTRAV_VERBOSE/);
    // An empty variable is no setting at all.
    assert.deepEqual(resolveOption(verbose, { env: { NATTRAV_VERBOSE: '' } }), { value: undefined, source: 'default' });
    assert.equal(valueFromEnv(spec(program, 'netcheck', 'tcp'), '0'), false);
  });

  test('file values: the flag\'s types, numbers as text, lists only for repeatable options', () => {
    const where = '/c.json: key';
    assert.equal(valueFromFile(spec(program, 'connect', 'timeout'), 5000, where, '/'), '5000');
    assert.equal(valueFromFile(spec(program, 'connect', 'tls'), false, where, '/'), false);
    rejects(() => valueFromFile(spec(program, 'connect', 'tls'), 'no', where, '/'), /^\/c\.json: key: expected true or false, got string "no" \(for --tls\/--no-tls of nattrav connect\)$/);
    rejects(() => valueFromFile(spec(program, 'connect', 'broker'), ['a:1', 'b:2'], where, '/'), /expected a string or a number, got a list/);
    rejects(() => valueFromFile(spec(program, 'connect', 'broker'), { host: 'a' }, where, '/'), /expected a string or a number, got an object/);
    rejects(() => valueFromFile(spec(program, 'connect', 'broker'), null, where, '/'), /got null/);
    assert.deepEqual(valueFromFile(spec(program, 'connect', 'allow'), ['nattrav://a', 'nattrav://b'], where, '/'), ['nattrav://a', 'nattrav://b']);
    assert.deepEqual(valueFromFile(spec(program, 'connect', 'allow'), 'nattrav://a', where, '/'), ['nattrav://a']);
    assert.deepEqual(valueFromFile(spec(program, 'connect', 'peer'), ['x', 'y'], where, '/'), ['x', 'y']);
    // A parser that pushes onto the list it is given leaves the option's default alone.
    const pushing = new Command().option('--add <v>', 'pushes', (v: string, previous: string[]) => {
      previous.push(v);
      return previous;
    }, []);
    const add = commandSpecs(pushing)[0] as OptionSpec;
    assert.deepEqual(valueFromFile(add, ['a', 'b'], where, '/'), ['a', 'b']);
    assert.deepEqual(valueFromFile(add, ['c'], where, '/'), ['c']);
    assert.deepEqual(pushing.getOptionValue('add'), []);
    rejects(() => valueFromFile(spec(program, 'connect', 'allow'), ['ok', true], where, '/'), /expected a string, a number or a list of them, got boolean true/);
  });

  test('paths: relative to the file\'s directory, ~/ in the home directory, absolute unchanged', () => {
    const identity = spec(program, 'connect', 'identity');
    assert.equal(valueFromFile(identity, './alice', 'k', '/etc/nattrav', '/home/u'), '/etc/nattrav/alice');
    assert.equal(valueFromFile(identity, '../keys/bob', 'k', '/etc/nattrav', '/home/u'), '/etc/keys/bob');
    assert.equal(valueFromFile(identity, '~/ids/alice', 'k', '/etc/nattrav', '/home/u'), '/home/u/ids/alice');
    assert.equal(valueFromFile(identity, '/srv/alice', 'k', '/etc/nattrav', '/home/u'), '/srv/alice');
    // Not a path option: left as written.
    assert.equal(valueFromFile(spec(program, 'connect', 'broker'), './x', 'k', '/etc/nattrav', '/home/u'), './x');
  });
});

describe('checkConfig: every key is checked, errors name the file and the key', () => {
  const specs = programSpecs(testProgram());
  const check = (raw: unknown): ConfigValues => checkConfig(raw, '/c.json', specs, '/home/u');

  test('a valid file keeps the top level and the sections', () => {
    const values = check({ broker: 'b:1', json: true, commands: { connect: { timeout: 5 }, netcheck: { tcp: false } } });
    assert.deepEqual(values, { file: '/c.json', top: { broker: 'b:1', json: true }, commands: { connect: { timeout: 5 }, netcheck: { tcp: false } } });
  });

  test('each kind of mistake', () => {
    rejects(() => check([1]), /^\/c\.json: expected a JSON object of option values.*got a list$/);
    rejects(() => check('broker'), /got a string$/);
    rejects(() => check({ brokr: 'b:1' }), /^\/c\.json: brokr: unknown key \(no command has an option --brokr\); known keys: allow, broker, identity, json, listen, peer, tcp, timeout, tls, verbose$/);
    rejects(() => check({ 'expect-key': 'ab' }), /^\/c\.json: expect-key: --expect-key is given on the command line only/);
    rejects(() => check({ timeout: true }), /^\/c\.json: timeout: expected a string or a number, got boolean true \(for --timeout <ms> of nattrav connect\)$/);
    rejects(() => check({ timeout: '0' }), /^\/c\.json: timeout: "0" is invalid: expected a positive whole number/);
    rejects(() => check({ commands: [] }), /^\/c\.json: commands: expected an object of command sections/);
    rejects(() => check({ commands: { conect: {} } }), /^\/c\.json: commands\.conect: unknown command; commands with options: connect, netcheck$/);
    rejects(() => check({ commands: { connect: 5 } }), /^\/c\.json: commands\.connect: expected an object of option values, got a number$/);
    rejects(() => check({ commands: { netcheck: { timeout: 5 } } }), /^\/c\.json: commands\.netcheck\.timeout: unknown key \(nattrav netcheck has no option --timeout\); known keys: listen, tcp$/);
    rejects(() => check({ commands: { connect: { 'expect-key': 'ab' } } }), /commands\.connect\.expect-key: --expect-key is given on the command line only/);
    rejects(() => check({ commands: { connect: { verbose: 'yes' } } }), /^\/c\.json: commands\.connect\.verbose: expected true or false, got string "yes"/);
  });
});

describe('locateConfig: --config, then NATTRAV_CONFIG, then XDG_CONFIG_HOME, then ~/.config', () => {
  test('the order, and a relative XDG_CONFIG_HOME is ignored as the XDG spec says', () => {
    const env = { NATTRAV_CONFIG: '/e/c.json', XDG_CONFIG_HOME: '/xdg' };
    assert.deepEqual(locateConfig('/f/c.json', env, '/home/u'), { path: '/f/c.json', source: 'flag' });
    assert.deepEqual(locateConfig(undefined, env, '/home/u'), { path: '/e/c.json', source: 'env' });
    assert.deepEqual(locateConfig(undefined, { XDG_CONFIG_HOME: '/xdg' }, '/home/u'), { path: '/xdg/nattrav/config.json', source: 'default' });
    assert.deepEqual(locateConfig(undefined, { XDG_CONFIG_HOME: 'rel' }, '/home/u'), { path: '/home/u/.config/nattrav/config.json', source: 'default' });
    assert.deepEqual(locateConfig(undefined, {}, '/home/u'), { path: '/home/u/.config/nattrav/config.json', source: 'default' });
  });
});

describe('addConfig on a commander program (in process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nattrav-config-hook-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Parses `args` with env/file support; resolves to the options connect's action got. */
  async function parse(args: string[], env: Record<string, string>, file?: unknown): Promise<Record<string, unknown>> {
    const path = join(dir, 'config.json');
    if (file !== undefined) writeFileSync(path, JSON.stringify(file));
    const program = testProgram();
    let got: Record<string, unknown> = {};
    (program.commands[0] as Command).action((_uri: string, options: Record<string, unknown>) => {
      got = options;
    });
    const run = (fn: (out: Reporter) => Promise<number>): void => void fn;
    addConfig(program, run, { env: { ...env, ...(file === undefined ? {} : { NATTRAV_CONFIG: path }) }, home: dir });
    await program.parseAsync(['node', 't', ...args]);
    return got;
  }

  test('a broker from the environment or the file satisfies the required --broker', async () => {
    assert.equal((await parse(['connect', 'nattrav://a'], { NATTRAV_BROKER: 'env:1' })).broker, 'env:1');
    assert.equal((await parse(['connect', 'nattrav://a'], {}, { broker: 'file:1' })).broker, 'file:1');
    await assert.rejects(parse(['connect', 'nattrav://a'], {}), (err: Error & { exitCode?: number }) => err.exitCode === 1 && /required option '--broker/.test(err.message));
  });

  test('flags beat env, env beats the file, and a flag replaces a configured list', async () => {
    const file = { broker: 'file:1', commands: { connect: { timeout: 300, allow: ['nattrav://f1', 'nattrav://f2'], tls: false } } };
    const fromFile = await parse(['connect', 'nattrav://a'], {}, file);
    assert.deepEqual([fromFile.broker, fromFile.timeout, fromFile.allow, fromFile.tls], ['file:1', '300', ['nattrav://f1', 'nattrav://f2'], false]);
    const fromEnv = await parse(['connect', 'nattrav://a'], { NATTRAV_BROKER: 'env:1', NATTRAV_ALLOW: 'nattrav://e', NATTRAV_TLS: 'yes' }, file);
    assert.deepEqual([fromEnv.broker, fromEnv.timeout, fromEnv.allow, fromEnv.tls], ['env:1', '300', ['nattrav://e'], true]);
    const fromFlags = await parse(['connect', 'nattrav://a', '--broker', 'flag:1', '--allow', 'nattrav://x', '--allow', 'nattrav://y', '--no-tls'], { NATTRAV_BROKER: 'env:1', NATTRAV_TLS: '1' }, file);
    assert.deepEqual([fromFlags.broker, fromFlags.allow, fromFlags.tls], ['flag:1', ['nattrav://x', 'nattrav://y'], false]);
  });

  test('a bad configured value ends the parse with the usage exit code', async () => {
    await assert.rejects(parse(['connect', 'nattrav://a'], { NATTRAV_BROKER: 'b:1', NATTRAV_TIMEOUT: 'x' }), (err: Error & { exitCode?: number }) => err.exitCode === ExitCode.Usage && /NATTRAV_TIMEOUT/.test(err.message));
  });
});
