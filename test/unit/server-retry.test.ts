/**
 * A recipient that runs for months, on loopback: it waits for a broker that is not
 * there yet, survives the broker's restart on the same port (over UDP and over the
 * TCP control connection), and reports each step; `once` keeps the old fail-fast.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { createBroker, type Broker } from '../../src/broker/broker.js';
import { ErrorCode, type NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import type { RegisteredEvent } from '../../src/peer/registration.js';
import { createServer, type NattravServer, type RegistrationRetryEvent } from '../../src/peer/server.js';
import { until } from '../helpers/loopback.js';

/** Refreshes in these tests, in ms: short, so a restart is noticed fast. */
const KEEPALIVE_MS = 1_500;
/** One registration try's limit, in ms: a silent broker is noticed within it. */
const REGISTER_TIMEOUT_MS = 600;
/**
 * How long the broker stays away after the loss was reported: long enough that backoff
 * without the keepalive cap would overshoot (its tries at 0.5-1, 1.5-3, 3.5-7, 7.5-15 s
 * after the loss leave at least 7 s between the broker's return and the next try).
 */
const DOWNTIME_MS = 8_000;
/** Room for a busy machine on top of the promised keepalive interval, in ms. */
const SLACK_MS = 1_000;

/** A port where a broker can listen (and its port + 1), found by starting one and closing it. */
async function freeBrokerPort(): Promise<number> {
  const probe = createBroker({ host: '127.0.0.1', port: 0 });
  const { port } = await probe.listen();
  await probe.close();
  return port;
}

async function brokerOn(port: number): Promise<Broker> {
  const broker = createBroker({ host: '127.0.0.1', port });
  await broker.listen();
  return broker;
}

/** Connects to `uri` and checks that bytes come back from the echoing recipient. */
async function echoes(address: string, uri: string): Promise<void> {
  const socket = await connect({ broker: address, uri, knownKeysFile: false, timeoutMs: 15_000 });
  try {
    socket.write('still there?');
    const [data] = (await once(socket, 'data')) as [Buffer];
    assert.equal(data.toString(), 'still there?');
  } finally {
    socket.destroy();
  }
}

/** An echoing server whose registration events are recorded. */
function echoServer(port: number, uri: string, keyDir: string, extra: Parameters<typeof createServer>[0] extends infer O ? Partial<O> : never = {}): {
  server: NattravServer;
  log: string[];
  retries: RegistrationRetryEvent[];
  registered: Array<RegisteredEvent & { at: number }>;
} {
  const server = createServer({ broker: `127.0.0.1:${port}`, uri, keyDir, keepaliveMs: KEEPALIVE_MS, registerTimeoutMs: REGISTER_TIMEOUT_MS, ...extra }, (socket: NattravSocket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  const log: string[] = [];
  const retries: RegistrationRetryEvent[] = [];
  const registered: Array<RegisteredEvent & { at: number }> = [];
  server.on('registered', (event: RegisteredEvent) => {
    registered.push({ ...event, at: performance.now() });
    if (event.kind !== 'refresh') log.push(`registered:${event.kind}`);
  });
  server.on('registrationLost', (err: NattravError) => log.push(`lost:${err.code}`));
  server.on('registrationRetry', (retry: RegistrationRetryEvent) => retries.push(retry));
  server.on('error', (err: Error) => log.push(`error:${err.message}`));
  return { server, log, retries, registered };
}

describe('a recipient that keeps serving while its broker comes and goes', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-retry-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  test('started while no broker is there: it retries, reports each try, and registers once the broker comes up', async () => {
    const port = await freeBrokerPort();
    const { server, log, retries } = echoServer(port, 'nattrav://early-bird', keyDir, { registerTransport: 'udp' });
    closers.push(() => server.close());
    server.listen();
    await until(() => retries.length >= 2, 10_000, 'two failed tries at start');
    assert.ok(retries.every((r) => r.phase === 'start'), JSON.stringify(retries));
    assert.equal(retries[0]?.error.code, ErrorCode.BrokerUnreachable);
    assert.deepEqual(retries.slice(0, 2).map((r) => r.failures), [1, 2]);
    assert.equal(server.listening, false);
    const broker = await brokerOn(port);
    closers.push(() => broker.close());
    await once(server, 'listening');
    assert.deepEqual(log, ['registered:first']);
    await echoes(`127.0.0.1:${port}`, 'nattrav://early-bird');
  });

  for (const transport of ['udp', 'tcp'] as const) {
    test(`the broker restarts on the same port (${transport}): registration-lost, registered again within one keepalive interval, a new connection works`, async () => {
      const port = await freeBrokerPort();
      const uri = `nattrav://restart-${transport}`;
      let broker = await brokerOn(port);
      closers.push(() => broker.close());
      const { server, log, registered } = echoServer(port, uri, keyDir, { registerTransport: transport });
      closers.push(() => server.close());
      server.listen();
      await once(server, 'listening');
      await echoes(`127.0.0.1:${port}`, uri);

      await broker.close();
      await until(() => log.includes(`lost:${ErrorCode.BrokerUnreachable}`), KEEPALIVE_MS + 5_000, 'the registration to be reported lost');
      await new Promise((resolve) => setTimeout(resolve, DOWNTIME_MS));
      assert.equal(server.listening, true, 'the server still serves while the broker is away');
      broker = await brokerOn(port);
      const backAt = performance.now();
      await until(() => registered.some((r) => r.kind === 'again'), KEEPALIVE_MS + SLACK_MS + 5_000, 'the registration again');
      const again = registered.find((r) => r.kind === 'again') as RegisteredEvent & { at: number };
      assert.ok(again.at - backAt <= KEEPALIVE_MS + SLACK_MS, `registered again ${Math.round(again.at - backAt)} ms after the broker was back`);
      assert.equal(again.transport, transport);
      await echoes(`127.0.0.1:${port}`, uri);
      assert.deepEqual(log, ['registered:first', `lost:${ErrorCode.BrokerUnreachable}`, 'registered:again']);
    });
  }

  test('once: a broker that is not there fails the start at once, with no retry', async () => {
    const port = await freeBrokerPort();
    const { server, retries } = echoServer(port, 'nattrav://impatient', keyDir, { registerTransport: 'udp', once: true });
    closers.push(() => server.close());
    const [[error]] = await Promise.all([once(server, 'error') as Promise<[NattravError]>, server.listen()]);
    assert.equal(error.code, ErrorCode.BrokerUnreachable, error.message);
    assert.deepEqual(retries, []);
  });

  test('retry options are checked and named', () => {
    assert.throws(() => createServer({ broker: '127.0.0.1:3478', uri: 'nattrav://x', retryInitialMs: 5_000, retryMaxMs: 1_000 }), /retryMaxMs \(1000\) must not be less than retryInitialMs \(5000\)/);
    assert.throws(() => createServer({ broker: '127.0.0.1:3478', uri: 'nattrav://x', retryInitialMs: 0 }), /retryInitialMs/);
  });
});
