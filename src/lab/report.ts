/**
 * A standalone HTML report of a {@link MatrixResult}: an SVG heatmap (rows: initiator NAT type,
 * columns: recipient NAT type, colour: path, red: failed), a legend, the minimum setup time the
 * protocol allows at the lab's delay, and the full table. Inline CSS, no external resources.
 */
import type { MatrixCell, MatrixResult } from './matrix.js';

/** Colour and text colour of each path; `failed` and unknown paths have their own. */
export const PATH_COLORS: Readonly<Record<string, { fill: string; text: string; label: string }>> = {
  direct: { fill: '#2e7d32', text: '#ffffff', label: 'direct (simultaneous open)' },
  lan: { fill: '#00897b', text: '#ffffff', label: 'lan (private endpoint)' },
  public: { fill: '#1e88e5', text: '#ffffff', label: 'public (no NAT in the way)' },
  reversal: { fill: '#5e35b1', text: '#ffffff', label: 'reversal (recipient connects)' },
  predicted: { fill: '#f9a825', text: '#1b1b1b', label: 'predicted (port prediction)' },
  birthday: { fill: '#ef6c00', text: '#ffffff', label: 'birthday (many ports)' },
  relay: { fill: '#757575', text: '#ffffff', label: 'relay (through the broker)' },
  failed: { fill: '#c62828', text: '#ffffff', label: 'failed' },
};
const otherColor = { fill: '#8d6e63', text: '#ffffff', label: 'other' };

const cellW = 118;
const cellH = 66;
const leftW = 170;
const topH = 110;

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function colorOf(cell: MatrixCell): { fill: string; text: string } {
  if (cell.outcome === 'failed') return PATH_COLORS.failed ?? otherColor;
  return PATH_COLORS[cell.path ?? ''] ?? otherColor;
}

function shortCode(code: string | undefined): string {
  return (code ?? 'ERR_UNEXPECTED').replace(/^ERR_/, '').replace(/_/g, ' ').toLowerCase();
}

function cellSvg(cell: MatrixCell, x: number, y: number, repeats: number): string {
  const { fill, text } = colorOf(cell);
  const cx = x + cellW / 2;
  const title = cell.outcome === 'connected'
    ? `${cell.initiator} -> ${cell.recipient}: ${cell.path ?? '?'} in ${cell.setupMs ?? '?'} ms (median), ${cell.successes}/${cell.attempts.length} connected, echo ${cell.echoOk ? 'ok' : 'FAILED'}`
    : `${cell.initiator} -> ${cell.recipient}: failed: ${cell.errorCode ?? ''} ${cell.message ?? ''}`;
  const main = cell.outcome === 'connected' ? cell.path ?? '?' : 'failed';
  const sub = cell.outcome === 'connected' ? `${cell.setupMs ?? '?'} ms` : shortCode(cell.errorCode);
  const foot = cell.outcome === 'connected'
    ? `${cell.successes}/${repeats}${cell.echoOk ? ' · echo ✓' : ' · echo ✗'}`
    : `0/${cell.attempts.length}`;
  return `<g><title>${escape(title)}</title>
  <rect x="${x + 2}" y="${y + 2}" width="${cellW - 4}" height="${cellH - 4}" rx="7" fill="${fill}"/>
  <text x="${cx}" y="${y + 24}" fill="${text}" class="main">${escape(main)}</text>
  <text x="${cx}" y="${y + 42}" fill="${text}" class="sub">${escape(sub)}</text>
  <text x="${cx}" y="${y + 57}" fill="${text}" class="foot">${escape(foot)}</text>
</g>`;
}

