/**
 * The documentation against the code it describes:
 * - every ```mermaid block of docs/architecture.md (and any other doc) is a
 *   sequenceDiagram in the subset of Mermaid we use, with declared participants,
 *   valid arrows and notes, balanced blocks, no `;` or `#` inside a message, and
 *   no more than {@link MAX_ARROWS} arrows;
 * - every repository path the docs mention (`src/...`, `test/...`, relative links)
 *   exists;
 * - every `nattrav ...` command line of docs/deploy.md, of the systemd unit in
 *   deploy/ and of the README's Quickstart uses a command and flags that the
 *   built CLI's --help lists.
 * The checkers are tested on bad input too, so a broken rule cannot pass silently.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { Method } from '../../src/wire/constants.js';

/** The checkout this test was built from: dist/test/unit/ -> ../../../ */
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
/** A diagram with more arrows than this is no longer readable. */
const MAX_ARROWS = 20;
/** The docs whose diagrams and paths are checked. */
const DOCS = ['docs/architecture.md', 'docs/deploy.md', 'README.md'];

function read(path: string): string {
  return readFileSync(join(REPO_ROOT, path), 'utf8');
}

/** The bodies of every fenced block of `language` ('' for any) in `markdown`. */
function fencedBlocks(markdown: string, language?: string): string[] {
  const blocks: string[] = [];
  const fence = /^```([\w-]*)\n([\s\S]*?)^```/gm;
  for (const match of markdown.matchAll(fence)) {
    if (language === undefined || match[1] === language) blocks.push(match[2] ?? '');
  }
  return blocks;
}

const ARROW = /^([A-Za-z][\w]*)\s*(-->>|->>|--x|-x|--\)|-\)|-->|->)\s*[+-]?([A-Za-z][\w]*)\s*:\s*(.*)$/;
const PARTICIPANT = /^(participant|actor)\s+([A-Za-z][\w]*)(\s+as\s+(.+))?$/;
const NOTE = /^Note\s+(over|left of|right of)\s+([A-Za-z][\w]*)(\s*,\s*([A-Za-z][\w]*))?\s*:\s*(.+)$/;
const BLOCK_OPEN = /^(alt|opt|loop|par|critical|break|rect)(\s.*)?$/;
const BLOCK_MIDDLE = /^(else|and|option)(\s.*)?$/;

