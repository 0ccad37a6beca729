/**
 * The broker's status page: one HTML document with inline CSS and inline SVG charts,
 * no scripts and no external assets (it works offline and under a CSP of
 * `default-src 'none'`). It reloads itself with a meta refresh. Every number carries a
 * `data-metric` attribute so tools (and the browser test) can read it. Everything
 * rendered goes through {@link escapeHtml}: URIs and failure reasons come from peers.
 */
import { barChart, escapeHtml, heatmap, histogramChart, lineChart, type Bar } from './svg-charts.js';
import { ATTEMPT_PATHS, NAT_MAPPING_LABELS, type BrokerStatus, type RecentAttempt } from './monitor.js';

/** Options of {@link renderStatusPage}. */
export interface StatusPageOptions {
  /** Seconds between reloads (meta refresh). @default 5 */
  readonly refreshSeconds?: number;
  /** Shown in the title, e.g. the broker's address. */
  readonly title?: string;
}

/** Colour of each path in the charts (readable on white, distinct in grey scale too). */
const PATH_COLOURS: Readonly<Record<string, string>> = {
  lan: '#6a51a3',
  public: '#2171b5',
  reversal: '#4292c6',
  direct: '#238b45',
  predicted: '#41ab5d',
  birthday: '#74c476',
  relay: '#d94801',
  portmap: '#08519c',
  'socks5-bind': '#9e9ac8',
  none: '#a50f15',
};

/** Escapes text for HTML content and double-quoted attributes (svg-charts.ts). */
export { escapeHtml };

/** 1234567 -> "1.2 MiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The success rate as a percentage, or "n/a" before any attempt finished. */
export function formatRate(rate: number | undefined): string {
  return rate === undefined ? 'n/a' : `${(rate * 100).toFixed(1)} %`;
}

/** The whole page for `status`. */
export function renderStatusPage(status: BrokerStatus, options: StatusPageOptions = {}): string {
  const refresh = options.refreshSeconds ?? 5;
  const title = `nattrav broker${options.title === undefined ? '' : ` ${options.title}`}`;
  const pathBars: Bar[] = ATTEMPT_PATHS.map((path) => ({ label: path, value: status.byPath[path].scheduled + status.byPath[path].failed, colour: PATH_COLOURS[path] ?? '#555' }));
  const cells = NAT_MAPPING_LABELS.map((initiator) =>
    NAT_MAPPING_LABELS.map((recipient) => status.natPairs.find((p) => p.initiator === initiator && p.recipient === recipient)?.attempts ?? 0),
  );
  const bucketLabels = [...status.setup.boundsSeconds.map((s) => `≤${formatSeconds(s)}`), `>${formatSeconds(status.setup.boundsSeconds.at(-1) ?? 0)}`];
  const meanMs = status.setup.count === 0 ? undefined : Math.round((status.setup.sumSeconds / status.setup.count) * 1000);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="${refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>${escapeHtml(title)}</h1>
<p class="state ${status.listening ? 'ok' : 'down'}" data-metric="listening">${status.listening ? 'listening' : 'not listening'}</p>
<p class="note">Updated ${escapeHtml(new Date(status.at).toISOString())}, every ${refresh} s; counting for ${status.uptimeSeconds} s. Machine-readable: <a href="/metrics">/metrics</a>, <a href="/status.json">/status.json</a>.</p></header>
<section class="tiles">
${tile('Registrations now', String(status.registrations), 'registrations', `${status.registrationsMade} made, ${status.refreshes} refreshes, ${status.withdrawals} withdrawn`)}
${tile('Connection attempts', String(status.attempts), 'attempts', `${status.retries} retries, ${status.pendingAttempts} pending`)}
${tile('Success rate', formatRate(status.successRate), 'success-rate', 'attempts the broker brought to a path, of those finished')}
${tile('Active relays', String(status.relay.active), 'relays-active', `started: ${status.relay.started}`)}
${tile('Relayed', formatBytes(status.relay.bytes), 'relay-bytes', `${status.relay.bytes} bytes, both directions`, status.relay.bytes)}
</section>
<section class="charts">
<figure><figcaption>Attempts by path</figcaption>${barChart(pathBars, 'attempts by path')}
${pathTable(status)}</figure>
<figure><figcaption>Attempts by NAT mapping (initiator × recipient)</figcaption>${heatmap(NAT_MAPPING_LABELS, NAT_MAPPING_LABELS, cells, 'attempts by NAT pair')}</figure>
<figure><figcaption>Setup time (${status.setup.count} scheduled${meanMs === undefined ? '' : `, mean ${meanMs} ms`})</figcaption>${histogramChart(bucketLabels, status.setup.counts, 'setup time histogram')}</figure>
${historyFigures(status)}
<figure><figcaption>Relays ended, by reason</figcaption>${barChart(Object.entries(status.relay.ended).map(([label, value]) => ({ label, value, colour: '#d94801' })), 'relays ended by reason')}</figure>
</section>
<section><h2>Recent attempts</h2>${recentTable(status.recent)}</section>
</body>
</html>
`;
}

/** Registrations and relays over the sampled window, and what each interval added (attempts, relayed bytes). */
function historyFigures(status: BrokerStatus): string {
  const samples = status.history;
  if (samples.length < 2) {
    return `<figure><figcaption>Over time</figcaption><p class="note">Sampled every ${status.sampleIntervalMs / 1000} s; the charts appear after two samples.</p></figure>`;
  }
  const span = `-${formatDuration(((samples.at(-1)?.at ?? 0) - (samples[0]?.at ?? 0)) / 1000)}`;
  const per = (pick: (s: (typeof samples)[number]) => number): number[] => samples.slice(1).map((s, i) => Math.max(0, pick(s) - pick(samples[i] as (typeof samples)[number])));
  const every = `${status.sampleIntervalMs / 1000} s`;
  return (
    `<figure><figcaption>Registrations and active relays</figcaption>${lineChart(
      [
        { label: 'registrations', values: samples.map((s) => s.registrations), colour: '#2171b5' },
        { label: 'active relays', values: samples.map((s) => s.activeRelays), colour: '#d94801' },
      ],
      [span, 'now'],
      'registrations and active relays over time',
    )}</figure>` +
    `<figure><figcaption>Attempts started, per ${every}</figcaption>${lineChart([{ label: 'attempts', values: per((s) => s.attempts), colour: '#238b45' }], [span, 'now'], 'attempts per interval')}</figure>` +
    `<figure><figcaption>Relayed KiB, per ${every}</figcaption>${lineChart(
      [{ label: 'relayed KiB', values: per((s) => s.relayBytes).map((b) => Math.round(b / 1024)), colour: '#d94801' }],
      [span, 'now'],
      'relayed bytes per interval',
    )}</figure>`
  );
}

/** 125 -> "2 min 5 s". */
function formatDuration(seconds: number): string {
  const whole = Math.round(seconds);
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min${whole % 60 === 0 ? '' : ` ${whole % 60} s`}`;
}

