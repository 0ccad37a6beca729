/**
 * Withdrawing a registration on loopback: closing a recipient (library or CLI)
 * makes its URI unknown at once; only the session's holder can withdraw, once.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, describe, test } from 'node:test';
import type { Broker, BrokerEvent } from '../../src/broker/broker.js';
import type { NattravError } from '../../src/errors.js';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { connect } from '../../src/peer/connect.js';
import { withdrawalRequest } from '../../src/peer/register-proof.js';
import { PeerRegistration } from '../../src/peer/registration.js';
import { generateKeyPair } from '../../src/security/keys.js';
import { decodeMessage, encodeMessage, verifyMessageIntegritySha256 } from '../../src/wire/codec.js';
import { AttrType, MessageClass, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { getErrorCode, getU32Attr } from '../../src/wire/nattrav.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';
import { RawPeer, refreshBytes, register } from '../helpers/raw-peer.js';

// Keys of default identities go here, never into the real ~/.nattrav.
const home = mkdtempSync(join(tmpdir(), 'nattrav-withdraw-'));
const children: ChildProcess[] = [];
const closers: Array<() => unknown> = [];

after(async () => {
  for (const close of closers.reverse()) await close();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

/** Long enough that a registration lapsing on its own can never pass for a withdrawal here. */
const LONG_LIFETIME = { keepaliveMs: 20_000, lifetimeMs: 60_000 } as const;

async function brokerWithEvents(options: Parameters<typeof startBroker>[0] = {}): Promise<{ broker: Broker; address: string; events: BrokerEvent[] }> {
  const { broker, address } = await startBroker(options);
  closers.push(() => broker.close());
  const events: BrokerEvent[] = [];
  broker.on('event', (event: BrokerEvent) => events.push(event));
  return { broker, address, events };
}

function withdrawals(events: readonly BrokerEvent[], uri: string): Array<BrokerEvent & { type: 'withdrawn' }> {
  return events.filter((e): e is BrokerEvent & { type: 'withdrawn' } => e.type === 'withdrawn' && e.uri === uri);
}

/** connect() to `uri` must fail with ERR_UNKNOWN_URI, well before its own limit; returns how long it took. */
async function expectUnknown(address: string, uri: string): Promise<number> {
  const started = performance.now();
  await assert.rejects(connect({ broker: address, uri, timeoutMs: 20_000 }), (err: NattravError) => {
    assert.equal(err.code, 'ERR_UNKNOWN_URI', err.message);
    return true;
  });
  return performance.now() - started;
}

function errorCodeOf(message: StunMessage): number | undefined {
  return message.cls === MessageClass.ErrorResponse ? getErrorCode(message)?.code : undefined;
}

