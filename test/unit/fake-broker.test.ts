/**
 * The fake-broker attack of issue 8: a broker the initiator cannot authenticate
 * (no brokerCa) answers its Connect with 16 PEER-PRIVATE-ENDPOINTs of its choosing
 * and the `lan` strategy, so the initiator dials all 16; one of them answers the
 * Hello. Being the broker, the attacker can seal the attempt secret for the
 * initiator and prove it in the Hello, so the Hello protects nothing here: what
 * protects the initiator is TLS with the recipient's key (the default). The
 * initiator must fail with a reason and hand no application byte to any of the
 * attacker's listeners; a control run with `tls: false` shows the same attack
 * does receive the application bytes.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { toTransportAddress } from '../../src/common/endpoint.js';
import { StunChannel } from '../../src/common/stun-channel.js';
import { ErrorCode, isNattravError } from '../../src/errors.js';
import { encodeMappingKind } from '../../src/nat/mapping.js';
import { connect } from '../../src/peer/connect.js';
import { helloAsRecipient } from '../../src/peer/hello.js';
import { newAttemptSecret, sealSecret } from '../../src/security/attempt-secret.js';
import type { Identity } from '../../src/security/identity.js';
import { rememberKey } from '../../src/security/known-keys.js';
import { generateKeyPair, keyFingerprint, type KeyPairPem } from '../../src/security/keys.js';
import { newEphemeralKey, sessionKey } from '../../src/security/proof.js';
import { secureConnection } from '../../src/security/tls.js';
import { selfCertifyingUri } from '../../src/security/uri.js';
import { ATTEMPT_ID_LENGTH, AttrType, MAX_PRIVATE_ENDPOINTS, MessageClass, Method, StrategyCode } from '../../src/wire/constants.js';
import type { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addPeerKey, addU32, addXorAddress, getAttemptId } from '../../src/wire/nattrav.js';
import { until } from '../helpers/loopback.js';
import { forgeSelfSigned } from './security-helpers.js';

/** What the initiator's application would send first once connected. */
const APPLICATION_DATA = 'APPLICATION-SECRET-0123456789';
/** The attacker's listener that answers the Hello (any of the 16). */
const ANSWERING = 11;

/** One of the attacker's endpoints: what reached it, in clear. */
interface Trap {
  readonly server: Server;
  readonly port: number;
  connections: number;
  received: Buffer;
}

/**
 * A broker that speaks just enough of the exchange: it answers every Connect with
 * the `lan` strategy, 16 PEER-PRIVATE-ENDPOINTs (its traps), a PEER-KEY of its
 * choosing and the attempt secret sealed for the initiator, as a real broker would.
 */
class FakeBroker {
  readonly traps: Trap[] = [];
  exchanges = 0;
  /** The PEER-KEY to announce, if any. */
  peerKey: string | undefined;
  /** The identity the answering trap presents in TLS. */
  identity: Identity | undefined;
  /** Whether the answering trap runs TLS after the Hello (it must match the initiator's SECURITY). */
  tls = true;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #stop = new AbortController();
  port = 0;

