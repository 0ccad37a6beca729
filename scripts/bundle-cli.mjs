#!/usr/bin/env node
// After tsc (npm run build, and npm's `prepare` through build-package.mjs): bundles the
// compiled CLI (dist/src/cli/main.js and all it imports, packages included) into one
// CommonJS file next to it, compiles that once to write V8's code cache, and writes the
// manifest the `nattrav` bin checks before it uses them (src/cli/bundle.cts). Without
// esbuild (a devDependency) no bundle is made and the bin runs the ES modules: slower to
// start, the same otherwise. Issue 13 item 4; `npm run bench -- --only start` measures it.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
/** How long the warm-up connect may take to dial its stand-in broker (a Node start on a busy machine). */
const WARM_UP_LIMIT_MS = 20_000;
const cliDir = join(root, 'dist', 'src', 'cli');
const srcDir = join(root, 'dist', 'src');
const { BUNDLE_FILE, CACHE_FILE, MANIFEST_FILE, compileBundle, readBundle, stampOf } = createRequire(import.meta.url)(join(cliDir, 'bundle.cjs'));

// A failed or skipped build leaves no bundle: the bin then runs the ES modules just built.
for (const name of [MANIFEST_FILE, BUNDLE_FILE, CACHE_FILE]) rmSync(join(cliDir, name), { force: true });

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('nattrav: esbuild is not installed, so no CLI bundle: `nattrav` runs from its ES modules (about 70 ms slower to start)');
  process.exit(0);
}

/**
 * `import.meta.url` has no meaning in a CommonJS bundle: each of our files gets its own
 * URL back (where it was compiled to), built from the bundle's __dirname at run time, so
 * paths relative to a module (main.js's package.json) resolve as they did.
 */
const ownFileUrls = {
  name: 'own-file-urls',
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, (args) => {
      if (!args.path.startsWith(srcDir + sep)) return undefined;
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const rel = JSON.stringify(relative(cliDir, args.path));
      const url = `require("node:url").pathToFileURL(require("node:path").join(__dirname, ${rel})).href`;
      return { contents: text.replaceAll('import.meta.url', url), loader: 'js', resolveDir: dirname(args.path) };
    });
  },
};

const bundlePath = join(cliDir, BUNDLE_FILE);
// esbuild's JavaScript without its native binary (an install with --omit=optional, a node_modules
// from another platform) throws here: that is a missing esbuild too, not a failed build.
const result = await esbuild.build({
  entryPoints: [join(cliDir, 'main.js')],
  outfile: bundlePath,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // The broker's packages, required from node_modules when the broker runs: none is on the way to
  // a peer's first packet, and @redis/client alone would double the bundle and its cache.
  external: ['@redis/client', 'pino', 'prom-client'],
  // No source map: Node 20 applies none to a vm.Script. A stack trace names the bundle's lines, each
  // module's code follows a `// dist/src/...` comment; NATTRAV_BUNDLE=0 gives the modules' own traces.
  metafile: true,
  logLevel: 'warning',
  plugins: [ownFileUrls],
}).catch((err) => {
  rmSync(bundlePath, { force: true });
  console.error(`nattrav: esbuild could not run (${err instanceof Error ? err.message.split('\n')[0] : String(err)}), so no CLI bundle: \`nattrav\` runs from its ES modules (about 70 ms slower to start)`);
  process.exit(0);
});
if (result.errors.length > 0) process.exit(1);
// A vm.Script run from a code cache has no working import(): every import() must be of a bundled module.
const imported = Object.values(result.metafile.outputs).flatMap((output) => output.imports.filter((i) => i.kind === 'dynamic-import' && i.external === true));
if (imported.length > 0) {
  rmSync(bundlePath, { force: true });
  console.error(`nattrav: the CLI bundle would import() ${imported.map((i) => i.path).join(', ')} at run time; bundle it or require() it (scripts/bundle-cli.mjs)`);
  process.exit(1);
}

