/**
 * Small inline SVG charts for the status page: horizontal bars, a heatmap and a
 * histogram. Pure string building, no scripts; every label is escaped. Each chart
 * carries a <title> for screen readers and prints its numbers as text, so a
 * reader never has to guess a value from a bar's length.
 */

/** Escapes text for HTML/SVG content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** One bar of {@link barChart}. */
export interface Bar {
  readonly label: string;
  readonly value: number;
  /** A CSS colour (ours, never input). */
  readonly colour: string;
}

const LABEL_WIDTH = 80;
const BAR_AREA = 260;
const ROW_HEIGHT = 20;

/** Horizontal bars, one row per entry, the value printed after each bar. */
export function barChart(bars: readonly Bar[], title: string): string {
  const max = Math.max(1, ...bars.map((b) => b.value));
  const height = bars.length * ROW_HEIGHT + 4;
  const width = LABEL_WIDTH + BAR_AREA + 50;
  const rows = bars
    .map((bar, i) => {
      const y = i * ROW_HEIGHT + 2;
      const length = bar.value === 0 ? 0 : Math.max(2, Math.round((bar.value / max) * BAR_AREA));
      return (
        `<text x="${LABEL_WIDTH - 6}" y="${y + 14}" text-anchor="end">${escapeHtml(bar.label)}</text>` +
        `<rect x="${LABEL_WIDTH}" y="${y + 3}" width="${length}" height="${ROW_HEIGHT - 6}" fill="${escapeHtml(bar.colour)}"/>` +
        `<text x="${LABEL_WIDTH + length + 5}" y="${y + 14}">${bar.value}</text>`
      );
    })
    .join('');
  return svg(width, height, title, rows);
}

const CELL = 62;
const HEAT_LABEL = 78;

/** A grid of counts, `rows` down and `columns` across, darker for more. */
export function heatmap(rows: readonly string[], columns: readonly string[], cells: readonly (readonly number[])[], title: string): string {
  const max = Math.max(1, ...cells.flat());
  const width = HEAT_LABEL + columns.length * CELL + 4;
  const height = HEAT_LABEL - 50 + rows.length * CELL + 4;
  const top = HEAT_LABEL - 50;
  const head =
    `<text x="4" y="12" style="font-size:9px;fill:#555">rows: initiator</text><text x="4" y="24" style="font-size:9px;fill:#555">columns: recipient</text>` +
    columns.map((c, j) => `<text x="${HEAT_LABEL + j * CELL + CELL / 2}" y="${top - 8}" text-anchor="middle">${escapeHtml(c)}</text>`).join('');
  const body = rows
    .map((r, i) => {
      const y = top + i * CELL;
      const label = `<text x="${HEAT_LABEL - 6}" y="${y + CELL / 2 + 4}" text-anchor="end">${escapeHtml(r)}</text>`;
      const row = columns
        .map((_, j) => {
          const value = cells[i]?.[j] ?? 0;
          const shade = value === 0 ? 0 : 0.15 + 0.85 * (value / max);
          const x = HEAT_LABEL + j * CELL;
          const ink = shade > 0.55 ? '#fff' : '#1a1a1a';
          return (
            `<rect x="${x}" y="${y}" width="${CELL - 2}" height="${CELL - 2}" fill="rgba(33,113,181,${shade.toFixed(2)})" stroke="#ddd"/>` +
            `<text x="${x + CELL / 2 - 1}" y="${y + CELL / 2 + 4}" text-anchor="middle" style="fill:${ink}">${value}</text>`
          );
        })
        .join('');
      return label + row;
    })
    .join('');
  return svg(width, height, title, head + body);
}

const HIST_HEIGHT = 120;
const HIST_BAR = 46;

/** Vertical bars over labelled buckets, the count above each bar. */
export function histogramChart(labels: readonly string[], counts: readonly number[], title: string): string {
  const max = Math.max(1, ...counts);
  const width = labels.length * HIST_BAR + 10;
  const height = HIST_HEIGHT + 40;
  const bars = labels
    .map((label, i) => {
      const count = counts[i] ?? 0;
      const h = count === 0 ? 0 : Math.max(2, Math.round((count / max) * (HIST_HEIGHT - 18)));
      const x = 5 + i * HIST_BAR;
      return (
        `<rect x="${x + 3}" y="${HIST_HEIGHT - h}" width="${HIST_BAR - 6}" height="${h}" fill="#238b45"/>` +
        `<text x="${x + HIST_BAR / 2}" y="${HIST_HEIGHT - h - 4}" text-anchor="middle">${count}</text>` +
        `<text x="${x + HIST_BAR / 2}" y="${HIST_HEIGHT + 14}" text-anchor="middle" style="font-size:9px">${escapeHtml(label)}</text>`
      );
    })
    .join('');
  const axis = `<line x1="5" y1="${HIST_HEIGHT}" x2="${width - 5}" y2="${HIST_HEIGHT}" stroke="#999"/>`;
  return svg(width, height, title, axis + bars);
}

/** One line of {@link lineChart}. */
export interface Line {
  readonly label: string;
  readonly values: readonly number[];
  /** A CSS colour (ours, never input). */
  readonly colour: string;
}

const LINE_WIDTH = 360;
const LINE_HEIGHT = 120;
const LINE_LEFT = 40;

/**
 * Lines over time on one scale (0 to the largest value), the newest point on the right;
 * `xLabels` name the left and right ends, a legend prints each line's last value.
 */
export function lineChart(lines: readonly Line[], xLabels: readonly [string, string], title: string): string {
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  const points = Math.max(2, ...lines.map((l) => l.values.length));
  const plotWidth = LINE_WIDTH - LINE_LEFT - 6;
  const y = (v: number): number => 6 + (LINE_HEIGHT - 6) * (1 - v / max);
  const paths = lines
    .map((line) => {
      const offset = points - line.values.length;
      const coords = line.values.map((v, i) => `${(LINE_LEFT + ((offset + i) / (points - 1)) * plotWidth).toFixed(1)},${y(v).toFixed(1)}`);
      return coords.length === 0 ? '' : `<polyline points="${coords.join(' ')}" fill="none" stroke="${escapeHtml(line.colour)}" stroke-width="2"/>`;
    })
    .join('');
  const axes =
    `<line x1="${LINE_LEFT}" y1="${LINE_HEIGHT}" x2="${LINE_WIDTH - 6}" y2="${LINE_HEIGHT}" stroke="#999"/>` +
    `<text x="${LINE_LEFT - 4}" y="12" text-anchor="end">${max}</text><text x="${LINE_LEFT - 4}" y="${LINE_HEIGHT}" text-anchor="end">0</text>` +
    `<text x="${LINE_LEFT}" y="${LINE_HEIGHT + 14}">${escapeHtml(xLabels[0])}</text><text x="${LINE_WIDTH - 6}" y="${LINE_HEIGHT + 14}" text-anchor="end">${escapeHtml(xLabels[1])}</text>`;
  const legend = lines
    .map((line, i) => `<rect x="${LINE_LEFT + i * 150}" y="${LINE_HEIGHT + 24}" width="10" height="10" fill="${escapeHtml(line.colour)}"/><text x="${LINE_LEFT + 14 + i * 150}" y="${LINE_HEIGHT + 33}">${escapeHtml(line.label)}: ${line.values.at(-1) ?? 0}</text>`)
    .join('');
  return svg(LINE_WIDTH, LINE_HEIGHT + 40, title, axes + paths + legend);
}

function svg(width: number, height: number, title: string, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}"><title>${escapeHtml(title)}</title>${body}</svg>`;
}
