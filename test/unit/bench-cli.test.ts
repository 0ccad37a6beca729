/**
 * `npm run bench` (dist/bench/run.js): bad options are refused naming what was wrong, a quick
 * run of one fast benchmark writes results.json of the documented shape (to a temporary file,
 * never the repository's), and the report regenerates only the marked blocks of a Markdown file.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { quantile } from '../../bench/lab.js';
import { BenchUsageError, parseBenchArgs } from '../../bench/lib/args.js';
import { checkResults, figure, type Results } from '../../bench/lib/results.js';
import { renderReport } from '../../bench/report.js';
import { SUITE } from '../../bench/suite.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'nattrav-bench-test-'));

interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function bench(args: string[]): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(process.execPath, [RUN, ...args], { timeout: 120_000, env: { ...process.env, HOME: dir } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('npm run bench', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('an unknown benchmark name exits 2 naming it and the known ones, and runs nothing', async () => {
    const out = join(dir, 'unknown.json');
    const ran = await bench(['--only', 'stun,nope', '--out', out]);
    assert.equal(ran.code, 2);
    // Every benchmark of the suite, in its order (a new one must not need this test edited).
    assert.ok(ran.stderr.includes(`--only: unknown benchmark 'nope' (known: ${SUITE.map((b) => b.name).join(', ')})`), ran.stderr);
    assert.ok(SUITE.length >= 9, 'the suite names every benchmark');
    assert.equal(ran.stdout, '');
    assert.throws(() => readFileSync(out), /ENOENT/);
  });

  test('an unknown option and a missing value exit 2 with what was wrong', async () => {
    const bogus = await bench(['--fast']);
    assert.equal(bogus.code, 2);
    assert.match(bogus.stderr, /unknown option '--fast'/);
    const missing = await bench(['--only']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--only needs a value/);
  });

  test('--quick --only relay: a table on stdout and results.json with machine and rows', async () => {
    const out = join(dir, 'results.json');
    const markdown = join(dir, 'untouched.md');
    writeFileSync(markdown, 'x');
    const ran = await bench(['--quick', '--only', 'relay', '--out', out, '--markdown', markdown]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.match(ran.stdout, /^figure +value +target +ratio to target +verdict$/m);
    const results = checkResults(JSON.parse(readFileSync(out, 'utf8')));
    assert.equal(results.quick, true);
    assert.deepEqual(results.only, ['relay']);
    assert.equal(results.machine.node, process.version);
    assert.ok(results.machine.cores >= 1);
    assert.deepEqual(results.figures.map((f) => f.id), ['relay.direct', 'relay.relay']);
    for (const f of results.figures) assert.ok(typeof f.value === 'number' && f.value > 0, `${f.id} measured ${String(f.value)}`);
    const relay = results.figures[1];
    assert.equal(relay?.target?.value, 0.9);
    assert.ok(relay?.ratio !== undefined && relay.ratio !== null && Math.abs(relay.ratio - (relay.value as number) / (results.figures[0]?.value as number) / 0.9) < 1e-9);
    assert.equal(readFileSync(markdown, 'utf8'), 'x', 'a quick run leaves the Markdown alone');
  });

  test('options: --only repeated and comma-separated keeps the suite order; --out=FILE', () => {
    const args = parseBenchArgs(['--only', 'b', '--only=c,a', '--out=/x.json'], ['a', 'b', 'c'], { out: 'o', markdown: 'm' });
    assert.deepEqual(args.only, ['a', 'b', 'c']);
    assert.equal(args.out, '/x.json');
    assert.equal(args.markdown, 'm');
    assert.throws(() => parseBenchArgs(['--only', ''], ['a'], { out: 'o', markdown: 'm' }), BenchUsageError);
  });

  test('figures: ratios for at-least and at-most targets, and the verdict', () => {
    const atLeast = figure({ bench: 'x', id: 'x.a', label: 'a', value: 800, unit: '/s', compared: 0.45, target: { op: '>=', value: 0.9, text: '' } });
    assert.equal(atLeast.ratio, 0.5);
    assert.equal(atLeast.verdict, 'miss');
    const atMost = figure({ bench: 'x', id: 'x.b', label: 'b', value: 400, unit: 'B', target: { op: '<=', value: 500, text: '' } });
    assert.equal(atMost.ratio, 1.25);
    assert.equal(atMost.verdict, 'pass');
    assert.equal(figure({ bench: 'x', id: 'x.c', label: 'c', value: 1, unit: '' }).verdict, 'info');
  });

  test('quantile: nearest rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.equal(quantile(values, 0.5), 50);
    assert.equal(quantile(values, 0.99), 99);
    assert.equal(quantile([7], 0.99), 7);
  });

  test('report: only the marked blocks change; missing markers are an error', () => {
    const results: Results = {
      version: 1, startedAt: 'S', finishedAt: 'F', quick: false, only: [],
      machine: { cpu: 'Test CPU', cores: 2, node: 'v20.0.0', kernel: '6.1', memoryBytes: 2 ** 30 },
      figures: [figure({ bench: 'stun', id: 'stun.broker', label: 'Binding | answers', value: 1234, unit: '/s', compared: 0.45, target: { op: '>=', value: 0.9, text: '>= 0.9x' } })],
    };
    const markdown = 'intro\n<!-- machine:begin -->\nold\n<!-- machine:end -->\nmiddle\n<!-- figures:begin -->\nold\n<!-- figures:end -->\nend\n';
    const rendered = renderReport(markdown, results, new Map([['stun', 'STUN']]));
    assert.match(rendered, /^intro\n<!-- machine:begin -->\n- CPU: Test CPU, 2 cores/);
    assert.match(rendered, /\nmiddle\n/);
    assert.match(rendered, /\| Binding \\\| answers \| 1,234 \/s \(0\.45 x\) \| >= 0\.9x \| 0\.50 \| miss \|/);
    assert.match(rendered, /<!-- figures:end -->\nend\n$/);
    assert.doesNotMatch(rendered, /old/);
    assert.throws(() => renderReport('no markers', results, new Map()), /no <!-- machine:begin -->/);
  });
});