// esbuild escapes non-ASCII characters in code (charset ascii) but keeps the comments it keeps as
// written: one `§` in a comment makes V8 hold the whole source as two bytes a character, slower
// to read and to compile. Escaped in comments too, on the same lines: the bin reads it as latin1.
const text = readFileSync(bundlePath, 'utf8');
writeFileSync(bundlePath, text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));

const inputs = Object.keys(result.metafile.inputs)
  .map((path) => (isAbsolute(path) ? path : resolve(process.cwd(), path)))
  .filter((path) => path.startsWith(srcDir + sep))
  .map((path) => stampOf(cliDir, relative(cliDir, path)));

// The cache of the bundle as the bin compiles it: first its top level alone, then (warmUp) with
// the functions `nattrav connect` runs before its first packet; functions not in it compile lazily as usual.
let cache;
try {
  const script = compileBundle(bundlePath, readBundle(bundlePath));
  writeFileSync(join(cliDir, CACHE_FILE), script.createCachedData());
  cache = stampOf(cliDir, CACHE_FILE);
} catch (err) {
  console.error(`nattrav: no code cache for the CLI bundle (${err instanceof Error ? err.message : String(err)}); it is compiled at each start`);
}
if (cache !== undefined) {
  try {
    await warmUp(join(cliDir, CACHE_FILE));
    cache = stampOf(cliDir, CACHE_FILE);
  } catch (err) {
    console.error(`nattrav: the CLI's code cache holds its top level only (${err instanceof Error ? err.message : String(err)})`);
  }
}
const manifest = { version: 1, v8: process.versions.v8, bundle: stampOf(cliDir, BUNDLE_FILE), ...(cache === undefined ? {} : { cache }), inputs };
writeFileSync(join(cliDir, MANIFEST_FILE), `${JSON.stringify(manifest)}\n`);

/**
 * Runs `nattrav connect` from the bundle (bundle-warm.cjs) against a stand-in broker on 127.0.0.1
 * that accepts and stays silent, with a temporary HOME and none of the caller's NATTRAV_* or proxy
 * variables: the default path. When the stand-in has its connection (the first packet), the child
 * writes the cache to `cacheFile` and exits. Nothing else is reached: the web fallback waits 1.5 s
 * for a TCP broker that does not refuse.
 */
async function warmUp(cacheFile) {
  const home = mkdtempSync(join(tmpdir(), 'nattrav-bundle-warm-'));
  const accepted = [];
  const server = createServer((socket) => accepted.push(socket));
  let child;
  let timer;
  try {
    await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^(NATTRAV_|SOCKS_PROXY$|ALL_PROXY$|HTTPS?_PROXY$|NO_PROXY$|NODE_OPTIONS$)/i.test(key)));
    const args = ['connect', 'nattrav://bundle-warm-up', '--broker', `127.0.0.1:${server.address().port}`];
    const partial = `${cacheFile}.warm`;
    child = spawn(process.execPath, [fileURLToPath(new URL('bundle-warm.cjs', import.meta.url)), cliDir, partial, ...args], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...env, HOME: home, XDG_CONFIG_HOME: join(home, '.config') },
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    const connected = new Promise((resolve) => server.once('connection', resolve));
    const first = await Promise.race([
      connected.then(() => 'connected'),
      exited.then(() => 'exited'),
      new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), WARM_UP_LIMIT_MS))),
    ]);
    if (first !== 'connected') throw new Error(`the warm-up connect ${first === 'exited' ? 'exited' : 'timed out'} before dialing: ${stderr.trim()}`);
    clearTimeout(timer);
    child.send('write');
    const written = await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), WARM_UP_LIMIT_MS)))]);
    if (written !== 0) throw new Error(`the warm-up did not write its cache${written === 'timeout' ? ` within ${WARM_UP_LIMIT_MS} ms` : ''}: ${stderr.trim()}`);
    renameSync(partial, cacheFile);
  } finally {
    clearTimeout(timer);
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const socket of accepted) socket.destroy();
    server.close();
    rmSync(home, { recursive: true, force: true });
    rmSync(`${cacheFile}.warm`, { force: true });
  }
}
