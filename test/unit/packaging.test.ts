/**
 * Packaging, as another project sees it. A copy of the checkout's git-tracked and
 * untracked-but-not-ignored files (no dist/, so nothing prebuilt) is packed with
 * `npm pack`, whose `prepare` builds it; the tarball must hold the built package and
 * no tests. Fresh projects then install the tarball, the checkout's directory
 * (`--install-links`, unbuilt) and a git URL of it, and import the user API from
 * `nattrav`, the lab from `nattrav/lab` and the codec from `nattrav/wire`; the main
 * entry must not carry the lab or the codec, `npx nattrav --help` must run, and the
 * declarations must type-check for a NodeNext consumer.
 *
 * No network: every npm call runs with --offline against the default npm cache that
 * `npm ci` filled. npm 11 resolves a version range from the full registry document,
 * which `npm ci` does not cache, so each fresh project starts with a lockfile that pins
 * the runtime dependencies to the versions in our package-lock.json; a dependency
 * missing from the cache fails the test with a message saying so.
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

/** The checkout this test was built from: dist/test/unit/ -> ../../../ */
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** Per child process; a pack builds with tsc and a git install builds again after installing the devDependencies. */
const CHILD_TIMEOUT_MS = 120_000;

const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  bin: Record<string, string>;
};
const BIN_PATH = manifest.bin.nattrav;

/** What a parent `npm test` / `npm exec` exports about itself and must not steer our npm calls (its cache and registry settings stay). */
const PARENT_NPM_ENV =
  /^(npm_(lifecycle|package)_.*|npm_command|INIT_CWD|npm_config_(call|package|local_prefix|global|location|json|dry_run|workspaces?|include_workspace_root))$/i;

/** Our environment without the parent npm's command settings, and npm made quiet and offline. */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!PARENT_NPM_ENV.test(key)) env[key] = value;
  }
  return {
    ...env,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    npm_config_offline: 'true',
  };
}

function run(command: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { cwd, env: npmEnv(), encoding: 'utf8', timeout: CHILD_TIMEOUT_MS });
  if (result.error !== undefined) assert.fail(`${command} ${args.join(' ')} in ${cwd}: ${result.error.message}`);
  return result;
}

function describeRun(what: string, result: SpawnSyncReturns<string>): string {
  return `${what} exited ${result.status ?? result.signal}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

/** Runs an npm install; a dependency that is not in the cache gets its own message, since we never fetch it. */
function npmInstall(cwd: string, args: string[]): void {
  const result = run('npm', ['install', '--offline', '--no-audit', '--no-fund', ...args], cwd);
  if (result.status !== 0 && /ENOTCACHED/.test(result.stderr)) {
    assert.fail(`a dependency is not in the npm cache and this test does not reach the network; run \`npm ci\` in ${REPO_ROOT} first\n${result.stderr}`);
  }
  assert.equal(result.status, 0, describeRun(`npm install ${args.join(' ')}`, result));
}

/** A fresh ESM project whose lockfile pins our runtime dependencies (see the file comment). */
function freshProject(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const name = `consumer-${dir.split('/').at(-1)}`;
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }, null, 2));
  const ours = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  const packages: Record<string, unknown> = { '': { name, version: '1.0.0' } };
  for (const [path, entry] of Object.entries(ours.packages)) {
    if (path.startsWith('node_modules/') && entry.dev !== true) packages[path] = entry;
  }
  writeFileSync(join(dir, 'package-lock.json'), JSON.stringify({ name, version: '1.0.0', lockfileVersion: 3, requires: true, packages }, null, 2));
  return dir;
}

/** Copies the files git would hand a fresh clone (plus uncommitted work), with their modes. */
function copyCheckout(to: string): void {
  const listed = run('git', ['ls-files', '-co', '--exclude-standard', '-z'], REPO_ROOT);
  assert.equal(listed.status, 0, describeRun('git ls-files (this test needs a git checkout)', listed));
  for (const path of listed.stdout.split('\0').filter((p) => p !== '')) {
    const from = join(REPO_ROOT, path);
    if (!existsSync(from) || !statSync(from).isFile()) continue; // deleted in the work tree, or a submodule
    mkdirSync(dirname(join(to, path)), { recursive: true });
    copyFileSync(from, join(to, path));
    chmodSync(join(to, path), statSync(from).mode);
  }
}

