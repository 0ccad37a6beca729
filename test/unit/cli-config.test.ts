/**
 * Configuration through the real `nattrav` command (loopback, real
 * processes, a temporary HOME and XDG_CONFIG_HOME): flag > NATTRAV_* > config
 * file (section, then top level) > default for several options and commands,
 * a required --broker given by the environment or the file, which file is
 * read, relative paths, an error for each kind of bad configuration, and
 * `nattrav config` in both output formats.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI_PATH } from '../../src/lab/cli-process.js';
import type { Broker } from '../../src/broker/broker.js';
import { startBroker } from '../helpers/loopback.js';
import { closedPort } from './stun-responders.js';

/** Bounds one CLI run; each ends by itself within a few seconds on loopback. */
const RUN_LIMIT_MS = 30_000;

const children: ChildProcess[] = [];
const root = mkdtempSync(join(tmpdir(), 'nattrav-cli-config-'));
const home = join(root, 'home');
const xdg = join(root, 'xdg');
const xdgFile = join(xdg, 'nattrav', 'config.json');
mkdirSync(join(xdg, 'nattrav'), { recursive: true });
mkdirSync(join(home, '.config', 'nattrav'), { recursive: true });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of this process without NATTRAV_* and XDG_CONFIG_HOME, so only what a test sets counts. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('NATTRAV_') && name !== 'XDG_CONFIG_HOME') env[name] = value;
  }
  return env;
}

/** Runs `nattrav args` to its end with the temporary HOME and XDG_CONFIG_HOME, plus `env`. */
function nattrav(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...cleanEnv(), HOME: home, XDG_CONFIG_HOME: xdg, ...env } });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const limit = setTimeout(() => child.kill('SIGKILL'), RUN_LIMIT_MS);
  return new Promise((resolve) => child.once('close', (code) => {
    clearTimeout(limit);
    resolve({ code, stdout, stderr });
  }));
}

/** Writes the default config file (in XDG_CONFIG_HOME); `undefined` removes it. */
function writeConfig(content: unknown, path = xdgFile): void {
  if (content === undefined) rmSync(path, { force: true });
  else writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
}

interface ShownOption {
  command: string;
  key: string;
  env: string;
  value: unknown;
  source: string;
  origin?: string;
}

interface ShownConfig {
  event: string;
  file: { path: string; source: string; found: boolean };
  options: ShownOption[];
}

/** `nattrav config --json ...args`, parsed; fails the test unless it exits 0 with one JSON line. */
async function shown(args: string[] = [], env: Record<string, string> = {}): Promise<ShownConfig> {
  const run = await nattrav(['config', ...args, '--json'], env);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  assert.equal(lines.length, 1, run.stdout);
  return JSON.parse(lines[0] as string) as ShownConfig;
}

function option(config: ShownConfig, command: string, key: string): ShownOption {
  const found = config.options.find((candidate) => candidate.command === command && candidate.key === key);
  assert.ok(found, `nattrav config shows no ${command} --${key}`);
  return found;
}

