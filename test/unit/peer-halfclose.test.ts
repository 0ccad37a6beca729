/**
 * A nattrav connection half-closes like TCP: one side ending its writes leaves the
 * other direction open, over the public path and the relay, plain and TLS; and the
 * close is reported (`socket.nattrav.closed`) with byte counts and a reason.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, describe, test } from 'node:test';
import { strategyMask, type StrategyName } from '../../src/nat/strategy.js';
import { runAttempt } from '../../src/peer/attempt.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { secure } from '../../src/peer/secure.js';
import { newSelfCertifyingIdentity } from '../../src/security/identity.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, addUri } from '../../src/wire/nattrav.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';
import { connect } from '../../src/peer/connect.js';

// Keys of the identities made here stay in a temporary directory.
const keyDir = mkdtempSync(join(tmpdir(), 'nattrav-halfclose-'));
const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Reads everything until the other side's end. */
function readAll(socket: NattravSocket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

describe('half-close and close reporting', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(keyDir, { recursive: true, force: true });
  });

  /** Connects as initiator by `path` (public: the first plan on loopback; relay: every direct strategy marked failed). */
  async function open(path: StrategyName, tls: boolean): Promise<{ initiator: NattravSocket; recipient: NattravSocket }> {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const identity = await newSelfCertifyingIdentity({ dir: keyDir });
    const { server, accepted } = await startRecipient(address, identity.uri, { identity, tls });
    closers.push(() => server.close());
    const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
    const request = StunMessage.request(Method.Connect);
    addUri(request, identity.uri);
    addAttemptId(request, attemptId);
    if (path === 'relay') addU32(request, AttrType.FailedStrategies, strategyMask(['lan', 'public', 'direct']));
    const [host, port] = address.split(':');
    const started = performance.now();
    const signal = AbortSignal.timeout(10_000);
    let initiator = await runAttempt({
      broker: { host: host as string, port: Number(port) },
      request, attemptId, role: 'initiator', tls, uri: identity.uri, signal,
      exchangeTimeoutMs: 5_000, punchTimeoutMs: 3_000, started, attempt: 1, trace: [],
    });
    if (tls) initiator = await secure(initiator, { identity: await newSelfCertifyingIdentity({ dir: keyDir }), ca: [], expectedPeerUri: identity.uri, signal, started });
    await until(() => accepted.length === 1, 5_000, 'the recipient to accept');
    const recipient = accepted[0] as NattravSocket;
    assert.equal(initiator.nattrav.path, path);
    assert.equal(recipient.nattrav.path, path);
    assert.equal(initiator.nattrav.tls, tls);
    return { initiator, recipient };
  }

  for (const path of ['public', 'relay'] as const) {
    for (const tls of [false, true]) {
      for (const first of ['initiator', 'recipient'] as const) {
        test(`${path}${tls ? ' + TLS' : ''}: the ${first} ends first, every byte still arrives both ways`, async () => {
          const { initiator, recipient } = await open(path, tls);
          const sides = { initiator, recipient };
          const second = first === 'initiator' ? 'recipient' : 'initiator';
          const payload = { [first]: randomBytes(1_500_000), [second]: randomBytes(700_000) } as Record<'initiator' | 'recipient', Buffer>;
          const received = { initiator: readAll(initiator), recipient: readAll(recipient) };
          // The first side sends and ends at once; the second sends only after it saw that end.
          sides[first].end(payload[first]);
          const gotFirst = await received[second];
          sides[second].end(payload[second]);
          const gotSecond = await received[first];
          assert.equal(sha(gotFirst), sha(payload[first]));
          assert.equal(sha(gotSecond), sha(payload[second]));
          for (const role of ['initiator', 'recipient'] as const) {
            const closed = await sides[role].nattrav.closed;
            const other = role === 'initiator' ? 'recipient' : 'initiator';
            assert.equal(closed.reason, 'closed', closed.error?.message);
            assert.equal(closed.bytesOut, payload[role].length);
            assert.equal(closed.bytesIn, payload[other].length);
            assert.ok(closed.remoteEnded && closed.localEnded);
            assert.equal(sides[role].nattrav.bytesIn, payload[other].length);
          }
        });
      }
    }
  }

  test('a reset after setup is reported as broken, with the counts', async () => {
    const { initiator, recipient } = await open('public', false);
    recipient.on('error', () => undefined);
    initiator.write('some bytes');
    await until(() => recipient.nattrav.bytesIn === 10, 5_000, 'the bytes to arrive');
    initiator.resetAndDestroy();
    const closed = await recipient.nattrav.closed;
    assert.equal(closed.reason, 'reset');
    assert.equal(closed.error?.code, 'ERR_CONNECTION_BROKEN');
    assert.match(String(closed.error?.message), /reset \(ECONNRESET\)/);
    assert.equal(closed.bytesIn, 10);
    assert.equal((await initiator.nattrav.closed).reason, 'destroyed');
  });

  for (const [recipientTls, initiatorTls] of [[true, false], [false, true]] as const) {
    test(`a ${initiatorTls ? 'TLS' : 'plain'} initiator and a ${recipientTls ? 'TLS' : 'plain'} recipient fail on both sides, naming what the other wants`, async () => {
      const { broker, address } = await startBroker();
      closers.push(() => broker.close());
      const identity = await newSelfCertifyingIdentity({ dir: keyDir });
      const { server } = await startRecipient(address, identity.uri, { identity, tls: recipientTls });
      closers.push(() => server.close());
      const failures: Error[] = [];
      server.on('attemptFailed', (err: Error) => failures.push(err));
      const started = Date.now();
      await assert.rejects(connect({ broker: address, uri: identity.uri, tls: initiatorTls }), (err: Error & { code?: string }) => {
        assert.equal(err.code, recipientTls ? 'ERR_TLS_REQUIRED' : 'ERR_PLAIN_REQUIRED');
        assert.match(err.message, recipientTls ? /the recipient requires TLS/ : /the recipient runs without TLS/);
        return true;
      });
      await until(() => failures.length > 0, 5_000, 'the recipient to fail');
      const failure = failures[0] as Error & { code?: string };
      assert.equal(failure.code, recipientTls ? 'ERR_PLAIN_REQUIRED' : 'ERR_TLS_REQUIRED', failure.message);
      // Refused at the Hello, not after a time limit.
      assert.ok(Date.now() - started < 3_000, `took ${Date.now() - started} ms`);
    });
  }
});