/** What the probe below prints. */
interface ProbeResult {
  types: Record<string, string>;
  mainKeys: string[];
  labKeys: string[];
  wireKeys: string[];
  shared: string[];
  deepImport: string;
}

/** Imports every entry the way a user would: static named imports fail at link time if one is missing. */
const PROBE = `
import { connect, createServer, createBroker, discoverNat, createCa, issueCertificate, loadIdentity, NattravError, isNattravError } from 'nattrav';
import { runMatrix, renderMatrixReport, NAT_TYPES, runDemo, Lab } from 'nattrav/lab';
import { StunMessage, encodeMessage, decodeMessage } from 'nattrav/wire';
import * as main from 'nattrav';
import * as lab from 'nattrav/lab';
import * as wire from 'nattrav/wire';
const functions = { connect, createServer, createBroker, discoverNat, createCa, issueCertificate, loadIdentity, NattravError, isNattravError,
  runMatrix, renderMatrixReport, runDemo, Lab, StunMessage, encodeMessage, decodeMessage };
const types = Object.fromEntries(Object.entries(functions).map(([k, v]) => [k, typeof v]));
types.NAT_TYPES = Array.isArray(NAT_TYPES) ? 'array' : typeof NAT_TYPES;
// A function or object of the lab or the codec that the main entry also exports (same value, any name).
const mainValues = new Set(Object.values(main));
const shared = [...Object.entries(lab), ...Object.entries(wire)]
  .filter(([, v]) => (typeof v === 'function' || (typeof v === 'object' && v !== null)) && mainValues.has(v))
  .map(([k]) => k);
let deepImport = 'allowed';
try { await import('nattrav/dist/src/wire/index.js'); } catch (error) { deepImport = error.code; }
console.log(JSON.stringify({ types, mainKeys: Object.keys(main), labKeys: Object.keys(lab), wireKeys: Object.keys(wire), shared, deepImport }));
`;

/** Type-checks a NodeNext consumer against the installed declarations, @ts-expect-error included. */
const TYPE_CHECK = `
import { connect, createServer, createBroker, type ConnectOptions, type NattravSocket } from 'nattrav';
import { runMatrix, NAT_TYPES, type MatrixCell } from 'nattrav/lab';
import { StunMessage, decodeMessage } from 'nattrav/wire';
// @ts-expect-error the lab is not part of the main entry
import { runMatrix as notInMain } from 'nattrav';
// @ts-expect-error nor is the codec
import { StunMessage as alsoNotInMain } from 'nattrav';
const options: ConnectOptions = { broker: '127.0.0.1:3478', uri: 'nattrav://alice' };
const start: (o: ConnectOptions) => Promise<NattravSocket> = connect;
const cells: MatrixCell[] = [];
export const used = [options, start, createServer, createBroker, runMatrix, NAT_TYPES, cells, StunMessage, decodeMessage, notInMain, alsoNotInMain];
`;

function probe(project: string): ProbeResult {
  writeFileSync(join(project, 'probe.mjs'), PROBE);
  const result = run(process.execPath, ['probe.mjs'], project);
  assert.equal(result.status, 0, describeRun('importing nattrav, nattrav/lab and nattrav/wire', result));
  return JSON.parse(result.stdout) as ProbeResult;
}

function assertEntries(result: ProbeResult): void {
  for (const [name, type] of Object.entries(result.types)) {
    assert.equal(type, name === 'NAT_TYPES' ? 'array' : 'function', `${name} is ${type}`);
  }
  for (const internal of ['wire', 'runMatrix', 'renderMatrixReport', 'NAT_TYPES', 'runDemo', 'Lab', 'StunMessage', 'encodeMessage', 'decodeMessage', 'AttrType']) {
    assert.ok(!result.mainKeys.includes(internal), `the main entry exports ${internal}`);
  }
  assert.deepEqual(result.shared, [], 'the main entry re-exports lab or codec values');
  assert.ok(result.labKeys.includes('runMatrix') && result.wireKeys.includes('StunMessage'));
  assert.equal(result.deepImport, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'files outside the exports map are importable');
}

