#!/usr/bin/env node
// npm's `prepare` (run by npm ci, npm pack, and installs from a git URL or a directory):
// compiles src/ only (tsconfig.build.json) into dist/src, bundles the CLI (bundle-cli.mjs)
// and makes the package's bins executable, so the packed tarball's `nattrav` runs directly (npm pack keeps file modes).
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const require = createRequire(root);

let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc');
} catch {
  console.error('nattrav: building needs the devDependencies (typescript); install without --omit=dev');
  process.exit(1);
}
const build = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
// The CLI's bundle and code cache, for a fast start (none without esbuild: the bin then runs the ES modules).
const bundle = spawnSync(process.execPath, [fileURLToPath(new URL('bundle-cli.mjs', import.meta.url))], { cwd: root, stdio: 'inherit' });
if (bundle.status !== 0) process.exit(bundle.status ?? 1);

const manifest = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
for (const bin of Object.values(manifest.bin ?? {})) chmodSync(new URL(bin, root), 0o755);
