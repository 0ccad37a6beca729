#!/usr/bin/env node
// After tsc (npm run build, and npm's `prepare` through build-package.mjs): bundles the
// compiled CLI (dist/src/cli/main.js and all it imports, packages included) into one
// CommonJS file next to it, compiles that once to write V8's code cache, and writes the
// manifest the `nattrav` bin checks before it uses them (src/cli/bundle.cts). Without
// esbuild (a devDependency) no bundle is made and the bin runs the ES modules: slower to
// start, the same otherwise. Issue 13 item 4; `npm run bench -- --only start` measures it.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
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

// The cache of the bundle as the bin compiles it. Its functions compile lazily at run time as usual.
let cache;
try {
  const script = compileBundle(bundlePath, readBundle(bundlePath));
  writeFileSync(join(cliDir, CACHE_FILE), script.createCachedData());
  cache = stampOf(cliDir, CACHE_FILE);
} catch (err) {
  console.error(`nattrav: no code cache for the CLI bundle (${err instanceof Error ? err.message : String(err)}); it is compiled at each start`);
}
const manifest = { version: 1, v8: process.versions.v8, bundle: stampOf(cliDir, BUNDLE_FILE), ...(cache === undefined ? {} : { cache }), inputs };
writeFileSync(join(cliDir, MANIFEST_FILE), `${JSON.stringify(manifest)}\n`);
