/**
 * The broker's TCP side (tcp.ts, tcp-deadlines.ts): per-message deadlines, the
 * lifetime of an exchange and eviction at the connection cap, first as bookkeeping
 * on a fake clock, then against slow clients on loopback with short configured
 * limits; the control connection's close (its registration's place under the caps
 * and its session are released; a failing registry is reported, never an unhandled
 * rejection); and close() during listen() leaving nothing bound.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, createServer as netServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBroker, type BrokerEvent } from '../../src/broker/broker.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import type { Registration } from '../../src/broker/registry/registry.js';
import { ConnectionTable, FrameTracker } from '../../src/broker/tcp-deadlines.js';
import { StunChannel } from '../../src/common/stun-channel.js';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { registerWithProof, type RegistrationSession } from '../../src/peer/register-proof.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { generateKeyPair, type KeyPairPem } from '../../src/security/keys.js';
import { encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { brokerCaughtUp, startBroker, startWatchedBroker, startRecipient, until } from '../helpers/loopback.js';

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A TCP connection to the broker from `localAddress`, open once connected. */
async function tcp(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  const socket = netConnect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  return socket;
}

/** Resolves when the broker's close of `socket` reached it (the broker closed it already: only I/O is awaited). */
async function closed(socket: Socket): Promise<void> {
  if (!socket.destroyed) await Promise.race([once(socket, 'close'), pause(3_000).then(() => assert.fail('the broker closed it, yet it is still open after 3 s'))]);
}

/** A Binding request padded to `bytes` on the wire (PADDING is not shed by the broker's decoder). */
function bindingBytes(bytes = 20): Buffer {
  const request = StunMessage.request(Method.Binding);
  if (bytes > 20) request.add(AttrType.Padding, new Uint8Array(bytes - 24));
  return encodeMessage(request);
}

