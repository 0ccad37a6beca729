#!/usr/bin/env node
// Runs every built test file with node's test runner (Node 20's `node --test`
// does not expand globs). Order: unit, interop, lab. Extra args narrow by substring.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
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
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...selected], { stdio: 'inherit' });
process.exit(result.status ?? 1);