describe('packaging', () => {
  let tmp = '';
  let checkout = '';
  let tarball = '';

  before(() => {
    assert.ok(existsSync(join(REPO_ROOT, 'node_modules', 'typescript')), `no node_modules in ${REPO_ROOT}: run \`npm ci\` first`);
    tmp = mkdtempSync(join(tmpdir(), 'nattrav-packaging-'));
    checkout = join(tmp, 'checkout');
    copyCheckout(checkout);
    assert.ok(!existsSync(join(checkout, 'dist')), 'the copied checkout must start unbuilt');
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(checkout, 'node_modules'), 'dir');
  });

  after(() => {
    if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
  });

  it('npm pack builds a fresh checkout and ships the built package without tests', () => {
    const result = run('npm', ['pack', '--json', '--offline', '--pack-destination', tmp], checkout);
    assert.equal(result.status, 0, describeRun('npm pack', result));
    const [packed] = JSON.parse(result.stdout) as Array<{ filename: string; files: Array<{ path: string; mode: number }> }>;
    assert.ok(packed !== undefined);
    tarball = join(tmp, packed.filename);
    assert.ok(existsSync(tarball), `${tarball} was not written`);

    const paths = packed.files.map((f) => f.path);
    for (const expected of [
      'package.json',
      'README.md',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/lab/index.js',
      'dist/src/lab/index.d.ts',
      'dist/src/wire/index.js',
      'dist/src/wire/index.d.ts',
      BIN_PATH,
    ]) {
      assert.ok(paths.includes(expected), `the tarball lacks ${expected}`);
    }
    const stray = paths.filter((p) => !p.startsWith('dist/src/') && !['package.json', 'README.md'].includes(p) && !/^LICEN[CS]E/.test(p));
    assert.deepEqual(stray, [], 'files outside dist/src in the tarball');
    const tests = paths.filter((p) => /(^|\/)test\/|\.test\.[cm]?[jt]s/.test(p) || (p.endsWith('.ts') && !p.endsWith('.d.ts')));
    assert.deepEqual(tests, [], 'tests or TypeScript sources in the tarball');
    const bin = packed.files.find((f) => f.path === BIN_PATH);
    assert.ok(bin !== undefined && (bin.mode & 0o111) === 0o111, `${BIN_PATH} is not executable in the tarball (mode ${bin?.mode.toString(8)})`);
  });

  it('a fresh project installs the tarball, imports each entry, type-checks and runs npx nattrav', () => {
    assert.ok(tarball !== '', 'npm pack did not succeed');
    const project = freshProject(join(tmp, 'from-tarball'));
    npmInstall(project, [tarball]);
    assertEntries(probe(project));

    const bin = readFileSync(join(project, 'node_modules', 'nattrav', BIN_PATH), 'utf8');
    assert.match(bin.split('\n')[0] ?? '', /^#!\/usr\/bin\/env node$/);
    const help = run('npx', ['--offline', 'nattrav', '--help'], project);
    assert.equal(help.status, 0, describeRun('npx nattrav --help', help));
    assert.match(help.stdout, /Usage: nattrav/);

    writeFileSync(join(project, 'check.ts'), TYPE_CHECK);
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
          typeRoots: [join(REPO_ROOT, 'node_modules', '@types')],
        },
        files: ['check.ts'],
      }),
    );
    const tsc = run(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], project);
    assert.equal(tsc.status, 0, describeRun('tsc on a consumer of the installed declarations', tsc));
  });

  it('a fresh project installs the unbuilt checkout by path (--install-links)', () => {
    rmSync(join(checkout, 'dist'), { recursive: true, force: true });
    const project = freshProject(join(tmp, 'from-path'));
    npmInstall(project, ['--install-links', checkout]);
    assertEntries(probe(project));
    const help = run(join(project, 'node_modules', '.bin', 'nattrav'), ['--help'], project);
    assert.equal(help.status, 0, describeRun('node_modules/.bin/nattrav --help', help));
  });

  it('a fresh project installs from a git URL', () => {
    // A repository of its own, so the git URL holds exactly the files a clone of ours would.
    const repo = join(tmp, 'git-repo');
    copyCheckout(repo);
    const git = (...args: string[]): void => {
      const result = run('git', ['-c', 'user.name=packaging test', '-c', 'user.email=test@nattrav.invalid', ...args], repo);
      assert.equal(result.status, 0, describeRun(`git ${args.join(' ')}`, result));
    };
    git('init', '--quiet');
    git('add', '--all');
    git('commit', '--quiet', '--no-gpg-sign', '-m', 'snapshot');
    const project = freshProject(join(tmp, 'from-git'));
    npmInstall(project, [`git+file://${repo}`]);
    assertEntries(probe(project));
  });
});