describe('broker TCP deadlines (bookkeeping, fake clock)', () => {
  const limits = { firstMessageMs: 1_000, messageMs: 500, lifetimeMs: 10_000, maxConnections: 4, maxConnectionsPerSource: 3 };

  test('FrameTracker follows messages across chunks and several in one chunk', () => {
    const tracker = new FrameTracker();
    const one = bindingBytes(48);
    assert.equal(tracker.push(one.subarray(0, 7)), 0);
    assert.equal(tracker.inMessage, true);
    assert.equal(tracker.push(one.subarray(7, 30)), 0);
    assert.equal(tracker.push(one.subarray(30)), 1);
    assert.equal(tracker.inMessage, false);
    assert.equal(tracker.push(Buffer.concat([bindingBytes(), bindingBytes(32), bindingBytes().subarray(0, 1)])), 2);
    assert.equal(tracker.inMessage, true);
  });

  test('a message started must end within messageMs, however many bytes trickle in', () => {
    const clock = { now: 0 };
    const table = new ConnectionTable<string>(limits, () => clock.now);
    table.add('slow', '10.0.0.1');
    table.add('quick', '10.0.0.2');
    const message = bindingBytes(64);
    table.received('quick', message);
    for (let i = 0; i < 10; i++) {
      table.received('slow', message.subarray(i, i + 1));
      clock.now += 100;
      const expired = table.expired();
      if (clock.now < 500) assert.deepEqual(expired, [], `${clock.now} ms`);
      else {
        assert.deepEqual(expired, [{ handle: 'slow', source: '10.0.0.1', expiry: 'message-timeout' }]);
        break;
      }
    }
    assert.equal(clock.now, 500, 'closed at exactly messageMs after its first byte');
    assert.equal(table.size, 1);
    // Between messages a connection has no message deadline (the idle timeout is the socket's).
    clock.now += 900;
    assert.deepEqual(table.expired(), []);
  });

  test('silent connections get firstMessageMs; exchanges live at most lifetimeMs; control connections and relays do not', () => {
    const clock = { now: 0 };
    const table = new ConnectionTable<string>(limits, () => clock.now);
    for (const id of ['silent', 'exchange', 'control', 'relay']) table.add(id, `10.0.1.${id.length}`);
    for (const id of ['exchange', 'control', 'relay']) table.received(id, bindingBytes());
    table.setRole('exchange', 'attempt');
    table.setRole('control', 'control');
    table.setRole('relay', 'relay');
    clock.now = 1_000;
    assert.deepEqual(table.expired().map((e) => [e.handle, e.expiry]), [['silent', 'first-message-timeout']]);
    for (let t = 2_000; t < 10_000; t += 1_000) {
      clock.now = t;
      table.received('exchange', bindingBytes()); // busy
      assert.deepEqual(table.expired(), []);
    }
    clock.now = 10_000;
    assert.deepEqual(table.expired().map((e) => [e.handle, e.expiry]), [['exchange', 'exchange-lifetime']]);
    clock.now = 1_000_000;
    table.received('relay', Buffer.alloc(3)); // application bytes: not STUN, no deadline
    assert.deepEqual(table.expired(), []);
    assert.equal(table.size, 2);
  });

  test('at the cap: half-sent first, then never served, then idle Binding clients; attempts and control connections never', () => {
    const clock = { now: 0 };
    const table = new ConnectionTable<string>(limits, () => clock.now);
    const admitted = (source: string): string | undefined => {
      const verdict = table.admit(source);
      assert.equal(verdict.verdict, 'ok');
      return verdict.verdict === 'ok' ? verdict.evicted : undefined;
    };
    for (const [id, source] of [['idle', 'a'], ['unserved', 'b'], ['half', 'c'], ['attempt', 'd']] as const) {
      assert.equal(admitted(source), undefined);
      table.add(id, source);
      clock.now += 10;
    }
    table.received('idle', bindingBytes());
    table.received('half', bindingBytes(40));
    table.received('half', bindingBytes().subarray(0, 5));
    table.received('attempt', bindingBytes());
    table.setRole('attempt', 'attempt');
    assert.equal(admitted('e'), 'half');
    table.add('e1', 'e');
    table.received('e1', bindingBytes());
    table.setRole('e1', 'control');
    assert.equal(admitted('e'), 'unserved');
    table.add('e2', 'e');
    table.received('e2', bindingBytes());
    table.setRole('e2', 'attempt');
    assert.equal(admitted('e'), 'idle');
    table.add('e3', 'e');
    table.received('e3', bindingBytes());
    table.setRole('e3', 'attempt');
    assert.deepEqual(table.admit('f'), { verdict: 'total' }, 'nothing left to evict');
    assert.deepEqual(table.admit('e'), { verdict: 'per-source' }, 'eviction never lifts the per-source cap');
  });
});

