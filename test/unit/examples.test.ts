/**
 * Every example in examples/ runs here, as a user would run it (its own process, a
 * temporary HOME), and must exit 0 printing what its comment promises. An example
 * without an entry in EXAMPLES fails the suite: none goes untested.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

const root = new URL('../../../', import.meta.url).pathname;
const examplesDir = join(root, 'examples');

interface Example {
  /** The command line after the interpreter. */
  readonly args?: readonly string[];
  /** Root needed (namespaces, a daemon): skipped with a reason without it, required under CI. */
  readonly root?: boolean;
  /** What stdout must show. */
  readonly stdout: readonly RegExp[];
}

const EXAMPLES: Record<string, Example> = {
  'allow-list.mjs': {
    stdout: [/^ops: hello nattrav:\/\/ops, this is nattrav:\/\/vault$/m, /^stranger: ERR_NOT_ALLOWED: .*nattrav:\/\/k-[a-z2-7]{52} is not on the allow-list of nattrav:\/\/vault$/m],
  },
  'ssh-forward.sh': {
    root: true,
    stdout: [/^ssh: logged in as \S+ over nattrav$/m, /^exposed as nattrav:\/\/k-[a-z2-7]{52}$/m],
  },
  'http.mjs': {
    stdout: [/^200 GET \/hello from nattrav:\/\/k-[a-z2-7]{52}$/m, /^200 POST \/upload from nattrav:\/\/k-[a-z2-7]{52}: some bytes$/m],
  },
};

const home = mkdtempSync(join(tmpdir(), 'nattrav-examples-'));

async function run(file: string, args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const interpreter = file.endsWith('.sh') ? 'bash' : process.execPath;
  const child = spawn(interpreter, [join(examplesDir, file), ...args], { cwd: root, env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, '.config') }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

describe('examples', () => {
  after(() => rmSync(home, { recursive: true, force: true }));

  test('every file in examples/ has a test here', () => {
    const files = readdirSync(examplesDir).filter((f) => /\.(mjs|js|sh)$/.test(f)).sort();
    assert.deepEqual(files, Object.keys(EXAMPLES).sort());
  });

  for (const [file, example] of Object.entries(EXAMPLES)) {
    const needsRoot = example.root === true && process.getuid?.() !== 0;
    test(`examples/${file} runs and prints what it promises`, { skip: needsRoot && process.env.CI === undefined ? 'needs root' : false, timeout: 120_000 }, async () => {
      assert.ok(!needsRoot, 'this example needs root, and CI runs as root');
      const { code, stdout, stderr } = await run(file, example.args ?? []);
      assert.equal(code, 0, `exit ${String(code)}; stderr:\n${stderr}`);
      for (const pattern of example.stdout) assert.match(stdout, pattern, `stdout:\n${stdout}`);
    });
  }
});