describe('nattrav configuration: flags, NATTRAV_* variables, config file', () => {
  let broker: Broker;
  let brokerAddress = '';
  let closed = '';

  before(async () => {
    const started = await startBroker();
    broker = started.broker;
    brokerAddress = started.address;
    closed = `127.0.0.1:${String(await closedPort())}`;
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await broker.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('without a file every option has its default, and config --json says the file is not there', async () => {
    writeConfig(undefined);
    const config = await shown();
    assert.equal(config.event, 'config');
    assert.deepEqual(config.file, { path: xdgFile, source: 'default', found: false });
    assert.deepEqual(option(config, 'broker', 'listen'), { command: 'broker', key: 'listen', flags: '--listen <host:port>', env: 'NATTRAV_LISTEN', value: '0.0.0.0:3478', source: 'default' });
    assert.equal(option(config, 'netcheck', 'tcp').value, true);
    assert.equal(option(config, 'connect', 'broker-ca').env, 'NATTRAV_BROKER_CA');
    assert.equal(option(config, 'connect', 'timeout').value, null);
    // One-shot and per-run options are not configurable.
    assert.equal(config.options.some((o) => o.key === 'accept-new-key' || o.key === 'expect-key' || o.key === 'config' || o.key === 'version'), false);
    assert.equal(config.options.some((o) => o.command === 'ca issue' && ['ca', 'uri', 'out'].includes(o.key)), false);
  });

  test('flag > env > file section > file top level > default, for options of several commands', async () => {
    const cases: Array<{ command: string[]; key: string; file: Record<string, unknown>; env: Record<string, string>; flag: string[]; values: [unknown, unknown, unknown, unknown, unknown] }> = [
      // values: default, file top level, file section, env, flag
      { command: ['connect'], key: 'timeout', file: { timeout: 1000 }, env: { NATTRAV_TIMEOUT: '3000' }, flag: ['--timeout', '4000'], values: [null, '1000', '2000', '3000', '4000'] },
      { command: ['broker'], key: 'listen', file: { listen: '127.0.0.1:7000' }, env: { NATTRAV_LISTEN: '127.0.0.1:7002' }, flag: ['--listen', '127.0.0.1:7003'], values: ['0.0.0.0:3478', '127.0.0.1:7000', '127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7003'] },
      { command: ['netcheck'], key: 'tcp', file: { tcp: false }, env: { NATTRAV_TCP: 'yes' }, flag: ['--no-tcp'], values: [true, false, true, true, false] },
      { command: ['ca', 'issue'], key: 'days', file: { days: 10 }, env: { NATTRAV_DAYS: '30' }, flag: ['--days', '40'], values: [null, '10', '20', '30', '40'] },
    ];
    for (const c of cases) {
      const path = c.command.join(' ');
      const [, top, section] = c.values;
      const layers: Array<{ file?: unknown; env?: Record<string, string>; flag?: string[]; source: string; value: unknown }> = [
        { source: 'default', value: c.values[0] },
        { file: c.file, source: 'file', value: top },
        { file: { ...c.file, commands: { [path]: { [c.key]: section } } }, source: 'file', value: section },
        { file: { ...c.file, commands: { [path]: { [c.key]: section } } }, env: c.env, source: 'env', value: c.values[3] },
        { file: { ...c.file, commands: { [path]: { [c.key]: section } } }, env: c.env, flag: c.flag, source: 'flag', value: c.values[4] },
      ];
      for (const layer of layers) {
        writeConfig(layer.file);
        const got = option(await shown([...c.command, ...(layer.flag ?? [])], layer.env), path, c.key);
        assert.deepEqual([got.source, got.value], [layer.source, layer.value], `${path} --${c.key} from ${layer.source}`);
      }
    }
  });

  test('a required --broker from the environment or the file is used by connect; a flag beats both', async () => {
    // Exit 3 (unknown URI) means the broker that answered was used; exit 4 means the closed port was.
    const connect = (args: string[], env: Record<string, string> = {}): Promise<Run> => nattrav(['connect', 'nattrav://nobody', ...args], env);
    writeConfig(undefined);
    const missing = await connect([]);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /required option '--broker <host:port>' not specified/);
    assert.equal((await connect([], { NATTRAV_BROKER: brokerAddress })).code, 3);
    writeConfig({ broker: brokerAddress });
    assert.equal((await connect([])).code, 3);
    writeConfig({ commands: { connect: { broker: brokerAddress } }, broker: closed });
    assert.equal((await connect([])).code, 3);
    writeConfig({ broker: closed });
    assert.equal((await connect([], { NATTRAV_BROKER: brokerAddress })).code, 3);
    assert.equal((await connect(['--broker', brokerAddress], { NATTRAV_BROKER: closed })).code, 3);
    assert.equal((await connect(['--broker', closed], { NATTRAV_BROKER: brokerAddress })).code, 4);
    // The global --json from the file: the error is a JSON line.
    writeConfig({ json: true, broker: closed });
    const json = await connect([]);
    assert.equal(json.code, 4);
    assert.match(json.stderr, /^\{"event":"error","code":"ERR_BROKER_UNREACHABLE"/m);
  });

  test('protection turned off by the environment or the file is said on stderr; on the command line it is not repeated', async () => {
    const connect = (args: string[], env: Record<string, string> = {}): Promise<Run> => nattrav(['connect', 'nattrav://nobody', '--broker', brokerAddress, ...args], env);
    writeConfig(undefined);
    const fromEnv = await connect([], { NATTRAV_TLS: 'false' });
    assert.equal(fromEnv.code, 3, fromEnv.stderr);
    assert.match(fromEnv.stderr, /^warning: TLS is off: connections are neither encrypted nor authenticated end to end \(set by NATTRAV_TLS, not on the command line\)$/m);
    writeConfig({ commands: { connect: { tls: false } } });
    const fromFile = await connect(['--json']);
    const warning = fromFile.stderr.split('\n').find((line) => line.includes('"warning"'));
    assert.deepEqual(JSON.parse(String(warning)), { event: 'warning', option: 'tls', source: 'file', from: `commands.connect.tls in ${xdgFile}`, message: 'TLS is off: connections are neither encrypted nor authenticated end to end' });
    // Typed by hand: plain to see already, no warning; a flag turning TLS back on beats the file.
    assert.doesNotMatch((await connect(['--no-tls'])).stderr, /warning/);
    assert.doesNotMatch((await connect(['--tls'])).stderr, /warning/);
    writeConfig(undefined);
    assert.doesNotMatch((await connect([])).stderr, /warning/);
  });

  test('a subcommand of a subcommand (ca init) takes its options from the file section, the environment and flags', async () => {
    const caInit = async (args: string[], env: Record<string, string> = {}): Promise<Record<string, unknown>> => {
      const dir = mkdtempSync(join(root, 'ca-'));
      const run = await nattrav(['ca', 'init', join(dir, 'ca'), '--json', ...args], env);
      assert.equal(run.code, 0, run.stderr);
      return JSON.parse(run.stdout) as Record<string, unknown>;
    };
    writeConfig({ commands: { 'ca init': { 'key-type': 'ed25519', days: 2 } } });
    const fromFile = await caInit([]);
    assert.equal(fromFile.keyType, 'ed25519');
    const validMs = Date.parse(String(fromFile.notAfter)) - Date.now();
    assert.ok(validMs > 0 && validMs <= 2 * 86_400_000, `valid for ${String(validMs)} ms, expected at most 2 days`);
    writeConfig({ 'key-type': 'ed25519' });
    assert.equal((await caInit([], { NATTRAV_KEY_TYPE: 'ecdsa-p256' })).keyType, 'ecdsa-p256');
    assert.equal((await caInit(['--key-type', 'ed25519'], { NATTRAV_KEY_TYPE: 'ecdsa-p256' })).keyType, 'ed25519');
  });

  test('which file: --config, then NATTRAV_CONFIG, then XDG_CONFIG_HOME, then ~/.config; paths relative to the file', async () => {
    const other = join(root, 'other');
    mkdirSync(other, { recursive: true });
    const named = join(other, 'named.json');
    const flagged = join(other, 'flagged.json');
    writeConfig({ identity: './alice' }, join(home, '.config', 'nattrav', 'config.json'));
    writeConfig({ identity: '../ids/bob', 'known-keys': '~/known' });
    writeConfig({ identity: 'named' }, named);
    writeConfig({ identity: 'flagged' }, flagged);
    const fromHome = await shown(['listen'], { XDG_CONFIG_HOME: '' });
    assert.deepEqual([fromHome.file.source, option(fromHome, 'listen', 'identity').value], ['default', join(home, '.config', 'nattrav', 'alice')]);
    const fromXdg = await shown([]);
    assert.deepEqual([fromXdg.file.path, option(fromXdg, 'listen', 'identity').value], [xdgFile, join(xdg, 'ids', 'bob')]);
    assert.equal(option(fromXdg, 'connect', 'known-keys').value, join(home, 'known'));
    const fromEnv = await shown([], { NATTRAV_CONFIG: named });
    assert.deepEqual([fromEnv.file, option(fromEnv, 'connect', 'identity').value], [{ path: named, source: 'env', found: true }, join(other, 'named')]);
    const fromFlag = await shown(['--config', flagged], { NATTRAV_CONFIG: named });
    assert.deepEqual([fromFlag.file, option(fromFlag, 'connect', 'identity').value], [{ path: flagged, source: 'flag', found: true }, join(other, 'flagged')]);
  });

  test('each kind of bad configuration is a usage error (exit 2) naming the file or variable, the key and what was expected', async () => {
    const cases: Array<{ what: string; file?: string; args?: string[]; env?: Record<string, string>; error: RegExp }> = [
      { what: 'malformed JSON', file: '{"broker": }', error: /config\.json: not valid JSON: / },
      { what: 'not an object', file: '["broker"]', error: /config\.json: expected a JSON object of option values, like \{ "broker": "host:port" \}, got a list/ },
      { what: 'unknown key', file: '{"brokr": "x:1"}', error: /config\.json: brokr: unknown key \(no command has an option --brokr\); known keys: .*\bbroker\b/ },
      { what: 'one-shot option', file: '{"commands": {"connect": {"accept-new-key": true}}}', error: /commands\.connect\.accept-new-key: --accept-new-key is given on the command line only/ },
      { what: 'wrong type', file: '{"commands": {"connect": {"timeout": true}}}', error: /config\.json: commands\.connect\.timeout: expected a string or a number, got boolean true \(for --timeout <ms> of nattrav connect\)/ },
      { what: 'invalid value', file: '{"relay-max-bytes": "lots"}', error: /config\.json: relay-max-bytes: "lots" is invalid: expected a whole number \(for --relay-max-bytes <n> of nattrav broker\)/ },
      { what: 'unknown command section', file: '{"commands": {"conect": {}}}', error: /config\.json: commands\.conect: unknown command; commands with options: .*\bconnect\b/ },
      { what: 'a --config that does not exist', args: ['--config', join(root, 'none.json')], error: /config file .*none\.json \(named by --config\) does not exist/ },
      { what: 'a NATTRAV_CONFIG that does not exist', env: { NATTRAV_CONFIG: join(root, 'none.json') }, error: /config file .*none\.json \(named by NATTRAV_CONFIG\) does not exist/ },
      { what: 'a bad boolean variable', env: { NATTRAV_VERBOSE: 'maybe' }, error: /NATTRAV_VERBOSE: expected 1 or 0 \(true\/false, yes\/no, on\/off\), got "maybe" \(for -v, --verbose of nattrav connect\)/ },
      { what: 'a bad value variable', env: { NATTRAV_TIMEOUT: 'soon' }, error: /NATTRAV_TIMEOUT: "soon" is invalid: expected a positive whole number of milliseconds/ },
    ];
    for (const c of cases) {
      writeConfig(c.file);
      // Against a closed port: exit 2 rather than 4 also shows nothing was sent.
      const run = await nattrav(['connect', 'nattrav://x', '--broker', closed, ...(c.args ?? [])], c.env);
      assert.equal(run.code, 2, `${c.what}: ${run.stderr}`);
      assert.match(run.stderr, c.error, c.what);
      assert.match(run.stderr, /^nattrav: error: /, c.what);
      assert.equal(run.stdout, '', c.what);
    }
    writeConfig('{"timeout": 0}');
    const json = await nattrav(['--json', 'netcheck', '--broker', closed]);
    assert.equal(json.code, 2);
    const line = JSON.parse(json.stderr.trim()) as Record<string, unknown>;
    assert.deepEqual([line.event, line.code, line.exitCode], ['error', 'ERR_INVALID_ARGUMENT', 2]);
    assert.match(String(line.message), /config\.json: timeout: "0" is invalid/);
  });

  test('nattrav config: the human table, a command line to check, and its usage errors', async () => {
    writeConfig({ broker: 'b.example:3478', commands: { connect: { timeout: 2000 } } });
    const run = await nattrav(['config', 'connect', 'nattrav://x', '-v'], { NATTRAV_IDENTITY: '/ids/alice' });
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.split('\n');
    assert.equal(lines[0], `config file: ${xdgFile} (default location)`);
    assert.ok(lines.includes('nattrav connect'), run.stdout);
    assert.equal(lines.includes('nattrav broker'), false, 'only the command asked about');
    const row = (key: string): string | undefined => lines.find((line) => line.trimStart().startsWith(`--${key} `));
    assert.match(row('broker') ?? '', /^ {2}--broker +b\.example:3478 +file broker$/);
    assert.match(row('timeout') ?? '', /^ {2}--timeout +2000 +file commands\.connect\.timeout$/);
    assert.match(row('identity') ?? '', /^ {2}--identity +\/ids\/alice +env NATTRAV_IDENTITY$/);
    assert.match(row('verbose') ?? '', /^ {2}--verbose +true +flag$/);
    assert.match(row('known-keys') ?? '', /^ {2}--known-keys +\(not set\) +default$/);

    const unknownCommand = await nattrav(['config', 'conect']);
    assert.equal(unknownCommand.code, 2);
    assert.match(unknownCommand.stderr, /unknown command "conect"; commands: .*\bconnect\b/);
    const unknownFlag = await nattrav(['config', 'connect', '--timout', '5']);
    assert.equal(unknownFlag.code, 2);
    assert.match(unknownFlag.stderr, /nattrav connect has no option --timout/);
    const badFlag = await nattrav(['config', 'connect', '--timeout', 'soon']);
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /option '--timeout <ms>' argument 'soon' is invalid/);
  });
});