describe('broker TCP deadlines (loopback)', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-tcp-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  const broker = (options: Parameters<typeof startBroker>[0] = {}): ReturnType<typeof startWatchedBroker> => startWatchedBroker(closers, options);

  test('a client trickling a byte every 100 ms is closed messageTimeoutMs after its first byte; a busy exchange at its lifetime (fake clock)', async () => {
    const clock = new FakeClock();
    const { port, events } = await broker({ clock, messageTimeoutMs: 400, exchangeMaxLifetimeMs: 1_200 });
    const slow = await tcp(port, '127.0.0.3');
    const message = bindingBytes(200);
    // One byte of a 200-byte message every 100 ms of the broker's time: bytes keep coming, the message never ends.
    for (let i = 0; i < 4; i++) {
      slow.write(message.subarray(i, i + 1));
      await brokerCaughtUp(port);
      await clock.advance(i < 3 ? 100 : 50);
    }
    await brokerCaughtUp(port);
    assert.equal(slow.destroyed, false, 'open 350 ms after its first byte');
    await clock.advance(150);
    await closed(slow);

    const busy = await tcp(port, '127.0.0.4');
    const decoder = new StunStreamDecoder();
    let answers = 0;
    busy.on('data', (chunk: Buffer) => (answers += decoder.push(chunk).length));
    // A Binding every 100 ms, each answered: busy, never slow, yet closed at its lifetime.
    let elapsed = 0;
    for (; elapsed < 1_100; elapsed += 100) {
      const before = answers;
      busy.write(bindingBytes());
      await until(() => answers > before || busy.destroyed, 3_000, 'the Binding answer');
      await clock.advance(100);
    }
    await brokerCaughtUp(port);
    assert.equal(busy.destroyed, false, `open ${elapsed} ms after it opened`);
    assert.equal(answers, 11);
    await clock.advance(200);
    await closed(busy);
    const kinds = events.flatMap((e) => (e.type === 'limited' ? [e.kind] : []));
    assert.ok(kinds.includes('message-timeout') && kinds.includes('exchange-lifetime'), kinds.join(', '));
  });

  test('a refused Standby keeps the deadlines of a new connection: a peer that never closes its side is closed at the exchange lifetime (fake clock)', async () => {
    const clock = new FakeClock();
    const { port, events } = await broker({ clock, exchangeMaxLifetimeMs: 1_200 });
    // Half-open on our side: the broker's FIN does not close the connection, only its deadlines can.
    const socket = netConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.6', allowHalfOpen: true });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    const standby = StunMessage.request(Method.Standby);
    addUri(standby, 'nattrav://nobody');
    socket.write(encodeMessage(standby, { integritySha256Key: Buffer.alloc(32, 7) }));
    const decoder = new StunStreamDecoder();
    const answers: StunMessage[] = [];
    socket.on('data', (chunk: Buffer) => answers.push(...decoder.push(chunk)));
    await once(socket, 'end');
    assert.equal(getErrorCode(answers[0] as StunMessage)?.code, StunErrorCode.NotFound);
    await brokerCaughtUp(port);
    assert.equal(socket.destroyed, false, 'still open: we did not close our side');
    const expired = (): boolean => events.some((e) => e.type === 'limited' && e.kind === 'exchange-lifetime' && e.source === '127.0.0.6');
    await clock.advance(1_100);
    await brokerCaughtUp(port);
    assert.equal(expired(), false, 'open until its lifetime');
    await clock.advance(200);
    // Our side learns nothing of it (the broker's FIN came already): its report says it closed the connection.
    await until(expired, 3_000, 'the broker closing it at the exchange lifetime, not holding it as a standby');
    socket.destroy();
  });

  test('a STARTTLS handshake that never starts is closed after messageTimeoutMs (fake clock)', async () => {
    const clock = new FakeClock();
    const ca = await createCa({ name: 'broker CA' });
    const issued = await issueCertificate({ ca, uri: 'nattrav-broker://tcp-test' });
    const { port, events } = await broker({ clock, cert: issued.certPem, key: issued.keyPem, messageTimeoutMs: 300 });
    const socket = await tcp(port, '127.0.0.5');
    socket.write(encodeMessage(StunMessage.request(Method.StartTls)));
    await once(socket, 'data'); // the clear answer; then we stay silent instead of sending a ClientHello
    await clock.advance(250);
    await brokerCaughtUp(port);
    assert.equal(socket.destroyed, false, 'open 250 ms after the answer');
    await clock.advance(150); // past 300 ms by more than one sweep (every 75 ms)
    await closed(socket);
    assert.ok(events.some((e) => e.type === 'limited' && e.kind === 'message-timeout'));
  });

  test('slowloris at a cap of 24 connections: slow clients are evicted, legitimate peers register and connect', async () => {
    // Slow clients on four addresses fill the cap, each writing one byte every 200 ms (a 1 KiB message that never ends in time).
    const { port, address, events } = await broker({ limits: { maxConnections: 24, maxConnectionsPerSource: 24 } });
    const slow: Socket[] = [];
    for (let i = 0; i < 24; i++) slow.push(await tcp(port, `127.0.0.${10 + (i % 4)}`));
    closers.push(() => slow.forEach((s) => s.destroy()));
    const message = bindingBytes(1_024);
    let offset = 0;
    const trickle = setInterval(() => {
      offset++;
      for (const socket of slow) if (!socket.destroyed) socket.write(message.subarray(offset - 1, offset));
    }, 200);
    closers.push(() => clearInterval(trickle));
    await pause(300);
    assert.equal(slow.filter((s) => !s.destroyed).length, 24, 'the slow clients hold the whole cap');
    const { server } = await startRecipient(address, 'nattrav://slowloris-victim', { keyDir: join(keyDir, 'victim') });
    closers.push(() => server.close());
    for (let i = 0; i < 2; i++) {
      const socket = await connect({ broker: address, uri: 'nattrav://slowloris-victim', timeoutMs: 10_000 });
      socket.destroy();
    }
    clearInterval(trickle);
    await until(() => slow.filter((s) => s.destroyed).length > 0, 2_000, 'evicted slow clients to close');
    const evicted = events.filter((e) => e.type === 'limited' && e.kind === 'evicted').length;
    assert.ok(evicted > 0, 'evictions reported');
    assert.ok(slow.filter((s) => !s.destroyed).length < 24, 'slow clients made room');
  });
});

