#!/usr/bin/env node
// Runs every built test file with node's test runner (Node 20's `node --test`
// does not expand globs). Order: unit, interop, lab. Extra args narrow by substring.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('../dist/test/', import.meta.url).pathname;
const groups = ['unit', 'interop', 'lab'];
const filters = process.argv.slice(2);
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.test.js')) files.push(path);
  }
}
for (const group of groups) {
  try { walk(join(root, group)); } catch { /* group absent */ }
}
const selected = filters.length === 0 ? files : files.filter((f) => filters.some((s) => f.includes(s)));
if (selected.length === 0) {
  console.error('no test files found under dist/test (did the build run?)');
  process.exit(1);
}
// Tests never write into the real home directory (default identities live in ~/.nattrav):
// every test process and the CLI processes it starts get a temporary HOME, removed afterwards.
// npm keeps using the real cache (the packaging test installs offline from it).
const home = mkdtempSync(join(tmpdir(), 'nattrav-test-home-'));
const env = { ...process.env, HOME: home, npm_config_cache: process.env.npm_config_cache ?? join(homedir(), '.npm') };
let result;
try {
  result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...selected], { stdio: 'inherit', env });
} finally {
  rmSync(home, { recursive: true, force: true });
}
process.exit(result.status ?? 1);
