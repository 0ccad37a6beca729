/**
 * The `nattrav` bin (src/cli/nattrav.cts) runs the CLI's bundle from its code cache when the
 * build made them and they are current, and the ES modules otherwise (src/cli/bundle.cts;
 * issue 13 item 4). First the choice, on a stand-in bundle and entry in a temporary copy of
 * the bin: stale, missing, foreign-V8 and corrupt files never crash, they fall back. Then
 * the real build: the bundle answers as the ES modules do.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { BUNDLE_FILE, CACHE_FILE, MANIFEST_FILE, bundleIsCurrent, compileBundle, stampOf, type BundleManifest } from '../../src/cli/bundle.cjs';
import { CLI_PATH } from '../../src/lab/cli-process.js';

const CLI_DIR = fileURLToPath(new URL('../../src/cli/', import.meta.url));
/** A run of the bin here ends by itself (the connect below by its --timeout); past this the test fails. */
const RUN_LIMIT_MS = 30_000;

const dir = mkdtempSync(join(tmpdir(), 'nattrav-cli-bundle-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** What the bin said it started (NATTRAV_START_MODE=1). */
  readonly mode: string | undefined;
}

function runBin(bin: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const fullEnv = { ...process.env, HOME: dir, SOCKS_PROXY: '', ALL_PROXY: '', HTTPS_PROXY: '', HTTP_PROXY: '', NATTRAV_START_MODE: '1', ...env };
    execFile(process.execPath, [bin, ...args], { env: fullEnv, timeout: RUN_LIMIT_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      const mode = /^nattrav: start mode (\S+)$/m.exec(stderr)?.[1];
      resolve({ code, stdout, stderr: stderr.replace(/^nattrav: start mode \S+\n/m, ''), mode });
    });
  });
}

describe('the bin chooses between the bundle and the ES modules', () => {
  const app = join(dir, 'app');
  const bin = join(app, 'nattrav.cjs');
  const manifestPath = join(app, MANIFEST_FILE);

  /** A stand-in build: an entry and a bundle that say which ran, one input, the cache and the manifest as bundle-cli.mjs writes them. */
  function build(overrides: Partial<BundleManifest> = {}): BundleManifest {
    rmSync(app, { recursive: true, force: true });
    mkdirSync(app, { recursive: true });
    copyFileSync(join(CLI_DIR, 'nattrav.cjs'), bin);
    copyFileSync(join(CLI_DIR, 'bundle.cjs'), join(app, 'bundle.cjs'));
    writeFileSync(join(app, 'package.json'), '{ "type": "module" }\n');
    writeFileSync(join(app, 'main.js'), "process.stdout.write(`modules ${process.argv.slice(2).join(' ')}`);\n");
    writeFileSync(join(app, 'input.js'), 'export const input = 1;\n');
    const source = "#!/usr/bin/env node\nprocess.stdout.write(`bundle ${process.argv.slice(2).join(' ')} ${typeof require} ${__dirname}`);\n";
    writeFileSync(join(app, BUNDLE_FILE), source);
    writeFileSync(join(app, CACHE_FILE), compileBundle(join(app, BUNDLE_FILE), source).createCachedData());
    const manifest: BundleManifest = {
      version: 1,
      v8: process.versions.v8,
      bundle: stampOf(app, BUNDLE_FILE),
      cache: stampOf(app, CACHE_FILE),
      inputs: [stampOf(app, 'input.js')],
      ...overrides,
    };
    writeFileSync(manifestPath, JSON.stringify(manifest));
    return manifest;
  }

  test('a current bundle runs from its cache, with its own directory and argv', async () => {
    build();
    const run = await runBin(bin, ['connect', 'nattrav://x']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `bundle connect nattrav://x function ${app}`);
    assert.equal(run.mode, 'bundle-cached');
  });

  test('run through a symlink (npm link, node_modules/.bin), the bin still finds its bundle', async () => {
    build();
    const link = join(dir, 'linked-nattrav');
    rmSync(link, { force: true });
    symlinkSync(bin, link);
    const run = await runBin(link, ['--version']);
    assert.equal(run.stdout, `bundle --version function ${app}`);
    assert.equal(run.mode, 'bundle-cached');
  });

  test('a cache made by another V8, or one V8 rejects, is left out: the bundle is compiled', async () => {
    build({ v8: '0.0.0-another-node' });
    const foreign = await runBin(bin, ['a']);
    assert.equal(foreign.stdout, `bundle a function ${app}`);
    assert.equal(foreign.mode, 'bundle');

    const manifest = build();
    writeFileSync(join(app, CACHE_FILE), Buffer.alloc(manifest.cache?.size ?? 0, 0x5a));
    writeFileSync(manifestPath, JSON.stringify({ ...manifest, cache: stampOf(app, CACHE_FILE) }));
    const corrupt = await runBin(bin, ['b']);
    assert.equal(corrupt.code, 0, corrupt.stderr);
    assert.equal(corrupt.stdout, `bundle b function ${app}`);
    assert.equal(corrupt.mode, 'bundle');
  });

  test('an input rebuilt after the bundle (newer, or another size) makes the bin run the ES modules', async () => {
    build();
    const later = new Date(Date.now() + 60_000);
    utimesSync(join(app, 'input.js'), later, later);
    const newer = await runBin(bin, ['c']);
    assert.equal(newer.stdout, 'modules c');
    assert.equal(newer.mode, 'modules');

    const manifest = build();
    writeFileSync(join(app, 'input.js'), 'export const input = 22;\n');
    const past = new Date(manifest.bundle.mtimeMs - 60_000);
    utimesSync(join(app, 'input.js'), past, past);
    const resized = await runBin(bin, ['d']);
    assert.equal(resized.stdout, 'modules d');
  });

  test('no manifest, no bundle, a bundle not the one named, or NATTRAV_BUNDLE=0: the ES modules', async () => {
    build();
    rmSync(manifestPath);
    assert.equal((await runBin(bin, ['e'])).stdout, 'modules e');

    build();
    rmSync(join(app, BUNDLE_FILE));
    assert.equal((await runBin(bin, ['f'])).stdout, 'modules f');

    build();
    writeFileSync(join(app, BUNDLE_FILE), 'process.stdout.write("another bundle");\n');
    assert.equal((await runBin(bin, ['g'])).stdout, 'modules g');

    build();
    writeFileSync(manifestPath, '{ not json');
    assert.equal((await runBin(bin, ['h'])).stdout, 'modules h');

    build();
    const off = await runBin(bin, ['i'], { NATTRAV_BUNDLE: '0' });
    assert.equal(off.stdout, 'modules i');
    assert.equal(off.mode, 'modules');
  });

  test('an error thrown by the bundle surfaces with the bundle named in its stack', async () => {
    const manifest = build();
    const source = 'function failing() { throw new Error("bundle failed"); }\nfailing();\n';
    writeFileSync(join(app, BUNDLE_FILE), source);
    writeFileSync(manifestPath, JSON.stringify({ ...manifest, bundle: stampOf(app, BUNDLE_FILE), cache: undefined }));
    const run = await runBin(bin, []);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /Error: bundle failed\n\s+at failing \(.*nattrav-bundle\.cjs:1:\d+\)/);
  });
});

