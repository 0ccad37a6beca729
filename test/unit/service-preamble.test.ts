/**
 * The expose preamble's bytes (hand-written, not only round trips), reading it off a
 * stream without eating what follows, the [HOST:]PORT parser, and identities kept in a
 * directory.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { isNattravError } from '../../src/errors.js';
import { loadOrCreateIdentity } from '../../src/security/identity.js';
import { parseServiceAddress } from '../../src/service/address.js';
import { decodePreamble, encodePreamble, readPreamble } from '../../src/service/preamble.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

describe('expose preamble v1: bytes', () => {
  test('ok is six bytes: "NXP", version 1, status 0, no reason', () => {
    assert.deepEqual(encodePreamble({ status: 'ok', reason: 'ignored' }), hex('4e5850 01 00 00'));
  });

  test('refused carries its reason after a one-byte length', () => {
    assert.deepEqual(encodePreamble({ status: 'refused', reason: 'no' }), hex('4e5850 01 01 02 6e6f'));
    assert.deepEqual(encodePreamble({ status: 'busy', reason: '' }), hex('4e5850 01 02 00'));
    assert.deepEqual(encodePreamble({ status: 'error', reason: 'x' }), hex('4e5850 01 03 01 78'));
  });

  test('a reason over 255 bytes is cut at a character boundary', () => {
    const frame = encodePreamble({ status: 'refused', reason: `${'a'.repeat(254)}é and more` });
    // 'é' is two bytes and would end at byte 256: it is left out whole.
    assert.equal(frame[5], 254);
    assert.equal(frame.length, 6 + 254);
    assert.equal(decodePreamble(frame)?.preamble.reason, 'a'.repeat(254));
  });

  test("a hostile exposer's reason reaches our log as printable ASCII only (no terminal escapes, no forged lines)", () => {
    const frame = encodePreamble({ status: 'refused', reason: '\r\u001b[2K#7 closed\nfake line é' });
    assert.equal(decodePreamble(frame)?.preamble.reason, '??[2K#7 closed?fake line ?');
  });

  test('decode: needs more bytes, then the frame and its length', () => {
    const frame = hex('4e5850 01 01 03 626164 ff');
    assert.equal(decodePreamble(frame.subarray(0, 2)), undefined);
    assert.equal(decodePreamble(frame.subarray(0, 6)), undefined);
    assert.equal(decodePreamble(frame.subarray(0, 8)), undefined);
    assert.deepEqual(decodePreamble(frame), { preamble: { status: 'refused', reason: 'bad' }, length: 9 });
  });

  test('decode refuses another magic at once, another version and an unknown status', () => {
    assert.throws(() => decodePreamble(Buffer.from('HT')), (err: unknown) => isNattravError(err, 'ERR_PROTOCOL') && /did not start with an expose status frame \(got 0x4854\)/.test(err.message));
    assert.throws(() => decodePreamble(hex('4e5850 02 00 00')), /speaks expose preamble version 2; this side speaks version 1/);
    assert.throws(() => decodePreamble(hex('4e5850 01 07 00')), /unknown expose status 7/);
  });
});

describe('readPreamble', () => {
  test('reads one frame in pieces and leaves the service\'s first bytes for the pipe', async () => {
    const stream = new PassThrough();
    const reading = readPreamble(stream, { timeoutMs: 5_000 });
    stream.write(hex('4e58'));
    await new Promise((resolve) => setImmediate(resolve));
    stream.write(Buffer.concat([hex('50 01 00 00'), Buffer.from('SSH-2.0-banner\r\n')]));
    assert.deepEqual(await reading, { status: 'ok', reason: '' });
    assert.equal((stream.read() as Buffer).toString(), 'SSH-2.0-banner\r\n');
  });

  test('an end before the whole frame, a timeout and an abort each reject, saying which', async () => {
    const ended = new PassThrough();
    const reading = readPreamble(ended, { timeoutMs: 5_000 });
    ended.end(hex('4e5850 01'));
    await assert.rejects(reading, /closed the connection before its status frame was complete \(4 of at least 6 bytes\)/);
    await assert.rejects(readPreamble(new PassThrough(), { timeoutMs: 50 }), (err: unknown) => isNattravError(err, 'ERR_TIMEOUT') && /50 ms while waiting for the exposer's status frame/.test(err.message));
    const controller = new AbortController();
    const aborted = readPreamble(new PassThrough(), { timeoutMs: 5_000, signal: controller.signal });
    controller.abort();
    await assert.rejects(aborted, (err: unknown) => isNattravError(err, 'ERR_ABORTED'));
  });
});

describe('[HOST:]PORT', () => {
  test('a bare port means 127.0.0.1; hosts and [IPv6] are kept', () => {
    assert.deepEqual(parseServiceAddress('8080', 'TARGET'), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseServiceAddress('localhost:22', 'TARGET'), { host: 'localhost', port: 22 });
    assert.deepEqual(parseServiceAddress('[::1]:443', 'TARGET'), { host: '::1', port: 443 });
    assert.deepEqual(parseServiceAddress('0', '--listen', true), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseServiceAddress({ host: '10.0.0.1', port: 5 }, 'target'), { host: '10.0.0.1', port: 5 });
  });

  test('bad values name the argument and say what to pass', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /TARGET: expected HOST:PORT, got an empty value; expected \[HOST:\]PORT such as 8080/],
      ['abc', /TARGET: missing port in "abc"/],
      ['host:http', /TARGET: port "http" in "host:http" is not a number/],
      ['70000', /TARGET: port must be an integer from 1 to 65535, got 70000/],
      ['0', /TARGET: port must be an integer from 1 to 65535, got 0/],
      [':80', /TARGET: missing host in ":80"/],
    ];
    for (const [value, message] of cases) {
      assert.throws(() => parseServiceAddress(value, 'TARGET'), (err: unknown) => isNattravError(err, 'ERR_INVALID_ARGUMENT') && message.test(err.message), value);
    }
  });
});

describe('loadOrCreateIdentity', () => {
  test('creates a self-certifying identity once, then loads the same one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nattrav-identity-'));
    try {
      const kept = join(dir, 'kept');
      const first = await loadOrCreateIdentity(kept);
      assert.equal(first.created, true);
      assert.match(first.identity.uri, /^nattrav:\/\/k-[a-z2-7]{52}$/);
      assert.equal((await stat(join(kept, 'key.pem'))).mode & 0o777, 0o600);
      const second = await loadOrCreateIdentity(kept);
      assert.equal(second.created, false);
      assert.equal(second.identity.uri, first.identity.uri);
      assert.equal(second.identity.keyPem, first.identity.keyPem);
      // Half an identity is an error, not silently replaced.
      const half = join(dir, 'half');
      await loadOrCreateIdentity(half);
      await rm(join(half, 'cert.pem'));
      await assert.rejects(loadOrCreateIdentity(half), (err: unknown) => isNattravError(err, 'ERR_IDENTITY') && /cert\.pem/.test(err.message));
      await writeFile(join(dir, 'not-a-dir'), 'x');
      await assert.rejects(loadOrCreateIdentity(join(dir, 'not-a-dir')), (err: unknown) => isNattravError(err, 'ERR_IDENTITY'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
