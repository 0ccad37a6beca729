/**
 * The NAT matrix runner and its report, on a few types. Which pairs connect is not asserted
 * (the strategies are still changing): only that every cell is recorded completely and
 * consistently, and that the report renders.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { promisify } from 'node:util';
import { CLI_PATH } from '../../src/lab/cli-process.js';
import { minimumSetup, renderMatrixReport, runMatrix, type MatrixCell, type NatType } from '../../src/lab/index.js';
import { requireLab } from './helpers.js';

const paths = new Set(['lan', 'public', 'reversal', 'direct', 'predicted', 'birthday', 'relay']);

function checkCell(cell: MatrixCell): void {
  const label = JSON.stringify(cell);
  assert.equal(cell.attempts.length > 0, true, label);
  assert.equal(cell.successes, cell.attempts.filter((a) => a.outcome === 'connected').length, label);
  for (const attempt of cell.attempts) {
    assert.ok(Number.isFinite(attempt.wallMs), label);
    if (attempt.outcome === 'connected') {
      assert.ok(attempt.path !== undefined && paths.has(attempt.path), `unknown path: ${label}`);
      assert.ok(typeof attempt.setupMs === 'number' && attempt.setupMs >= 0, label);
    } else {
      assert.match(attempt.errorCode ?? '', /^ERR_/, label);
      assert.ok((attempt.message ?? '') !== '', label);
    }
  }
  if (cell.outcome === 'connected') {
    assert.ok(cell.path !== undefined && typeof cell.setupMs === 'number', label);
    assert.equal(cell.echoOk, true, `a connection did not echo: ${label}`);
  } else {
    assert.equal(cell.successes, 0, label);
    assert.match(cell.errorCode ?? '', /^ERR_/, label);
  }
}

test('minimumSetup counts the critical path in one-way delays', () => {
  const m = minimumSetup(10);
  assert.equal(m.totalCrossings, m.steps.reduce((sum, s) => sum + s.crossings, 0));
  assert.equal(m.totalMs, m.totalCrossings * 10);
  assert.equal(m.establishedCrossings, m.totalCrossings - 2, 'the two proofs cross after the connection is up');
  assert.equal(minimumSetup(0).totalMs, 0);
});

test('runMatrix records every ordered pair and the report renders', { timeout: 180_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const types: NatType[] = ['none', 'full-cone', 'port-restricted'];
  const seen: MatrixCell[] = [];
  const result = await runMatrix({ types, delayMs: 5, repeats: 2, connectTimeoutMs: 15_000, onCell: (cell) => seen.push(cell) });
  assert.deepEqual(result.types, types);
  assert.equal(result.delayMs, 5);
  assert.equal(result.cells.length, types.length ** 2);
  assert.deepEqual(seen, result.cells, 'onCell saw every cell, in order');
  assert.deepEqual(
    result.cells.map((c) => `${c.initiator}>${c.recipient}`),
    types.flatMap((i) => types.map((r) => `${i}>${r}`)),
  );
  for (const cell of result.cells) {
    checkCell(cell);
    t.diagnostic(`${cell.initiator} -> ${cell.recipient}: ${cell.outcome} ${cell.path ?? cell.errorCode ?? ''} ${cell.setupMs ?? ''} ms`);
  }
  assert.equal(result.minimum.totalMs, result.minimum.totalCrossings * 5);
  // Connections between two NATed sites cross four delayed link traversals at least once.
  for (const cell of result.cells.filter((c) => c.outcome === 'connected' && c.initiator !== 'none' && c.recipient !== 'none')) {
    assert.ok((cell.setupMs ?? 0) >= 4 * result.delayMs, JSON.stringify(cell));
  }

  const html = renderMatrixReport(result);
  assert.match(html, /^<!doctype html>/);
  assert.match(html, /<svg[^>]*>[\s\S]*<\/svg>/);
  assert.doesNotMatch(html, /(src|href)="https?:/, 'no external resources');
  for (const type of types) assert.ok(html.includes(`>${type}</text>`), `heatmap labels ${type}`);
  assert.equal((html.match(/<rect /g) ?? []).length, types.length ** 2);
});

test('nattrav lab matrix: cells and summary on stdout (JSON lines with --json), the start on stderr', { timeout: 120_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const run = promisify(execFile);
  // The matrix's listeners keep their keys under HOME.
  const home = await mkdtemp(join(tmpdir(), 'nattrav-matrix-cli-'));
  const options = { env: { ...process.env, HOME: home }, timeout: 60_000 };
  try {
    const json = await run(process.execPath, [CLI_PATH, 'lab', 'matrix', '--types', 'none', '--json'], options);
    const results = json.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(results.map((r) => r.event), ['cell', 'matrix'], json.stdout);
    assert.deepEqual([results[0].initiator, results[0].recipient], ['none', 'none']);
    assert.equal(results[1].total, 1);
    const progress = json.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { event: string }).event);
    assert.deepEqual(progress, ['matrix-start'], json.stderr);

    const human = await run(process.execPath, [CLI_PATH, 'lab', 'matrix', '--types', 'none'], options);
    assert.match(human.stdout, /^none -> none +\S+/);
    assert.match(human.stdout, /\n\d\/1 pairs connected in /);
    assert.match(human.stderr, /^NAT matrix: 1x1 pairs/);
    assert.doesNotMatch(human.stderr, /none -> none|pairs connected/);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});
