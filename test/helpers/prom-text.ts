/**
 * A strict parser of the Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), for tests: it
 * throws on anything a Prometheus server would refuse or that the format forbids
 * (bad names, bad escapes, a TYPE after its samples, a family split in two,
 * duplicate series, histograms whose buckets are not cumulative or whose +Inf
 * bucket differs from _count).
 */

/** One sample line. */
export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** One metric family (# TYPE name ...) and its samples. */
export interface PromFamily {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help?: string;
  readonly samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const SUFFIXES: Readonly<Record<string, readonly string[]>> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count', ''], counter: [''], gauge: [''], untyped: [''] };

/** Parses `text`; throws an Error naming the line for anything not valid. */
export function parsePrometheusText(text: string): Map<string, PromFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, PromFamily>();
  const series = new Set<string>();
  const typeSeen = new Set<string>();
  let current: PromFamily | undefined;
  const lines = text.split('\n');
  lines.forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line.slice(0, 80))})`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const meta = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (meta === null) return; // a plain comment
      const [, kind, name, rest = ''] = meta as unknown as [string, string, string, string | undefined];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name`);
      let family = families.get(name);
      if (family !== undefined && family !== current) throw new Error(`${where}: ${name} appears in two places`);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type ${rest}`);
        if (family !== undefined && (family.samples.length > 0 || family.type !== 'untyped' || typeSeen.has(name))) throw new Error(`${where}: TYPE after samples or twice`);
        family = { name, type: rest as PromFamily['type'], ...(family?.help === undefined ? {} : { help: family.help }), samples: [] };
        typeSeen.add(name);
      } else {
        if (family?.help !== undefined) throw new Error(`${where}: HELP twice`);
        family = family ?? { name, type: 'untyped', samples: [] };
        family.help = unescape(rest, where);
      }
      families.set(name, family);
      current = family;
      return;
    }
    const sample = parseSample(line, where);
    const family = familyOf(sample.name, current, families);
    if (family === undefined) throw new Error(`${where}: sample of ${sample.name} outside its family`);
    current = family;
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (series.has(key)) throw new Error(`${where}: duplicate series`);
    series.add(key);
    family.samples.push(sample);
  });
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

/** The family `name` belongs to: the current one, by the suffixes its type allows. */
function familyOf(name: string, current: PromFamily | undefined, families: Map<string, PromFamily>): PromFamily | undefined {
  if (current === undefined || (current.samples.length > 0 && !belongs(name, current))) {
    // An untyped sample without metadata starts its own family.
    if (families.has(name)) return undefined;
    const family: PromFamily = { name, type: 'untyped', samples: [] };
    families.set(name, family);
    return family;
  }
  return belongs(name, current) ? current : undefined;
}

function belongs(name: string, current: PromFamily): boolean {
  return (SUFFIXES[current.type] ?? ['']).some((suffix) => name === `${current.name}${suffix}`);
}

function parseSample(line: string, where: string): PromSample {
  const head = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (head === null) throw new Error(`${where}: bad metric name`);
  const name = head[1] as string;
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    rest = rest.slice(1);
    while (!rest.startsWith('}')) {
      const label = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(rest);
      if (label === null) throw new Error(`${where}: bad label`);
      const labelName = label[1] as string;
      if (!LABEL_NAME.test(labelName) || labelName.startsWith('__')) throw new Error(`${where}: bad label name ${labelName}`);
      if (labelName in labels) throw new Error(`${where}: label ${labelName} twice`);
      rest = rest.slice(label[0].length);
      let value = '';
      for (;;) {
        const c = rest[0];
        if (c === undefined) throw new Error(`${where}: unterminated label value`);
        rest = rest.slice(1);
        if (c === '"') break;
        if (c === '\\') {
          const e = rest[0];
          rest = rest.slice(1);
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new Error(`${where}: bad escape \\${e ?? ''}`);
        } else value += c;
      }
      labels[labelName] = value;
      if (rest.startsWith(',')) rest = rest.slice(1);
      else if (!rest.startsWith('}')) throw new Error(`${where}: expected , or } after a label`);
    }
    rest = rest.slice(1);
  }
  const parts = /^ ([^ ]+)(?: (-?\d+))?$/.exec(rest);
  if (parts === null) throw new Error(`${where}: expected " value [timestamp]"`);
  return { name, labels, value: parseValue(parts[1] as string, where) };
}

function parseValue(text: string, where: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value ${text}`);
  return Number(text);
}

/** HELP text escapes: only \\ and \n. */
function unescape(text: string, where: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new Error(`${where}: bad escape \\${c}`);
  });
}

/** Buckets per label set: `le` parses, counts never fall, +Inf exists and equals _count. */
function checkHistogram(family: PromFamily): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const group = groups.get(key) ?? { buckets: [] };
    groups.set(key, group);
    if (sample.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`${family.name}: a bucket without le`);
      group.buckets.push([parseValue(le, family.name), sample.value]);
    } else if (sample.name.endsWith('_count')) group.count = sample.value;
  }
  for (const [key, group] of groups) {
    const sorted = [...group.buckets].sort((a, b) => a[0] - b[0]);
    sorted.forEach(([, count], i) => {
      if (i > 0 && count < (sorted[i - 1] as [number, number])[1]) throw new Error(`${family.name} ${key}: buckets not cumulative`);
    });
    const inf = sorted.at(-1);
    if (inf === undefined || inf[0] !== Infinity) throw new Error(`${family.name} ${key}: no +Inf bucket`);
    if (group.count !== inf[1]) throw new Error(`${family.name} ${key}: _count ${String(group.count)} differs from the +Inf bucket ${inf[1]}`);
  }
}

/** The value of the one sample of `name` with exactly `labels` (throws when there is none). */
export function sampleValue(families: Map<string, PromFamily>, name: string, labels: Readonly<Record<string, string>> = {}): number {
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name !== name) continue;
      const keys = Object.keys(sample.labels);
      if (keys.length === Object.keys(labels).length && keys.every((k) => sample.labels[k] === labels[k])) return sample.value;
    }
  }
  throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
}