/** What is wrong with one Mermaid block, by the rules in this file's comment; empty when nothing. */
function mermaidProblems(block: string): string[] {
  const problems: string[] = [];
  const lines = block.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('%%'));
  if (lines[0] !== 'sequenceDiagram') return [`starts with ${JSON.stringify(lines[0] ?? '')}, not sequenceDiagram`];
  const declared = new Set<string>();
  const used = (name: string, line: string): void => {
    if (!declared.has(name)) problems.push(`${name} is not a declared participant: ${line}`);
  };
  const text = (value: string, line: string): void => {
    if (value.trim() === '') problems.push(`empty text: ${line}`);
    if (/[;#]/.test(value)) problems.push(`";" or "#" in text: ${line}`);
  };
  let depth = 0;
  let arrows = 0;
  for (const line of lines.slice(1)) {
    const participant = PARTICIPANT.exec(line);
    if (participant !== null) {
      if (arrows > 0) problems.push(`participant declared after the first arrow: ${line}`);
      declared.add(participant[2] as string);
      if (participant[4] !== undefined) text(participant[4], line);
      continue;
    }
    const arrow = ARROW.exec(line);
    if (arrow !== null) {
      arrows++;
      used(arrow[1] as string, line);
      used(arrow[3] as string, line);
      text(arrow[4] as string, line);
      continue;
    }
    const note = NOTE.exec(line);
    if (note !== null) {
      used(note[2] as string, line);
      if (note[4] !== undefined) used(note[4], line);
      text(note[5] as string, line);
      continue;
    }
    if (BLOCK_OPEN.test(line)) {
      depth++;
      if (/[;#]/.test(line)) problems.push(`";" or "#" in a block label: ${line}`);
      continue;
    }
    if (BLOCK_MIDDLE.test(line)) {
      if (depth === 0) problems.push(`${line.split(' ')[0]} outside a block`);
      continue;
    }
    if (line === 'end') {
      if (depth === 0) problems.push('end without a block');
      else depth--;
      continue;
    }
    if (line === 'autonumber') continue;
    problems.push(`not a sequenceDiagram statement: ${line}`);
  }
  if (depth !== 0) problems.push(`${depth} block(s) not closed with end`);
  if (arrows === 0) problems.push('no arrows');
  if (arrows > MAX_ARROWS) problems.push(`${arrows} arrows, more than ${MAX_ARROWS}`);
  return problems;
}

/** Repository paths `doc` mentions: `src/...`-style paths in backticks, and relative Markdown links. */
function mentionedPaths(doc: string, markdown: string): string[] {
  const paths = new Set<string>();
  for (const match of markdown.matchAll(/`((?:src|test|docs|deploy|scripts|bench)\/[\w./-]*)`/g)) {
    paths.add((match[1] as string).replace(/\/$/, ''));
  }
  for (const match of markdown.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
    const target = match[1] as string;
    if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
    paths.add(join(dirname(doc), target));
  }
  return [...paths];
}

/** The `nattrav ...` command lines in the code blocks of `markdown` (continuations joined, prompts, `npx` and comment lines dropped). */
function commandLines(markdown: string): string[] {
  const lines: string[] = [];
  for (const block of fencedBlocks(markdown)) {
    for (const line of block.replace(/\s*\\\n\s*/g, ' ').split('\n')) {
      const trimmed = line.trim();
      if (trimmed.startsWith('#')) continue; // a shell or systemd comment
      // nattrav in command position: first word (after a prompt), after a pipe or &&, or run by env.
      const match = /(?:^(?:\$\s+)?|\|\s*|&&\s*|\/env\s+)(?:npx\s+)?(nattrav\s+[a-z].*)$/.exec(trimmed);
      if (match !== null) lines.push(match[1] as string);
    }
  }
  return lines;
}

/** A command line cut at the first shell operator or comment, split into words. */
function words(line: string): string[] {
  const cut = line.split(/\s(?:\||>|<|&&|;|#|&)(?:\s|$)|\s[12]?>\S/)[0] as string;
  return cut.split(/\s+/).filter((w) => w !== '');
}

const helpCache = new Map<string, string>();

/** `nattrav ARGS --help`, or undefined when the usage line is not that command's (unknown command). */
function help(args: string[]): string | undefined {
  const key = args.join(' ');
  if (!helpCache.has(key)) {
    const result = spawnSync(process.execPath, [CLI, ...args, '--help'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(result.error, undefined, `nattrav ${key} --help: ${String(result.error)}`);
    // An unknown subcommand of a group (ca, lab) fails: no help of that name.
    helpCache.set(key, result.status === 0 ? result.stdout : '');
  }
  const text = helpCache.get(key) as string;
  return text.startsWith(`Usage: nattrav ${key} `.replace('nattrav  ', 'nattrav ')) ? text : undefined;
}

/** The flags an option section of a --help output lists (`-v`, `--verbose`, `--no-tls`, ...). */
function flagsOf(helpText: string): Set<string> {
  const flags = new Set<string>();
  const section = helpText.split(/^Options:\n/m)[1]?.split(/\n\n/)[0] ?? '';
  for (const line of section.split('\n')) {
    const match = /^ {2}(?:(-[A-Za-z]), )?(--[a-z][\w-]*)/.exec(line);
    if (match === null) continue;
    if (match[1] !== undefined) flags.add(match[1]);
    flags.add(match[2] as string);
  }
  return flags;
}

/** What is wrong with one `nattrav ...` command line against the CLI's --help; empty when nothing. */
function commandProblems(line: string): string[] {
  const [, first, second, ...rest] = words(line);
  if (first === undefined) return [`no command: ${line}`];
  let command = [first];
  let args = [second, ...rest].filter((w): w is string => w !== undefined);
  if (second !== undefined && /^[a-z]+$/.test(second) && help([first, second]) !== undefined) {
    command = [first, second];
    args = rest;
  }
  const commandHelp = help(command);
  if (commandHelp === undefined) return [`unknown command nattrav ${command.join(' ')}: ${line}`];
  const known = new Set([...flagsOf(commandHelp), ...flagsOf(help([]) ?? '')]);
  const problems: string[] = [];
  for (const arg of args) {
    if (!arg.startsWith('-')) continue;
    const flag = arg.split('=')[0] as string;
    if (!known.has(flag)) problems.push(`nattrav ${command.join(' ')} has no ${flag}: ${line}`);
  }
  return problems;
}

describe('docs: Mermaid diagrams', () => {
  it('docs/architecture.md has a valid sequenceDiagram for every flow', () => {
    const blocks = fencedBlocks(read('docs/architecture.md'), 'mermaid');
    // registration, refreshes, TCP control, prologue, 7 strategies, Hello + TLS
    assert.ok(blocks.length >= 12, `only ${blocks.length} mermaid blocks`);
    for (const block of blocks) assert.deepEqual(mermaidProblems(block), [], block);
  });

  it('every Mermaid block of the other docs is valid too', () => {
    for (const doc of DOCS) {
      for (const block of fencedBlocks(read(doc), 'mermaid')) assert.deepEqual(mermaidProblems(block), [], `${doc}:\n${block}`);
    }
  });

  it('names real messages: every Method of the wire constants appears in docs/architecture.md', () => {
    const doc = read('docs/architecture.md');
    for (const name of Object.keys(Method)) assert.match(doc, new RegExp(`\\b${name}\\b`), `${name} is not in docs/architecture.md`);
  });

  it('the checker refuses what Mermaid would refuse or we do not allow', () => {
    const wrap = (...lines: string[]): string => ['sequenceDiagram', '    participant A as Alice', '    participant B', ...lines].join('\n');
    assert.deepEqual(mermaidProblems(wrap('A->>B: hello', 'B-->>A: ok', 'A-xB: lost', 'A-)B: async', 'Note over A,B: fine')), []);
    assert.match(mermaidProblems('graph TD\nA-->B')[0] ?? '', /not sequenceDiagram/);
    assert.match(mermaidProblems(wrap('A->>C: who'))[0] ?? '', /C is not a declared participant/);
    assert.match(mermaidProblems(wrap('A->>B: one; two'))[0] ?? '', /";" or "#"/);
    assert.match(mermaidProblems(wrap('A->>B: #35'))[0] ?? '', /";" or "#"/);
    assert.match(mermaidProblems(wrap('A=>B: bad arrow'))[0] ?? '', /not a sequenceDiagram statement/);
    assert.match(mermaidProblems(wrap('Note over A B: no comma'))[0] ?? '', /not a sequenceDiagram statement/);
    assert.match(mermaidProblems(wrap('alt x', 'A->>B: y')).join(), /not closed/);
    assert.match(mermaidProblems(wrap('A->>B: y', 'end')).join(), /end without a block/);
    assert.match(mermaidProblems(wrap(...Array.from({ length: MAX_ARROWS + 1 }, () => 'A->>B: x'))).join(), /more than/);
  });
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
}

/** Links to `#anchor` in `markdown` that no heading of it produces. */
function brokenAnchors(markdown: string): string[] {
  const anchors = new Set([...markdown.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1] as string)));
  return [...markdown.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1] as string).filter((a) => !anchors.has(a));
}

describe('docs: paths', () => {
  it('every repository path the docs mention exists', () => {
    for (const doc of DOCS) {
      const paths = mentionedPaths(doc, read(doc));
      assert.ok(paths.length > 0, `${doc} mentions no path`);
      for (const path of paths) assert.ok(existsSync(resolve(REPO_ROOT, path)), `${doc} mentions ${path}, which does not exist`);
    }
  });

  it('every #anchor link of the docs names a heading of the same doc', () => {
    for (const doc of DOCS) assert.deepEqual(brokenAnchors(read(doc)), [], doc);
  });

  it('the anchor check knows GitHub slugs and sees a broken one', () => {
    assert.deepEqual(brokenAnchors('## Deploying a broker\n## `nattrav expose`: ports\nsee [a](#deploying-a-broker), [b](#nattrav-expose-ports), [c](#gone)'), ['gone']);
  });

  it('the path finder sees backticked paths and relative links, and skips URLs', () => {
    const found = mentionedPaths('docs/x.md', 'see `src/a.ts`, `test/unit/`, [b](b.md#top), [c](../README.md), [d](https://example.com/e)');
    assert.deepEqual(found.sort(), ['README.md', 'docs/b.md', 'src/a.ts', 'test/unit'].sort());
  });
});

describe('docs: command lines', () => {
  const sources: Array<[string, string]> = [
    ['docs/deploy.md', read('docs/deploy.md')],
    ['deploy/nattrav-broker.service', '```\n' + read('deploy/nattrav-broker.service') + '```\n'],
    ['README.md Quickstart', read('README.md').split(/^## Quickstart$/m)[1]?.split(/^## /m)[0] ?? ''],
  ];
  for (const [name, text] of sources) {
    it(`every nattrav command line of ${name} uses flags its --help lists`, () => {
      const lines = commandLines(text);
      assert.ok(lines.length > 0, `${name} has no nattrav command line`);
      for (const line of lines) assert.deepEqual(commandProblems(line), [], line);
    });
  }

  it('the command checker refuses unknown commands and flags', () => {
    assert.deepEqual(commandProblems('nattrav broker --listen 0.0.0.0:3478 --json'), []);
    assert.deepEqual(commandProblems('nattrav ca issue --ca ./ca --uri nattrav-broker://b --out ./b'), []);
    assert.deepEqual(commandProblems('nattrav connect nattrav://a --broker b:1 -v < in > out'), []);
    assert.match(commandProblems('nattrav broker --listen 0.0.0.0:3478 --no-such-flag').join(), /has no --no-such-flag/);
    assert.match(commandProblems('nattrav ca frobnicate --x').join(), /has no --x|unknown command/);
    assert.match(commandProblems('nattrav brokr --listen x').join(), /unknown command nattrav brokr/);
    assert.deepEqual(commandLines('```sh\n$ npx nattrav listen nattrav://a \\\n    --broker b:1 --echo &\n```\n'), ['nattrav listen nattrav://a --broker b:1 --echo &']);
    assert.deepEqual(
      commandLines('```\n# nattrav broker: a comment\nExecStart=/usr/bin/env nattrav broker --json\necho x | nattrav connect u\nsee nattrav ca docs\n```\n'),
      ['nattrav broker --json', 'nattrav connect u'],
    );
  });
});
