/** `nattrav ca init|issue|show` as a user runs them: files OpenSSL verifies, JSON results on stdout, errors on stderr, exit codes. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH } from '../../src/lab/cli-process.js';

const work = mkdtempSync(join(tmpdir(), 'nattrav-ca-cli-'));
after(() => rmSync(work, { recursive: true, force: true }));

type Json = Record<string, unknown>;

function jsonLines(text: string): Json[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Json);
}

/** `results`: JSON lines on stdout; `events`: JSON lines on stderr (errors). */
function nattrav(args: string[]): { status: number | null; stdout: string; stderr: string; results: Json[]; events: Json[] } {
  const result = spawnSync(process.execPath, [CLI_PATH, ...args], { cwd: work, encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, results: jsonLines(result.stdout), events: jsonLines(result.stderr) };
}

function opensslVerify(caFile: string, certFile: string): { status: number | null; output: string } {
  const result = spawnSync('openssl', ['verify', '-CAfile', caFile, certFile], { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('nattrav ca', () => {
  for (const keyType of ['ecdsa-p256', 'ed25519']) {
    test(`ca init + ca issue (${keyType}): files OpenSSL verifies`, () => {
      const caDir = join(work, `ca-${keyType}`);
      const outDir = join(work, `alice-${keyType}`);
      const init = nattrav(['ca', 'init', caDir, '--key-type', keyType, '--name', 'Test CA', '--days', '30', '--json']);
      assert.equal(init.status, 0, init.stderr);
      assert.equal(init.results[0]?.event, 'ca-created');
      assert.equal(init.results[0]?.keyType, keyType);
      assert.equal(init.results[0]?.subject, 'CN=Test CA');
      assert.equal(statSync(join(caDir, 'ca-key.pem')).mode & 0o777, 0o600);

      const issue = nattrav(['ca', 'issue', '--ca', caDir, '--uri', 'nattrav://alice', '--out', outDir, '--key-type', keyType, '--json']);
      assert.equal(issue.status, 0, issue.stderr);
      assert.equal(issue.results[0]?.event, 'certificate-issued');
      assert.equal(issue.results[0]?.uri, 'nattrav://alice');
      assert.equal(statSync(join(outDir, 'key.pem')).mode & 0o777, 0o600);
      assert.equal(readFileSync(join(outDir, 'ca.pem'), 'utf8'), readFileSync(join(caDir, 'ca.pem'), 'utf8'));
      const verified = opensslVerify(join(outDir, 'ca.pem'), join(outDir, 'cert.pem'));
      assert.equal(verified.status, 0, verified.output);

      const show = nattrav(['ca', 'show', join(outDir, 'cert.pem'), '--json']);
      assert.equal(show.status, 0, show.stderr);
      assert.deepEqual(show.results[0]?.uris, ['nattrav://alice']);
      assert.equal(show.results[0]?.keyType, keyType);
      assert.match(String(show.results[0]?.fingerprint), /^[a-z2-7]{52}$/);
      const human = nattrav(['ca', 'show', join(outDir, 'cert.pem')]);
      assert.match(human.stdout, /URI: nattrav:\/\/alice/);
    });
  }

  test('a certificate from another CA does not verify; existing files are kept; bad options exit 2', () => {
    assert.equal(nattrav(['ca', 'init', 'ca-one']).status, 0);
    assert.equal(nattrav(['ca', 'init', 'ca-two']).status, 0);
    assert.equal(nattrav(['ca', 'issue', '--ca', 'ca-two', '--uri', 'nattrav://mallory', '--out', 'mallory']).status, 0);
    assert.notEqual(opensslVerify(join(work, 'ca-one', 'ca.pem'), join(work, 'mallory', 'cert.pem')).status, 0);

    const before = readFileSync(join(work, 'ca-one', 'ca-key.pem'), 'utf8');
    const again = nattrav(['ca', 'init', 'ca-one', '--json']);
    assert.equal(again.status, 1);
    assert.equal(again.stdout, '', 'an error is no result');
    assert.equal(again.events[0]?.code, 'ERR_IDENTITY');
    assert.match(String(again.events[0]?.message), /already exists/);
    assert.equal(readFileSync(join(work, 'ca-one', 'ca-key.pem'), 'utf8'), before);

    assert.equal(nattrav(['ca', 'init', 'x', '--key-type', 'rsa']).status, 2);
    assert.equal(nattrav(['ca', 'init', 'x', '--days', '0']).status, 2);
    assert.equal(nattrav(['ca', 'issue', '--ca', 'ca-one', '--uri', 'not a uri', '--out', 'y']).status, 2);
  });
});