describe('broker TCP control connections and start/close', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  /** Registers `uri` over a fresh TCP control connection; returns the channel and session. */
  async function registerOverTcp(port: number, uri: string, key: KeyPairPem): Promise<{ channel: StunChannel; session: RegistrationSession | undefined; response: StunMessage }> {
    const channel = new StunChannel(await tcp(port), () => undefined);
    const base = (): StunMessage => addU32(addUri(StunMessage.request(Method.Register), uri), AttrType.Lifetime, 60_000);
    const { response, session } = await registerWithProof(
      (request, options) => channel.request(request, AbortSignal.timeout(3_000), { fingerprint: true, ...options }),
      base,
      { key },
      uri,
      60_000,
      'tcp',
      undefined,
    );
    return { channel, session, response };
  }

  test('a dropped control connection frees its place under the registration cap and ends its session', async () => {
    const { broker } = await startBroker({ limits: { maxRegistrationsPerSource: 2 } });
    closers.push(() => broker.close());
    const port = broker.address().port;
    const key = generateKeyPair();
    let last: { channel: StunChannel; session: RegistrationSession | undefined } | undefined;
    for (let i = 0; i < 5; i++) {
      const uri = `nattrav://tcp-cap/${i}`;
      const registered = await registerOverTcp(port, uri, key);
      assert.equal(registered.response.cls, MessageClass.SuccessResponse, `registration ${i} (cap 2 per source)`);
      registered.channel.destroy();
      const deadline = Date.now() + 2_000;
      while ((await broker.registry.get(uri)) !== undefined) {
        assert.ok(Date.now() < deadline, `${uri} dropped after its control connection closed`);
        await pause(10);
      }
      last = registered;
    }
    // The last session ended with its connection: a refresh under it is refused as unknown.
    const session = last?.session as RegistrationSession;
    const channel = new StunChannel(await tcp(port), () => undefined);
    closers.push(() => channel.destroy());
    const refresh = addU32(addUri(StunMessage.request(Method.Register), 'nattrav://tcp-cap/4'), AttrType.Lifetime, 60_000);
    refresh.add(AttrType.Username, session.id);
    addU32(refresh, AttrType.Sequence, 99);
    const answer = await channel.request(refresh, AbortSignal.timeout(2_000), { fingerprint: true, integritySha256Key: session.key });
    assert.equal(getErrorCode(answer)?.code, StunErrorCode.Unauthorized);
    assert.match(getErrorCode(answer)?.reason ?? '', /unknown session/);
  });

  test('a registry that fails while a control connection closes is reported as a warning, not an unhandled rejection', async () => {
    class FailingRegistry extends MemoryRegistry {
      failing = false;
      override async get(uri: string): Promise<Registration | undefined> {
        if (this.failing) throw new Error('registry unreachable');
        return super.get(uri);
      }
    }
    const registry = new FailingRegistry({ sweepIntervalMs: 0 });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    closers.push(() => process.off('unhandledRejection', onUnhandled));
    const broker = createBroker({ host: '127.0.0.1', port: 0, registry });
    closers.push(() => broker.close());
    const warnings: string[] = [];
    broker.on('event', (e: BrokerEvent) => e.type === 'warning' && warnings.push(e.message));
    const { port } = await broker.listen();
    const { channel } = await registerOverTcp(port, 'nattrav://remote-registry', generateKeyPair());
    registry.failing = true;
    channel.destroy();
    await until(() => warnings.length > 0, 2_000, 'a warning');
    await pause(50);
    assert.match(warnings[0] ?? '', /nattrav:\/\/remote-registry.*registry unreachable/);
    assert.deepEqual(unhandled, []);
  });

  test('a registration made again while its old control connection is cleaned up stays (read, then delete only if unchanged)', async () => {
    const uri = 'nattrav://moved-on';
    let racing = false;
    class RacingRegistry extends MemoryRegistry {
      // The peer registers again (as through another broker sharing the registry) between the clean-up's read and its delete.
      override async get(asked: string): Promise<Registration | undefined> {
        const seen = await super.get(asked);
        if (racing && asked === uri && seen !== undefined) {
          racing = false;
          await this.put({ ...seen, publicEndpoint: { family: 'IPv4', address: '203.0.113.50', port: 40_000 }, expiresAt: Date.now() + 60_000 });
        }
        return seen;
      }
    }
    const registry = new RacingRegistry({ sweepIntervalMs: 0 });
    const broker = createBroker({ host: '127.0.0.1', port: 0, registry });
    closers.push(() => broker.close());
    const { port } = await broker.listen();
    const { channel } = await registerOverTcp(port, uri, generateKeyPair());
    racing = true;
    channel.destroy();
    await until(() => !racing, 2_000, 'the clean-up read the registration');
    await pause(50);
    assert.equal((await registry.get(uri))?.publicEndpoint.address, '203.0.113.50', 'the new registration was not removed');
  });

  test('close() during listen(): once close() resolved, no UDP or TCP port is left bound', async () => {
    const free = async (port: number): Promise<boolean> => {
      const udp = createSocket('udp4');
      const udpOk = await new Promise<boolean>((resolve) => {
        udp.once('error', () => resolve(false));
        udp.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(true));
      });
      udp.close();
      const server = netServer();
      const tcpOk = await new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(true));
      });
      if (tcpOk) await new Promise((resolve) => server.close(resolve));
      return udpOk && tcpOk;
    };
    // A port pair that is free now.
    const probe = createBroker({ host: '127.0.0.1', port: 0 });
    const { port } = await probe.listen();
    await probe.close();
    for (const ticks of [0, 1, 2, 3, 5, 8, 13]) {
      const broker = createBroker({ host: '127.0.0.1', port });
      const listening = broker.listen().then(() => 'listened', (err: unknown) => err);
      for (let i = 0; i < ticks; i++) await new Promise((resolve) => setImmediate(resolve));
      await broker.close();
      assert.ok(await free(port), `port ${port} free after close() (${ticks} ticks into listen())`);
      assert.ok(await free(port + 1), `alternate port ${port + 1} free after close() (${ticks} ticks into listen())`);
      const outcome = await listening;
      assert.ok(outcome === 'listened' || (outcome instanceof NattravError && outcome.code === ErrorCode.Closed), String(outcome));
    }
  });
});