  async start(): Promise<void> {
    for (let i = 0; i < MAX_PRIVATE_ENDPOINTS; i++) {
      const trap: Trap = { server: createTcpServer({ allowHalfOpen: true }), port: 0, connections: 0, received: Buffer.alloc(0) };
      trap.server.on('connection', (socket) => this.#caught(trap, i, socket));
      trap.server.listen(0, '127.0.0.1');
      await once(trap.server, 'listening');
      (trap as { port: number }).port = (trap.server.address() as { port: number }).port;
      this.traps.push(trap);
    }
    this.#server = createTcpServer((socket) => this.#exchange(socket));
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    this.port = (this.#server.address() as { port: number }).port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Everything every trap received, in clear. */
  get seen(): string {
    return Buffer.concat(this.traps.map((t) => t.received)).toString('latin1');
  }

  /** The attempt secrets it handed out, by attempt ID (hex). */
  readonly secrets = new Map<string, { attemptId: Uint8Array; attemptSecret: Buffer }>();

  close(): void {
    this.#stop.abort();
    for (const socket of this.#sockets) socket.destroy();
    this.#server?.close();
    for (const trap of this.traps) trap.server.close();
  }

  #exchange(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    const channel: StunChannel = new StunChannel(socket, (request) => {
      if (request.cls !== MessageClass.Request || request.method !== Method.Connect) return;
      this.exchanges++;
      channel.send(this.#answer(request, socket), { fingerprint: true });
      channel.end();
    });
  }

  /** The answer a real broker's rendezvous would build (rendezvous.ts #final), endpoints of the attacker's choosing. */
  #answer(request: StunMessage, socket: Socket): StunMessage {
    const attemptId = getAttemptId(request) ?? new Uint8Array(ATTEMPT_ID_LENGTH).fill(7);
    const attemptSecret = newAttemptSecret();
    this.secrets.set(Buffer.from(attemptId).toString('hex'), { attemptId, attemptSecret });
    const response = request.successResponse();
    addXorAddress(response, AttrType.XorMappedAddress, toTransportAddress(socket.remoteAddress ?? '127.0.0.1', socket.remotePort ?? 0));
    addAttemptId(response, attemptId);
    addXorAddress(response, AttrType.PeerPublicEndpoint, toTransportAddress('127.0.0.1', this.traps[0]?.port ?? 0));
    for (const trap of this.traps) addXorAddress(response, AttrType.PeerPrivateEndpoint, toTransportAddress('127.0.0.1', trap.port));
    addU32(response, AttrType.StartDelay, 0);
    addU32(response, AttrType.Strategy, StrategyCode.lan);
    addU32(response, AttrType.Mapping, encodeMappingKind({ kind: 'none' }));
    addU32(response, AttrType.PeerMapping, encodeMappingKind({ kind: 'none' }));
    if (this.peerKey !== undefined) addPeerKey(response, this.peerKey);
    // The broker's privilege: the attempt secret, sealed for the initiator under its ephemeral key.
    const initiatorKey = request.get(AttrType.EphemeralKey);
    assert.ok(initiatorKey !== undefined, 'the Connect carries the initiator\'s ephemeral key');
    const ours = newEphemeralKey();
    const key = sessionKey(ours, initiatorKey, attemptId);
    assert.ok(key !== undefined);
    response.add(AttrType.EphemeralKey, ours.publicKey);
    response.add(AttrType.AttemptSecret, sealSecret(key, attemptSecret, attemptId));
    return response;
  }

  /** A trap caught a connection: record every byte; the answering one plays the recipient. */
  #caught(trap: Trap, index: number, socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined);
    trap.connections++;
    // The answering trap reads the Hello first; with its reader attached, 'data' still sees every byte read.
    if (index === ANSWERING) void this.#playRecipient(socket).catch(() => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      trap.received = Buffer.concat([trap.received, chunk]);
    });
  }

  /** The Hello with the secret it sealed itself (real peer code), then TLS with its own key. */
  async #playRecipient(socket: Socket): Promise<void> {
    // The initiator dials only after it got the answer, so the attempt's secret is the latest one handed out.
    const attempt = [...this.secrets.values()].at(-1);
    assert.ok(attempt !== undefined, 'a trap was dialed before any exchange');
    await helloAsRecipient(socket, attempt, this.#stop.signal, this.tls);
    if (this.tls) {
      assert.ok(this.identity !== undefined);
      const secured = await secureConnection(socket, { role: 'recipient', identity: this.identity, signal: this.#stop.signal });
      secured.socket.on('data', (chunk: Buffer) => {
        const trap = this.traps[ANSWERING] as Trap;
        trap.received = Buffer.concat([trap.received, Buffer.from('[decrypted]'), chunk]);
      });
    }
  }
}

describe('a fake broker cannot redirect an end-to-end authenticated connection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nattrav-fake-broker-'));
  let fake: FakeBroker;
  let attacker: KeyPairPem;
  /** The real recipient's key (never online here: the fake broker answers instead). */
  const victim = generateKeyPair();

  before(async () => {
    fake = new FakeBroker();
    await fake.start();
    attacker = generateKeyPair();
  });

  after(() => {
    fake.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs connect against the fake broker; writes the application data if it connects; returns the error, if any. */
  async function attack(options: { uri: string; tls: boolean; knownKeysFile: string | false }): Promise<unknown> {
    const exchangesBefore = fake.exchanges;
    const connectionsBefore = fake.traps.map((t) => t.connections);
    try {
      const socket = await connect({ broker: fake.address, uri: options.uri, tls: options.tls, knownKeysFile: options.knownKeysFile, timeoutMs: 15_000 });
      socket.write(APPLICATION_DATA);
      await until(() => fake.seen.includes(APPLICATION_DATA), 5_000, 'the application data at a trap');
      socket.destroy();
      return undefined;
    } catch (err) {
      return err;
    } finally {
      // The premise of the attack: the initiator dialed all 16 endpoints the fake broker chose.
      assert.equal(fake.exchanges, exchangesBefore + 1, 'one exchange: the failure is final, not retried');
      await until(() => fake.traps.every((t, i) => t.connections > (connectionsBefore[i] ?? 0)), 5_000, 'a dial at each of the 16 traps');
    }
  }

  test('self-certifying URI: the trap cannot prove the key the URI names (ERR_TLS), no application byte reaches any trap', async () => {
    const uri = selfCertifyingUri(victim.spki);
    // The strongest forgery: a certificate naming the victim's URI, over the attacker's key.
    fake.identity = { uri, keyPem: attacker.privateKeyPem, certPem: await forgeSelfSigned(attacker, [uri]), ca: [] };
    fake.peerKey = keyFingerprint(victim.spki);
    fake.tls = true;
    const err = await attack({ uri, tls: true, knownKeysFile: false });
    assert.ok(isNattravError(err, ErrorCode.Tls), String(err));
    assert.match((err as Error).message, /certificate key does not match self-certifying URI/);
    assert.ok(!fake.seen.includes(APPLICATION_DATA), 'no application byte reached a trap');
    assert.ok(!fake.seen.includes('[decrypted]'), 'nothing reached the attacker through TLS either');
  });

  test('plain name with a remembered key, the fake broker announcing the real key: the trap cannot prove it (ERR_KEY_MISMATCH)', async () => {
    const uri = 'nattrav://alice';
    const knownKeysFile = join(dir, 'known_keys_real');
    await rememberKey(knownKeysFile, uri, keyFingerprint(victim.spki));
    fake.identity = { uri, keyPem: attacker.privateKeyPem, certPem: await forgeSelfSigned(attacker, [uri]), ca: [] };
    fake.peerKey = keyFingerprint(victim.spki);
    fake.tls = true;
    const err = await attack({ uri, tls: true, knownKeysFile });
    assert.ok(isNattravError(err, ErrorCode.KeyMismatch), String(err));
    assert.match((err as Error).message, new RegExp(`the key of nattrav://alice is ${keyFingerprint(attacker.spki)}, not the expected ${keyFingerprint(victim.spki)}`));
    assert.ok(!fake.seen.includes(APPLICATION_DATA), 'no application byte reached a trap');
    assert.ok(!fake.seen.includes('[decrypted]'), 'nothing reached the attacker through TLS either');
  });

  test('plain name with a remembered key, the fake broker announcing its own key: refused as a changed key (ERR_KEY_MISMATCH)', async () => {
    const uri = 'nattrav://alice';
    const knownKeysFile = join(dir, 'known_keys_own');
    await rememberKey(knownKeysFile, uri, keyFingerprint(victim.spki));
    fake.identity = { uri, keyPem: attacker.privateKeyPem, certPem: await forgeSelfSigned(attacker, [uri]), ca: [] };
    fake.peerKey = keyFingerprint(attacker.spki);
    fake.tls = true;
    const err = await attack({ uri, tls: true, knownKeysFile });
    assert.ok(isNattravError(err, ErrorCode.KeyMismatch), String(err));
    assert.match((err as Error).message, /the key of nattrav:\/\/alice changed/);
    assert.ok(!fake.seen.includes(APPLICATION_DATA), 'no application byte reached a trap');
  });

  test('control: without TLS the same attack receives the application bytes at the trap that answered', async () => {
    fake.tls = false;
    fake.peerKey = undefined;
    const err = await attack({ uri: 'nattrav://bob', tls: false, knownKeysFile: false });
    assert.equal(err, undefined);
    assert.ok((fake.traps[ANSWERING] as Trap).received.toString('latin1').includes(APPLICATION_DATA));
  });
});