describe('withdrawing a registration', () => {
  test('the withdrawal on the wire: Register, URI, LIFETIME 0, USERNAME, the next SEQUENCE, integrity under the session key', () => {
    const session = { id: Buffer.alloc(16, 0xab), key: Buffer.alloc(32, 0x5a), sequence: 41 };
    const { request, options } = withdrawalRequest('nattrav://w', session);
    const bytes = encodeMessage(request, options);
    assert.equal(session.sequence, 42, 'the session spends a sequence number');
    // RFC 8489 §5: method 0xE01's bits M7-M11 move up two places around the class bits (00: request).
    assert.equal(bytes.readUInt16BE(0), 0x3801, 'a Register request');
    const hex = bytes.subarray(20).toString('hex');
    // URI "nattrav://w" (11 bytes, padded to 12), then LIFETIME = 0, USERNAME, SEQUENCE = 42 (0x2a).
    assert.ok(hex.startsWith(`4e01000b${Buffer.from('nattrav://w').toString('hex')}00` + '4e07000400000000' + `00060010${'ab'.repeat(16)}` + '4e1100040000002a'), hex);
    const decoded = decodeMessage(bytes);
    assert.ok(verifyMessageIntegritySha256(decoded, session.key));
    assert.ok(!verifyMessageIntegritySha256(decoded, Buffer.alloc(32, 0x5b)));
    // Without a session (an open-mode broker): the bare request, no integrity.
    const bare = withdrawalRequest('nattrav://w', undefined);
    assert.deepEqual(bare.options, {});
    assert.equal(bare.request.get(AttrType.Username), undefined);
    assert.equal(getU32Attr(bare.request, AttrType.Lifetime), 0);
  });

  test('after server.close() the broker forgets the URI at once: connect() fails with ERR_UNKNOWN_URI (UDP registration)', async () => {
    const { broker, address, events } = await brokerWithEvents();
    const uri = 'nattrav://leaving-udp';
    const { server } = await startRecipient(address, uri, { keyDir: join(home, 'keys'), registerTransport: 'udp', ...LONG_LIFETIME });
    assert.equal(server.address()?.transport, 'udp');
    assert.ok(await broker.registry.get(uri), 'registered before close');
    await new Promise<void>((resolve) => server.close(() => resolve()));
    // The close callback runs once the withdrawal left; the broker acts on it within moments, not a lifetime.
    await until(() => withdrawals(events, uri).length > 0, 2_000, 'the broker to report the withdrawal');
    assert.deepEqual(withdrawals(events, uri).map((e) => e.transport), ['udp']);
    assert.equal(await broker.registry.get(uri), undefined);
    const tookMs = await expectUnknown(address, uri);
    assert.ok(tookMs < 5_000, `connect failed after ${tookMs} ms`);
  });

  test('over a TCP control connection the withdrawal travels down it (not only the connection closing)', async () => {
    const { broker, address, events } = await brokerWithEvents();
    const uri = 'nattrav://leaving-tcp';
    const { server } = await startRecipient(address, uri, { keyDir: join(home, 'keys'), registerTransport: 'tcp', ...LONG_LIFETIME });
    assert.equal(server.address()?.transport, 'tcp');
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await until(() => withdrawals(events, uri).length > 0, 2_000, 'the broker to report the withdrawal');
    assert.deepEqual(withdrawals(events, uri).map((e) => e.transport), ['tcp']);
    assert.equal(await broker.registry.get(uri), undefined);
    await expectUnknown(address, uri);
  });

  test('close() calls every callback once, however often it is called', async () => {
    const { address } = await brokerWithEvents();
    const { server } = await startRecipient(address, 'nattrav://twice', { keyDir: join(home, 'keys'), ...LONG_LIFETIME });
    let calls = 0;
    let closeEvents = 0;
    server.on('close', () => closeEvents++);
    const first = new Promise<void>((resolve) => server.close(() => resolve(void calls++)));
    const second = new Promise<void>((resolve) => server.close(() => resolve(void calls++)));
    await Promise.all([first, second]);
    await new Promise<void>((resolve) => server.close(() => resolve(void calls++)));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(calls, 3);
    assert.equal(closeEvents, 1);
  });

  test('close() during start: nothing is left registered, whether or not the broker had granted it', async () => {
    const { broker, address, events } = await brokerWithEvents();
    const [host, port] = [address.split(':')[0] as string, Number(address.split(':')[1])];
    const options = { broker: { host, port }, keepaliveMs: 20_000, lifetimeMs: 60_000, registerTimeoutMs: 5_000, transport: 'udp' as const };

    // Closed before anything was sent: start() rejects, nothing reaches the broker.
    const early = new PeerRegistration({ ...options, uri: 'nattrav://early', keys: { key: generateKeyPair() } });
    const earlyStart = early.start();
    await early.close();
    await assert.rejects(earlyStart, (err: NattravError) => err.code === 'ERR_CLOSED');
    assert.equal(early.state, 'closed');

    // Closed the moment the broker granted it, its answer still on the way: the grant is withdrawn.
    const late = new PeerRegistration({ ...options, uri: 'nattrav://late', keys: { key: generateKeyPair() } });
    let closing: Promise<void> | undefined;
    broker.on('event', (event: BrokerEvent) => {
      if (event.type === 'registered' && event.uri === 'nattrav://late') closing ??= late.close();
    });
    let registeredEvents = 0;
    late.on('registered', () => registeredEvents++);
    await assert.rejects(late.start(), (err: NattravError) => err.code === 'ERR_CLOSED');
    await closing;
    await until(() => withdrawals(events, 'nattrav://late').length > 0, 2_000, 'the broker to report the withdrawal');
    assert.equal(await broker.registry.get('nattrav://late'), undefined);
    assert.equal(registeredEvents, 0, 'no registered event after close()');
    assert.equal(await broker.registry.get('nattrav://early'), undefined);
  });

  test('the owner withdraws with LIFETIME 0 under its session: the answer says LIFETIME 0, and the session is over', async () => {
    const { broker, address, events } = await brokerWithEvents();
    const port = Number(address.split(':')[1]);
    const peer = await RawPeer.open(port, closers);
    const uri = 'nattrav://owner';
    const session = await peer.register(uri, generateKeyPair());
    const answer = await peer.sendBytes(refreshBytes(uri, 0, session, 1));
    assert.equal(answer.cls, MessageClass.SuccessResponse, JSON.stringify(getErrorCode(answer)));
    assert.equal(getU32Attr(answer, AttrType.Lifetime), 0);
    assert.ok(verifyMessageIntegritySha256(answer, session.key), 'the answer carries integrity under the session key');
    assert.equal(await broker.registry.get(uri), undefined);
    assert.equal(withdrawals(events, uri).length, 1);
    // The session ended with it: a refresh under it now asks for a new proof of key.
    assert.equal(errorCodeOf(await peer.sendBytes(refreshBytes(uri, 30_000, session, 2))), StunErrorCode.Unauthorized);
    assert.equal(await broker.registry.get(uri), undefined, 'a refresh under the ended session does not bring it back');
  });

  test('forged, misdirected and replayed withdrawals change nothing', async () => {
    const { broker, address, events } = await brokerWithEvents();
    const port = Number(address.split(':')[1]);
    const owner = await RawPeer.open(port, closers);
    const attacker = await RawPeer.open(port, closers);
    const uri = 'nattrav://victim';
    const key = generateKeyPair();
    const session = await owner.register(uri, key);
    const other = await attacker.register('nattrav://attacker', generateKeyPair());
    const held = await broker.registry.get(uri);
    assert.ok(held);

    const forgeries: Array<[string, RawPeer, Buffer, number]> = [
      ['integrity under a wrong key', attacker, refreshBytes(uri, 0, session, 5, Buffer.alloc(32, 7)), StunErrorCode.Unauthorized],
      ['no integrity', attacker, refreshBytes(uri, 0, session, 5, null), StunErrorCode.Unauthorized],
      ['no session at all, from the holder\'s own endpoint', owner, encodeMessage(register(uri, 0)), StunErrorCode.Unauthorized],
      ['another URI\'s session, with valid integrity under it', attacker, refreshBytes(uri, 0, other, 5), StunErrorCode.Unauthorized],
    ];
    for (const [what, from, bytes, code] of forgeries) {
      assert.equal(errorCodeOf(await from.sendBytes(bytes)), code, what);
      assert.deepEqual(await broker.registry.get(uri), held, `${what}: still registered`);
    }

    // A captured refresh (sequence 1) is accepted once; a withdrawal reusing a spent sequence number is a replay.
    const refresh = refreshBytes(uri, 60_000, session, 1);
    assert.equal((await owner.sendBytes(refresh)).cls, MessageClass.SuccessResponse);
    const replayed = await attacker.sendBytes(refreshBytes(uri, 0, session, 1));
    assert.equal(errorCodeOf(replayed), StunErrorCode.Forbidden);
    assert.match(getErrorCode(replayed)?.reason ?? '', /replayed/);
    assert.ok(await broker.registry.get(uri), 'a replayed sequence number does not withdraw');
    assert.equal(withdrawals(events, uri).length, 0);

    // The owner's real withdrawal works once; replayed after the owner registered again, it is refused.
    const withdrawal = refreshBytes(uri, 0, session, 2);
    assert.equal((await owner.sendBytes(withdrawal)).cls, MessageClass.SuccessResponse);
    assert.equal(await broker.registry.get(uri), undefined);
    await owner.register(uri, key);
    assert.equal(errorCodeOf(await attacker.sendBytes(withdrawal)), StunErrorCode.Unauthorized, 'the old session is gone');
    assert.equal(errorCodeOf(await attacker.sendBytes(refresh)), StunErrorCode.Unauthorized, 'so are its refreshes');
    assert.ok(await broker.registry.get(uri), 'the new registration stays');
    assert.equal(withdrawals(events, uri).length, 1);
  });

  test('an open-mode registration made without a key is withdrawn only from the endpoint that holds it', async () => {
    const { broker, address, events } = await brokerWithEvents({ open: true });
    const port = Number(address.split(':')[1]);
    const holder = await RawPeer.open(port, closers);
    const stranger = await RawPeer.open(port, closers);
    const uri = 'nattrav://open-name';
    assert.equal((await holder.send(register(uri, 60_000))).cls, MessageClass.SuccessResponse);
    const refused = await stranger.send(register(uri, 0));
    assert.equal(errorCodeOf(refused), StunErrorCode.Forbidden);
    assert.ok(await broker.registry.get(uri), 'still registered after a stranger asked');
    const answer = await holder.send(register(uri, 0));
    assert.equal(answer.cls, MessageClass.SuccessResponse);
    assert.equal(getU32Attr(answer, AttrType.Lifetime), 0);
    assert.equal(await broker.registry.get(uri), undefined);
    assert.equal(withdrawals(events, uri).length, 1);
  });

  test('nattrav listen stopped by SIGINT (130) withdraws: nattrav connect then exits 3 at once', async () => {
    const cli = (args: string[]): CliProcess => {
      const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
      children.push(child);
      return new CliProcess(child);
    };
    const broker = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
    const address = `127.0.0.1:${String((await broker.waitForEvent('listening', 10_000)).port)}`;
    const uri = 'nattrav://cli-leaving';
    const listener = cli(['listen', uri, '--broker', address, '--json', '--key-dir', join(home, 'cli-keys')]);
    await listener.waitForEvent('registered', 10_000);
    await broker.waitForEvent('registered', 5_000, (e) => e.uri === uri);
    listener.child.kill('SIGINT');
    assert.equal(await listener.exited, 130);
    const withdrawn = await broker.waitForEvent('withdrawn', 5_000, (e) => e.uri === uri);
    assert.equal(withdrawn.transport, 'udp');
    const started = performance.now();
    const client = cli(['connect', uri, '--broker', address]);
    assert.equal(await client.exited, 3, client.stderr);
    const tookMs = performance.now() - started;
    assert.match(client.stderr, /unknown URI: nattrav:\/\/cli-leaving/);
    // Without the withdrawal the broker would forward the request and wait 5 s for the recipient.
    assert.ok(tookMs < 4_000, `connect exited after ${Math.round(tookMs)} ms`);
    broker.child.kill('SIGTERM');
    await broker.exited;
  });
});
