/**
 * The NAT matrix runner and its report, on a few types. Which pairs connect is not asserted
 * (the strategies are still changing): only that every cell is recorded completely and
 * consistently, and that the report renders.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
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
  assert.equal(m.establishedCrossings, m.totalCrossings - 4);
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