describe('the built bin', () => {
  /** Whether the build made a bundle (npm run build with esbuild), and whether it is still current (no plain tsc run since). */
  let built: boolean;
  let current: boolean;
  let broker: Server;
  let port: number;
  const accepted: Socket[] = [];

  before(async () => {
    try {
      const manifest = JSON.parse(readFileSync(join(CLI_DIR, MANIFEST_FILE), 'utf8')) as BundleManifest;
      built = true;
      current = bundleIsCurrent(CLI_DIR, manifest);
    } catch {
      built = false; // esbuild absent at build time: the bin runs the ES modules (asserted below)
      current = false;
    }
    // A broker that accepts the exchange and never answers: connect ends by its --timeout.
    broker = createServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', resolve));
    port = (broker.address() as { port: number }).port;
  });
  after(() => {
    for (const socket of accepted) socket.destroy();
    broker.close();
  });

  test('starts the bundle from its cache when the build made one and it is current, else the ES modules', async (t) => {
    if (built && !current) t.diagnostic('the bundle is older than a tsc run since: the ES modules are expected (npm run build bundles again)');
    const run = await runBin(CLI_PATH, ['--version']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.mode, current ? 'bundle-cached' : 'modules');
    // main.js reads the version from package.json next to its own compiled path: in the bundle too.
    const pkg = JSON.parse(readFileSync(join(CLI_DIR, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
    assert.equal(run.stdout.trim(), pkg.version);
  });

  test('the built bundle is all ASCII (the bin reads it as latin1)', (t) => {
    if (!built) {
      t.skip('no bundle was built (esbuild absent)');
      return;
    }
    const bytes = readFileSync(join(CLI_DIR, BUNDLE_FILE));
    const at = bytes.findIndex((byte) => byte > 0x7f);
    assert.equal(at, -1, `a byte over 0x7f at offset ${at}`);
  });

  test('the bundle and the ES modules answer alike: help, a bad option, a connect that times out', async () => {
    const cases: string[][] = [
      ['connect', '--help'],
      ['connect', 'nattrav://x', '--broker', `127.0.0.1:${port}`, '--timeout', 'soon'],
      ['connect', 'nattrav://bundle-alike', '--broker', `127.0.0.1:${port}`, '--timeout', '400', '--ipv4'],
    ];
    for (const args of cases) {
      const [bundled, modules] = await Promise.all([runBin(CLI_PATH, args), runBin(CLI_PATH, args, { NATTRAV_BUNDLE: '0' })]);
      assert.equal(modules.mode, 'modules');
      assert.equal(bundled.code, modules.code, `${args.join(' ')}: exit ${bundled.code} (bundle) vs ${modules.code}; ${bundled.stderr}`);
      assert.equal(bundled.stdout, modules.stdout, args.join(' '));
      assert.equal(bundled.stderr, modules.stderr, args.join(' '));
    }
  });
});
