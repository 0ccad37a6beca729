/**
 * The warm recipient end to end on loopback (peer/standby.ts, broker/standby.ts): a
 * recipient granted a standby is answered down it (the broker sends no ConnectionRequest
 * for the attempt), opens the next standby after each use, and falls back to the
 * ConnectionRequest path when its standby dropped, when it declined one, or when the broker
 * is at its cap. A Standby not proven under the URI's session is refused.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer as netServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import { spawn } from 'node:child_process';
import { createBroker } from '../../src/broker/broker.js';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { connect } from '../../src/peer/connect.js';
import { createServer } from '../../src/peer/server.js';
import { keepStandby, STANDBY_RETRY_INITIAL_MS, type StandbyEvent, type StandbyRegistration } from '../../src/peer/standby.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { StunChannel } from '../../src/common/stun-channel.js';
import { startWatchedBroker, startRecipient, until } from '../helpers/loopback.js';

const keyDir = mkdtempSync(join(tmpdir(), 'nattrav-standby-'));
after(() => rmSync(keyDir, { recursive: true, force: true }));

const scheduled = (events: BrokerEvent[]): Array<Extract<BrokerEvent, { type: 'scheduled' }>> =>
  events.filter((e): e is Extract<BrokerEvent, { type: 'scheduled' }> => e.type === 'scheduled');
const requests = (events: BrokerEvent[]): number => events.filter((e) => e.type === 'connection-request').length;

/** Connects to `uri` (plain, no TLS: the attempt is what is measured) and closes the socket. */
async function connectOnce(address: string, uri: string): Promise<string> {
  const socket = await connect({ broker: address, uri, tls: false, knownKeysFile: false });
  const path = socket.nattrav.path;
  socket.destroy();
  return path;
}

/** Sends one message on a fresh TCP connection to the broker and returns its answer (or undefined when it closed silently). */
async function oneRequest(port: number, request: StunMessage, key?: Buffer): Promise<StunMessage | undefined> {
  const socket = netConnect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  socket.write(encodeMessage(request, { fingerprint: true, ...(key === undefined ? {} : { integritySha256Key: key }) }));
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await once(socket, 'close');
  const bytes = Buffer.concat(chunks);
  return bytes.length === 0 ? undefined : decodeMessage(bytes.subarray(0, 20 + bytes.readUInt16BE(2)));
}

/** A raw Connect for `uri` with CONNECT-RTT (so the broker does not probe us); `answer` is the broker's first answer. */
async function rawConnect(port: number, uri: string): Promise<{ socket: Socket; answer: Promise<StunMessage> }> {
  const socket = netConnect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const answer = new Promise<StunMessage>((resolve) => {
    const channel = new StunChannel(socket, (message) => {
      if (message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse) resolve(message);
    });
    const request = StunMessage.request(Method.Connect);
    addUri(request, uri);
    addU32(request, AttrType.ConnectRtt, 1);
    channel.send(request, { fingerprint: true });
  });
  return { socket, answer };
}