function heatmap(result: MatrixResult): string {
  const n = result.types.length;
  const width = leftW + n * cellW + 90; // room for the last rotated column label
  const height = topH + n * cellH + 10;
  const byPair = new Map(result.cells.map((c) => [`${c.initiator}|${c.recipient}`, c]));
  const parts: string[] = [];
  result.types.forEach((type, col) => {
    const x = leftW + col * cellW + cellW / 2;
    parts.push(`<text transform="translate(${x},${topH - 10}) rotate(-28)" class="col">${escape(type)}</text>`);
  });
  result.types.forEach((initiator, row) => {
    const y = topH + row * cellH;
    parts.push(`<text x="${leftW - 12}" y="${y + cellH / 2 + 5}" class="row">${escape(initiator)}</text>`);
    result.types.forEach((recipient, col) => {
      const cell = byPair.get(`${initiator}|${recipient}`);
      const x = leftW + col * cellW;
      parts.push(cell === undefined
        ? `<rect x="${x + 2}" y="${y + 2}" width="${cellW - 4}" height="${cellH - 4}" rx="7" fill="#eceff1"/>`
        : cellSvg(cell, x, y, result.repeats));
    });
  });
  parts.push(`<text x="${leftW - 12}" y="${topH - 14}" class="axis" text-anchor="end">initiator ↓ / recipient →</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="NAT matrix heatmap">
<style>
  text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  .main { font-size: 15px; font-weight: 700; text-anchor: middle; }
  .sub { font-size: 13px; text-anchor: middle; }
  .foot { font-size: 10.5px; text-anchor: middle; opacity: 0.85; }
  .row { font-size: 13.5px; font-weight: 600; text-anchor: end; fill: #263238; }
  .col { font-size: 13.5px; font-weight: 600; fill: #263238; }
  .axis { font-size: 11px; fill: #78909c; }
</style>
${parts.join('\n')}
</svg>`;
}

function legend(result: MatrixResult): string {
  const used = new Set(result.cells.map((c) => (c.outcome === 'failed' ? 'failed' : c.path ?? '')));
  return Object.entries(PATH_COLORS)
    .map(([key, { fill, label }]) => `<span class="chip${used.has(key) ? '' : ' unused'}"><i style="background:${fill}"></i>${escape(label)}</span>`)
    .join('');
}

function table(result: MatrixResult): string {
  const rows = result.cells.map((c) => {
    const { fill } = colorOf(c);
    return `<tr><td>${escape(c.initiator)}</td><td>${escape(c.recipient)}</td>
<td><i class="dot" style="background:${fill}"></i>${c.outcome === 'connected' ? escape(c.path ?? '?') : 'failed'}</td>
<td class="num">${c.setupMs ?? '–'}</td><td class="num">${c.successes}/${c.attempts.length}</td>
<td>${c.outcome === 'connected' ? (c.echoOk ? '✓' : '✗') : '–'}</td>
<td class="err">${c.errorCode === undefined ? '' : `<code>${escape(c.errorCode)}</code> ${escape(c.message ?? '')}`}</td></tr>`;
  });
  return `<table><thead><tr><th>initiator</th><th>recipient</th><th>path</th><th>setup ms (median)</th><th>connected</th><th>echo</th><th>last error</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table>`;
}

function minimum(result: MatrixResult): string {
  const m = result.minimum;
  const rows = m.steps.map((s) => `<tr><td>${escape(s.step)}</td><td class="num">${s.crossings} d</td><td class="num">${s.ms} ms</td></tr>`);
  return `<p>Each site link adds <b>d = ${m.delayMs} ms</b> one way (the broker's link none), so a peer–broker message costs d and a peer–peer message 2d.
The critical path of a direct connection, from the initiator's <code>connect()</code>:</p>
<table class="steps"><thead><tr><th>step</th><th>one-way crossings</th><th>at d = ${m.delayMs} ms</th></tr></thead>
<tbody>${rows.join('\n')}
<tr class="total"><td>both sockets established</td><td class="num">${m.establishedCrossings} d</td><td class="num">${m.establishedCrossings * m.delayMs} ms</td></tr>
<tr class="total"><td>usable (Hello done): the floor for <i>setup ms</i></td><td class="num">${m.totalCrossings} d</td><td class="num">${m.totalMs} ms</td></tr>
<tr><td>the same for a recipient without a standby exchange (ConnectionRequest, Join, Probe)</td><td class="num">${m.cold.totalCrossings} d</td><td class="num">${m.cold.totalMs} ms</td></tr></tbody></table>`;
}

/** Renders `result` as one self-contained HTML page. */
export function renderMatrixReport(result: MatrixResult): string {
  const connected = result.cells.filter((c) => c.outcome === 'connected').length;
  const setups = result.cells.flatMap((c) => (c.setupMs === undefined ? [] : [c.setupMs]));
  const fastest = setups.length > 0 ? Math.min(...setups) : undefined;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nattrav NAT matrix</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 32px auto; max-width: 1200px; color: #263238; background: #fafafa; padding: 0 24px; }
  h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 10px; }
  .meta { color: #607d8b; font-size: 14px; margin-bottom: 18px; }
  .cards { display: flex; gap: 14px; margin: 16px 0 22px; flex-wrap: wrap; }
  .card { background: #fff; border-radius: 10px; padding: 12px 18px; box-shadow: 0 1px 3px rgba(0,0,0,.12); min-width: 150px; }
  .card b { display: block; font-size: 24px; } .card span { color: #78909c; font-size: 13px; }
  .panel { background: #fff; border-radius: 12px; padding: 16px; box-shadow: 0 1px 3px rgba(0,0,0,.12); overflow-x: auto; }
  .legend { margin: 12px 0 0; display: flex; flex-wrap: wrap; gap: 8px 18px; font-size: 13px; }
  .chip i, .dot { display: inline-block; width: 14px; height: 14px; border-radius: 4px; margin-right: 6px; vertical-align: -2px; }
  .chip.unused { opacity: .4; }
  table { border-collapse: collapse; background: #fff; font-size: 13px; width: 100%; }
  th, td { padding: 6px 10px; border-bottom: 1px solid #eceff1; text-align: left; vertical-align: top; }
  th { background: #eceff1; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.err { color: #8e2424; max-width: 420px; } .steps { max-width: 760px; } tr.total td { font-weight: 700; }
  code { font-size: 12px; }
</style></head><body>
<h1>nattrav NAT matrix</h1>
<div class="meta">${escape(result.startedAt)} · one-way delay per site link ${result.delayMs} ms · ${result.repeats} connect${result.repeats === 1 ? '' : 's'} per cell · broker ${result.brokerAlternate ? 'with' : 'without'} RFC 5780 alternate address · run took ${(result.durationMs / 1000).toFixed(1)} s</div>
<div class="cards">
  <div class="card"><b>${connected} / ${result.cells.length}</b><span>pairs connected</span></div>
  <div class="card"><b>${fastest === undefined ? '–' : `${fastest} ms`}</b><span>fastest median setup</span></div>
  <div class="card"><b>${result.minimum.totalMs} ms</b><span>protocol floor at this delay (${result.minimum.totalCrossings} d)</span></div>
</div>
<div class="panel">${heatmap(result)}
<div class="legend">${legend(result)}</div></div>
<h2>Minimum setup time</h2>
${minimum(result)}
<h2>Every pair</h2>
${table(result)}
</body></html>
`;
}