function tile(label: string, value: string, metric: string, detail: string, raw?: number): string {
  const rawAttr = raw === undefined ? '' : ` data-value="${raw}"`;
  return `<div class="tile"><div class="label">${escapeHtml(label)}</div><div class="value" data-metric="${escapeHtml(metric)}"${rawAttr}>${escapeHtml(value)}</div><div class="detail">${escapeHtml(detail)}</div></div>`;
}

function pathTable(status: BrokerStatus): string {
  const rows = ATTEMPT_PATHS.map((path) => {
    const { scheduled, failed } = status.byPath[path];
    return `<tr><th scope="row">${escapeHtml(path)}</th><td data-metric="path-scheduled" data-path="${escapeHtml(path)}">${scheduled}</td><td data-metric="path-failed" data-path="${escapeHtml(path)}">${failed}</td></tr>`;
  }).join('');
  return `<table class="paths"><thead><tr><th>path</th><th>scheduled</th><th>failed</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function recentTable(recent: readonly RecentAttempt[]): string {
  if (recent.length === 0) return '<p class="note">No attempt finished yet.</p>';
  const rows = recent
    .map((a) => {
      const what = a.result === 'scheduled' ? `${a.setupMs ?? '?'} ms, ${a.nat?.initiator ?? '?'} × ${a.nat?.recipient ?? '?'}` : (a.reason ?? '');
      return `<tr><td>${escapeHtml(new Date(a.at).toISOString().slice(11, 23))}</td><td>${escapeHtml(a.uri)}</td><td>${escapeHtml(a.path)}</td><td>${escapeHtml(a.result)}</td><td>${escapeHtml(what)}</td></tr>`;
    })
    .join('');
  return `<table class="recent"><thead><tr><th>time (UTC)</th><th>URI</th><th>path</th><th>result</th><th>setup / reason</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** 0.025 -> "25ms", 2.5 -> "2.5s". */
function formatSeconds(seconds: number): string {
  return seconds < 1 ? `${Math.round(seconds * 1000)}ms` : `${seconds}s`;
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1a1a1a;background:#fafafa}
h1{font-size:1.4rem;margin:0}h2{font-size:1.1rem}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:0 1rem}
.note{color:#555;font-size:.85rem;flex-basis:100%;margin:.3rem 0}
.state{font-weight:600;margin:0}.state.ok{color:#238b45}.state.down{color:#a50f15}
.tiles{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.tile{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem;min-width:11rem}
.tile .label{color:#555;font-size:.85rem}.tile .value{font-size:1.8rem;font-weight:600}.tile .detail{color:#666;font-size:.8rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:1rem}
figure{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0;padding:.6rem}
figcaption{font-weight:600;margin-bottom:.4rem}
svg{max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#1a1a1a}
table{border-collapse:collapse;font-size:.85rem;margin-top:.4rem}
th,td{border-bottom:1px solid #eee;padding:.15rem .6rem;text-align:left}
td{font-variant-numeric:tabular-nums}
.recent td:nth-child(2){font-family:ui-monospace,monospace;word-break:break-all}
`;
