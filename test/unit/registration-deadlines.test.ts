/**
 * Registration over the TCP control connection against a silent broker: a TCP
 * server that accepts and never answers. Every await on the network (STARTTLS,
 * the TLS handshake, the Register exchange) is under registerTimeoutMs, so
 * listen fails with ERR_TIMEOUT naming the registration instead of hanging.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, type NattravError } from '../../src/errors.js';
import { createServer } from '../../src/peer/server.js';
import { createCa } from '../../src/security/ca.js';

/** The registration's limit in these tests, in ms. */
const REGISTER_TIMEOUT_MS = 600;
/** How much later than the limit the failure may come (timers, key generation on first use), in ms. */
const SLACK_MS = 1_500;

describe('registration over TCP with a silent broker', () => {
  let silent: Server;
  let address: string;
  let keyDir: string;
  /** Bytes the silent broker received per connection: proves the peer got as far as asking. */
  const received: Buffer[] = [];
  const sockets = new Set<Socket>();

  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-silent-'));
    silent = createTcpServer((socket) => {
      sockets.add(socket);
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const bound = silent.address();
    assert.ok(bound !== null && typeof bound === 'object');
    address = `127.0.0.1:${bound.port}`;
  });

  after(async () => {
    for (const socket of sockets) socket.destroy();
    silent.close();
    await rm(keyDir, { recursive: true, force: true });
  });

  async function listenFails(options: { brokerCa?: string; uri: string }): Promise<{ error: NattravError; ms: number }> {
    const server = createServer({
      broker: address,
      uri: options.uri,
      registerTransport: 'tcp',
      registerTimeoutMs: REGISTER_TIMEOUT_MS,
      // Fail fast: the first failure is what is under test (without it the server retries).
      once: true,
      keyDir,
      ...(options.brokerCa === undefined ? {} : { brokerCa: options.brokerCa }),
    });
    const started = performance.now();
    const before = received.length;
    server.listen();
    try {
      const [error] = (await once(server, 'error')) as [NattravError];
      assert.ok(received.length > before, 'the peer sent its first message to the silent broker');
      return { error, ms: performance.now() - started };
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  test('STARTTLS unanswered (brokerCa set): ERR_TIMEOUT within registerTimeoutMs, naming the registration', async () => {
    const ca = await createCa({ name: 'broker CA' });
    const { error, ms } = await listenFails({ brokerCa: ca.certPem, uri: 'nattrav://silent-tls' });
    assert.equal(error.code, ErrorCode.Timeout, error.message);
    assert.match(error.message, new RegExp(`timed out after ${REGISTER_TIMEOUT_MS} ms while registering nattrav://silent-tls over TCP with broker ${address}`));
    assert.ok(ms < REGISTER_TIMEOUT_MS + SLACK_MS, `failed after ${Math.round(ms)} ms`);
  });

  test('Register unanswered (plain control connection): ERR_TIMEOUT within registerTimeoutMs, naming the registration', async () => {
    const { error, ms } = await listenFails({ uri: 'nattrav://silent-plain' });
    assert.equal(error.code, ErrorCode.Timeout, error.message);
    assert.match(error.message, new RegExp(`timed out after ${REGISTER_TIMEOUT_MS} ms while registering nattrav://silent-plain over TCP with broker ${address}`));
    assert.ok(ms < REGISTER_TIMEOUT_MS + SLACK_MS, `failed after ${Math.round(ms)} ms`);
  });
});