describe('standby exchanges on loopback', () => {
  test('a warm recipient: no ConnectionRequest for the attempt, and a new standby after each use', async () => {
    const closers: Array<() => unknown> = [];
    try {
      const { address, events, broker } = await startWatchedBroker(closers);
      const standby: StandbyEvent[] = [];
      const { server } = await startRecipient(address, 'nattrav://warm', { keyDir, tls: false });
      closers.unshift(() => server.close());
      server.on('standby', (e: StandbyEvent) => standby.push(e));
      await until(() => standby.some((e) => e.type === 'open'), 5_000, 'the first standby');
      // Its round trip and its mapping are measured right after it opened.
      await until(() => broker.standbys === 1, 5_000, 'the broker holding it');
      for (let i = 1; i <= 2; i++) {
        // The standby's mapping probe may still be on its way: a cold attempt then is allowed, but not two.
        const before = requests(events);
        assert.notEqual(await connectOnce(address, 'nattrav://warm'), 'relay');
        const last = scheduled(events).at(-1);
        if (i === 2 || last?.warm === true) {
          assert.equal(last?.warm, true, `attempt ${i} was answered down the standby`);
          assert.equal(requests(events), before, `no ConnectionRequest for attempt ${i}`);
        }
        await until(() => standby.filter((e) => e.type === 'open').length >= i + 1 || last?.warm !== true, 5_000, 'the next standby');
      }
      assert.ok(standby.filter((e) => e.type === 'attempt').length >= 1, 'the recipient saw an attempt down its standby');
    } finally {
      for (const close of closers) await close();
    }
  });

  test('declined (standby: false), the cap at 0, and a standby that dropped: the ConnectionRequest path still connects', async () => {
    const closers: Array<() => unknown> = [];
    try {
      const capped = await startWatchedBroker(closers, { maxStandby: 0 });
      const { server: a } = await startRecipient(capped.address, 'nattrav://capped', { keyDir, tls: false });
      closers.unshift(() => a.close());
      assert.notEqual(await connectOnce(capped.address, 'nattrav://capped'), 'relay');
      assert.equal(requests(capped.events), 1, 'at the cap the attempt took the ConnectionRequest path');
      assert.equal(capped.broker.standbys, 0);

      const open = await startWatchedBroker(closers);
      const { server: b } = await startRecipient(open.address, 'nattrav://declined', { keyDir, tls: false, standby: false });
      closers.unshift(() => b.close());
      assert.notEqual(await connectOnce(open.address, 'nattrav://declined'), 'relay');
      assert.equal(requests(open.events), 1);
      assert.equal(open.broker.standbys, 0, 'a declining recipient opened no standby');

      const standby: StandbyEvent[] = [];
      const { server: c } = await startRecipient(open.address, 'nattrav://dropped', { keyDir, tls: false });
      closers.unshift(() => c.close());
      c.on('standby', (e: StandbyEvent) => standby.push(e));
      await until(() => open.broker.standbys === 1, 5_000, 'the standby');
      // The broker ends every standby (as at shutdown of that table): the recipient backs off and opens another.
      open.broker.dropStandbys();
      assert.equal(open.broker.standbys, 0);
      const before = requests(open.events);
      assert.notEqual(await connectOnce(open.address, 'nattrav://dropped'), 'relay');
      assert.equal(requests(open.events), before + 1, 'without its standby the recipient was asked by ConnectionRequest');
      await until(() => standby.some((e) => e.type === 'lost'), 5_000, 'the recipient noticing the drop');
      const lost = standby.find((e) => e.type === 'lost');
      assert.ok(lost?.type === 'lost' && lost.retryMs >= STANDBY_RETRY_INITIAL_MS, 'never a tight loop: the next try waits a second at least');
      await until(() => open.broker.standbys === 1, 10_000, 'a new standby after the backoff');
    } finally {
      for (const close of closers) await close();
    }
  });

  test('a busy recipient holds no standby: the next initiator hears its refusal at once instead of punching into silence', async () => {
    const closers: Array<() => unknown> = [];
    try {
      const { address, port, broker } = await startWatchedBroker(closers);
      const { server } = await startRecipient(address, 'nattrav://busy', { keyDir, tls: false, maxConcurrentAttempts: 1, punchTimeoutMs: 6_000 });
      closers.unshift(() => server.close());
      server.on('attemptFailed', () => undefined);
      await until(() => broker.standbys === 1, 5_000, 'the standby');
      // An initiator that never punches: the recipient's one attempt slot stays taken while it punches.
      const hold = await rawConnect(port, 'nattrav://busy');
      closers.unshift(() => hold.socket.destroy());
      await until(() => server.attemptsInProgress === 1, 10_000, 'the recipient running the attempt');
      await new Promise((resolve) => setTimeout(resolve, 1_500)); // a standby reopened now would be taken by the next Connect
      assert.equal(broker.standbys, 0, 'busy: no standby');
      const refused = await rawConnect(port, 'nattrav://busy');
      closers.unshift(() => refused.socket.destroy());
      const answer = await refused.answer;
      assert.equal(answer.cls, MessageClass.ErrorResponse);
      assert.match(getErrorCode(answer)?.reason ?? '', /refused the connection request: recipient busy: 1 attempts in progress/);
      // Capacity frees when the attempt ends: the standby comes back.
      hold.socket.destroy();
      await until(() => server.attemptsInProgress === 0, 15_000, 'the held attempt ending');
      await until(() => broker.standbys === 1, 10_000, 'a standby again');
    } finally {
      for (const close of closers) await close();
    }
  });

  test('a Standby without integrity under the URI session, or for an unknown URI, is refused and closed', async () => {
    const closers: Array<() => unknown> = [];
    try {
      const { address, port, broker } = await startWatchedBroker(closers);
      const { server } = await startRecipient(address, 'nattrav://held', { keyDir, tls: false, standby: false });
      closers.unshift(() => server.close());
      const forged = StunMessage.request(Method.Standby);
      addUri(forged, 'nattrav://held');
      const wrongKey = await oneRequest(port, forged, Buffer.alloc(32, 7));
      assert.equal(wrongKey?.cls, MessageClass.ErrorResponse);
      assert.equal(getErrorCode(wrongKey as StunMessage)?.code, StunErrorCode.Forbidden);
      const unsigned = await oneRequest(port, forged);
      assert.equal(getErrorCode(unsigned as StunMessage)?.code, StunErrorCode.Forbidden);
      const other = StunMessage.request(Method.Standby);
      addUri(other, 'nattrav://nobody');
      assert.equal(getErrorCode((await oneRequest(port, other, Buffer.alloc(32, 7))) as StunMessage)?.code, StunErrorCode.NotFound);
      assert.equal(broker.standbys, 0);
      assert.equal(wrongKey?.get(AttrType.XorMappedAddress), undefined, 'a refusal tells nothing');
    } finally {
      for (const close of closers) await close();
    }
  });

  test('bad input: maxStandby and --max-standby must be whole numbers, standby a boolean', async () => {
    const invalid = (fn: () => unknown, message: RegExp): void =>
      assert.throws(fn, (err: unknown) => err instanceof NattravError && err.code === ErrorCode.InvalidArgument && message.test(err.message));
    for (const maxStandby of [-1, 1.5, Number.NaN]) invalid(() => createBroker({ maxStandby }), /broker option maxStandby must be a whole number of standby exchanges \(0 grants none\)/);
    invalid(() => createServer({ broker: '127.0.0.1:3478', uri: 'nattrav://x', standby: 'yes' as unknown as boolean }), /standby: expected true or false, got "yes"/);
    const home = mkdtempSync(join(tmpdir(), 'nattrav-standby-cli-'));
    try {
      const bad = new CliProcess(spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '127.0.0.1:0', '--max-standby', 'lots'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } }));
      assert.equal(await bad.exited, 2);
      assert.match(bad.stderr, /--max-standby.*expected a whole number/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

/** A registration as keepStandby reads it, its events emitted by the test. */
class FakeRegistration extends EventEmitter implements StandbyRegistration {
  constructor(readonly joinBroker: { host: string; port: number }, readonly sessionKey: Buffer) {
    super();
  }
}

describe('keepStandby follows its registration', () => {
  /** A "broker" that accepts standby connections and never answers: each open try is one connection. */
  async function silentBroker(closers: Array<() => unknown>): Promise<{ port: number; sockets: Socket[]; closed: Set<Socket> }> {
    const sockets: Socket[] = [];
    const closed = new Set<Socket>();
    const server = netServer((socket) => {
      socket.on('error', () => undefined);
      socket.resume(); // the Standby requests are read and dropped: 'close' comes when the peer closes
      socket.on('close', () => closed.add(socket));
      sockets.push(socket);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => {
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    return { port: (server.address() as { port: number }).port, sockets, closed };
  }

  test('a move opens the standby anew: the old one (old address, old mapping) is closed', async () => {
    const closers: Array<() => unknown> = [];
    try {
      const { port, sockets, closed } = await silentBroker(closers);
      const registration = new FakeRegistration({ host: '127.0.0.1', port }, Buffer.alloc(32, 1));
      const { keeper } = keepStandby(registration, { uri: 'nattrav://moving', direct: () => true, onAttempt: () => undefined });
      closers.unshift(() => keeper.close());
      registration.emit('registered', { standby: true, transport: 'udp' });
      await until(() => sockets.length === 1, 5_000, 'the first standby connection');
      registration.emit('moved', {});
      await until(() => sockets.length === 2, 5_000, 'a new standby connection after the move');
      await until(() => closed.has(sockets[0] as Socket), 5_000, 'the old standby closed');
      assert.notEqual(keeper.state, 'stopped');
    } finally {
      for (const close of closers) await close();
    }
  });

  test('while busy (it would refuse an attempt) the recipient holds no standby; it opens one again when capacity frees', async () => {
    const closers: Array<() => unknown> = [];
    try {
      const { port, sockets, closed } = await silentBroker(closers);
      const registration = new FakeRegistration({ host: '127.0.0.1', port }, Buffer.alloc(32, 1));
      let busy = true;
      const kept = keepStandby(registration, { uri: 'nattrav://busy', direct: () => true, busy: () => busy, onAttempt: () => undefined });
      closers.unshift(() => kept.keeper.close());
      registration.emit('registered', { standby: true, transport: 'udp' });
      assert.equal(kept.keeper.state, 'stopped', 'busy at the grant: no standby');
      busy = false;
      kept.recheck();
      await until(() => sockets.length === 1, 5_000, 'a standby once not busy');
      busy = true;
      kept.recheck();
      assert.equal(kept.keeper.state, 'stopped');
      await until(() => closed.has(sockets[0] as Socket), 5_000, 'the standby closed while busy');
      // A registration refresh while busy does not bring it back.
      registration.emit('registered', { standby: true, transport: 'udp' });
      assert.equal(kept.keeper.state, 'stopped');
      assert.equal(sockets.length, 1);
    } finally {
      for (const close of closers) await close();
    }
  });
});
