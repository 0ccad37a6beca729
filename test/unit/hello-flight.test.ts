/**
 * The Hello without its own round trip (issue 13 item 2, peer/hello.ts): with TLS the
 * initiator's Hello and ClientHello go in one flight and the recipient answers with TLS only;
 * without TLS both proofs are written at once and checked on arrival. Mismatches fail on both
 * sides with today's reasons, reflected proofs and bystanders are refused, and the
 * compatibility with older peers is what peer/hello.ts says.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type PeerCertificate, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isNattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { helloAsInitiator, helloAsRecipient, initiatorHello, type HelloAttempt } from '../../src/peer/hello.js';
import { explainTlsFlightFailure } from '../../src/peer/secure.js';
import { readOneMessage } from '../../src/peer/sockets.js';
import { SocketRace } from '../../src/peer/strategies/race.js';
import type { StrategyContext } from '../../src/peer/strategies/types.js';
import { newAttemptSecret } from '../../src/security/attempt-secret.js';
import { newSelfCertifyingIdentity, type Identity } from '../../src/security/identity.js';
import { secureConnection } from '../../src/security/tls.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { ATTEMPT_ID_LENGTH, AttrType, MessageClass, Method, SecurityMode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, getRole, getSecurityMode } from '../../src/wire/nattrav.js';
import { quietSocketPair, startBroker, startRecipient, until } from '../helpers/loopback.js';

/** The first byte of a TLS handshake record (RFC 8446 section 5.1, ContentType handshake). */
const TLS_HANDSHAKE_RECORD = 0x16;
/** STUN header length (RFC 8489 section 5): the message length field does not count it. */
const STUN_HEADER_BYTES = 20;

function newAttempt(): HelloAttempt {
  return { attemptId: randomBytes(ATTEMPT_ID_LENGTH), attemptSecret: newAttemptSecret() };
}

const signal = (): AbortSignal => AbortSignal.timeout(5_000);

/** The code and message of what `promise` rejected with. */
async function failure(promise: Promise<unknown>): Promise<{ code: string | undefined; message: string; error: unknown }> {
  try {
    await promise;
  } catch (error) {
    return { code: (error as { code?: string }).code, message: (error as Error).message, error };
  }
  assert.fail('expected a rejection');
}

describe('the Hello without its own round trip', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nattrav-hello-'));
  const closers: Array<() => unknown> = [];
  let initiatorId: Identity;
  let recipientId: Identity;
  before(async () => {
    initiatorId = await newSelfCertifyingIdentity({ dir: join(dir, 'initiator') });
    recipientId = await newSelfCertifyingIdentity({ dir: join(dir, 'recipient') });
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(dir, { recursive: true, force: true });
  });

  const pair = (): Promise<{ a: Socket; b: Socket }> => quietSocketPair(closers);

  const tlsClient = (socket: Socket): ReturnType<typeof secureConnection> =>
    secureConnection(socket, { role: 'initiator', identity: initiatorId, expectedPeerUri: recipientId.uri, signal: signal() });

  test('SECURITY on the wire: u32 0x4e12, 2 = the TLS flight, 3 = plain proofs; an unknown value is malformed', () => {
    for (const [value, mode] of [[2, SecurityMode.TlsFlight], [3, SecurityMode.PlainProofs]] as const) {
      // Type 0x3816 (Hello 0xe06 as an indication, RFC 8489 section 5), length 8, cookie, a zero transaction ID; SECURITY (0x4e12), length 4, the value.
      const bytes = Buffer.from(`381600082112a442${'00'.repeat(12)}4e120004${value.toString(16).padStart(8, '0')}`, 'hex');
      const message = decodeMessage(bytes);
      assert.equal(message.method, Method.Hello);
      assert.equal(message.cls, MessageClass.Indication);
      assert.equal(getSecurityMode(message), mode);
    }
    const unknown = Buffer.from(`381600082112a442${'00'.repeat(12)}4e12000400000006`, 'hex');
    assert.throws(() => getSecurityMode(decodeMessage(unknown)), /SECURITY 6 is not a known mode/);
  });

  test('which Hello the initiator runs: plain without TLS; the flight only with one candidate and a checked recipient key', () => {
    assert.equal(initiatorHello(false, 'direct', true), 'plain');
    assert.equal(initiatorHello(true, 'direct', true), 'tls-flight');
    assert.equal(initiatorHello(true, 'relay', true), 'tls-flight');
    assert.equal(initiatorHello(true, 'direct', false), 'tls-answered');
    for (const racing of ['lan', 'reversal', 'predicted', 'birthday'] as const) assert.equal(initiatorHello(true, racing, true), 'tls-answered', racing);
    assert.equal(initiatorHello(true, 'predicted', true, true), 'tls-flight', 'predicted aiming at one endpoint (a cone) holds one candidate at a time');
    assert.equal(initiatorHello(true, 'predicted', false, true), 'tls-answered', 'only where TLS authenticates the recipient');
    assert.equal(initiatorHello(false, 'predicted', true, true), 'plain');
  });

  test('TLS flight: Hello and ClientHello arrive together before the recipient wrote a byte; the recipient answers with TLS alone', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await helloAsInitiator(a, attempt, signal(), 'tls-flight');
    const client = tlsClient(a);
    await until(() => b.readableLength > STUN_HEADER_BYTES + 5, 5_000, 'the first flight');
    const flight = b.read() as Buffer;
    b.unshift(flight);
    const helloBytes = STUN_HEADER_BYTES + flight.readUInt16BE(2);
    assert.equal(flight[helloBytes], TLS_HANDSHAKE_RECORD, 'a TLS handshake record follows the Hello directly');
    assert.equal(b.bytesWritten, 0, 'the initiator sent its ClientHello with nothing from the recipient');
    await helloAsRecipient(b, attempt, signal(), true);
    assert.equal(b.bytesWritten, 0, 'the recipient wrote no answer to the Hello');
    const [c, s] = await Promise.all([client, secureConnection(b, { role: 'recipient', identity: recipientId, signal: signal() })]);
    assert.equal(c.peerUri, recipientId.uri);
    assert.equal(s.peerUri, initiatorId.uri);
    c.socket.write('after the handshake');
    await until(() => s.socket.readableLength > 0, 5_000, 'application data');
    assert.equal(String(s.socket.read()), 'after the handshake');
    c.socket.destroy();
    s.socket.destroy();
  });

  test('an older initiator (the answered Hello, SECURITY tls) still gets its answer from a new recipient, then TLS', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await Promise.all([helloAsInitiator(a, attempt, signal(), 'tls-answered'), helloAsRecipient(b, attempt, signal(), true)]);
    assert.ok(b.bytesWritten > 0, 'the recipient answered');
    const [c, s] = await Promise.all([tlsClient(a), secureConnection(b, { role: 'recipient', identity: recipientId, signal: signal() })]);
    assert.equal(c.peerUri, recipientId.uri);
    c.socket.destroy();
    s.socket.destroy();
  });

  test('bystanders: a ClientHello without a Hello, or after a Hello without the secret, never reaches the TLS server', async () => {
    const attempt = newAttempt();
    const bare = await pair();
    void tlsClient(bare.a).catch(() => undefined);
    const noHello = await failure(helloAsRecipient(bare.b, attempt, signal(), true));
    // TLS bytes are no STUN message: refused as the codec reads them.
    assert.match(noHello.message, /magic cookie is not 0x2112A442/);
    assert.equal(bare.b.bytesWritten, 0);
    const forged = await pair();
    await helloAsInitiator(forged.a, { attemptId: attempt.attemptId, attemptSecret: newAttemptSecret() }, signal(), 'tls-flight');
    void tlsClient(forged.a).catch(() => undefined);
    const noSecret = await failure(helloAsRecipient(forged.b, attempt, signal(), true));
    assert.match(noSecret.message, /did not prove the attempt secret: it is not the initiator/);
    assert.equal(forged.b.bytesWritten, 0);
  });

  test('a TLS flight to a plain recipient: ERR_PLAIN_REQUIRED on the initiator (from the TLS error), ERR_TLS_REQUIRED on the recipient', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await helloAsInitiator(a, attempt, signal(), 'tls-flight');
    const recipient = failure(helloAsRecipient(b, attempt, signal(), false));
    const tls = await failure(tlsClient(a));
    const explained = explainTlsFlightFailure(tls.error);
    assert.ok(isNattravError(explained, 'ERR_PLAIN_REQUIRED'), String(explained));
    assert.match((explained as Error).message, /the recipient runs without TLS and this side requires it \(drop --tls/);
    const theirs = await recipient;
    assert.equal(theirs.code, 'ERR_TLS_REQUIRED');
    assert.match(theirs.message, /the initiator requires TLS and this side runs without it/);
  });

  test('the answered Hello to a plain recipient: ERR_PLAIN_REQUIRED on the initiator (from the recipient\'s proof, which comes first), ERR_TLS_REQUIRED on the recipient', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    const [initiator, recipient] = await Promise.all([failure(helloAsInitiator(a, attempt, signal(), 'tls-answered')), failure(helloAsRecipient(b, attempt, signal(), false))]);
    assert.equal(initiator.code, 'ERR_PLAIN_REQUIRED', initiator.message);
    assert.match(initiator.message, /the recipient runs without TLS and this side requires it/);
    assert.equal(recipient.code, 'ERR_TLS_REQUIRED', recipient.message);
  });

  test('a racing strategy (lan, reversal, predicted, birthday: the answered Hello) to a plain recipient ends at once with ERR_PLAIN_REQUIRED, not at its time limit', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    const recipient = failure(helloAsRecipient(b, attempt, signal(), false));
    const limit = AbortSignal.timeout(5_000);
    // Only what SocketRace reads: the time limit and the initiator's Hello (as attempt.ts runs it for lan).
    const race = new SocketRace({ signal: limit, verify: (socket) => helloAsInitiator(socket, attempt, signal(), initiatorHello(true, 'lan', true)) } as StrategyContext);
    race.add(a, true);
    const started = performance.now();
    const result = await failure(race.result);
    assert.equal(result.code, 'ERR_PLAIN_REQUIRED', result.message);
    assert.ok(!limit.aborted && performance.now() - started < 4_000, 'the race ended on the mismatch, not on its time limit');
    assert.equal((await recipient).code, 'ERR_TLS_REQUIRED');
  });

  test('a plain initiator and a TLS recipient: ERR_TLS_REQUIRED on the initiator, ERR_PLAIN_REQUIRED on the recipient', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    const [initiator, recipient] = await Promise.all([failure(helloAsInitiator(a, attempt, signal(), 'plain')), failure(helloAsRecipient(b, attempt, signal(), true))]);
    assert.equal(initiator.code, 'ERR_TLS_REQUIRED');
    assert.match(initiator.message, /the recipient requires TLS/);
    assert.equal(recipient.code, 'ERR_PLAIN_REQUIRED');
    assert.match(recipient.message, /the initiator runs without TLS/);
  });

  test('through connect(): a TLS initiator to a plain recipient fails from the flight (a TLS record error, not a time limit); tlsMs is reported with TLS', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const plain = await startRecipient(address, recipientId.uri, { identity: recipientId, tls: false });
    const mismatch = await failure(connect({ broker: address, uri: recipientId.uri, knownKeysFile: false }));
    await plain.server.close();
    assert.equal(mismatch.code, 'ERR_PLAIN_REQUIRED', mismatch.message);
    let cause: unknown = mismatch.error;
    while (cause instanceof Error && (cause as { code?: string }).code?.startsWith('ERR_SSL_') !== true) cause = cause.cause;
    assert.equal((cause as { code?: string } | undefined)?.code, 'ERR_SSL_WRONG_VERSION_NUMBER', 'the recipient\'s plain answer reached the initiator\'s TLS layer');
    const secured = await startRecipient(address, recipientId.uri, { identity: recipientId });
    closers.push(() => secured.server.close());
    const socket = await connect({ broker: address, uri: recipientId.uri, knownKeysFile: false });
    closers.push(() => socket.destroy());
    const info = socket.nattrav;
    assert.equal(info.tls, true);
    assert.ok(info.tlsMs !== undefined && info.tlsMs >= 0 && info.tlsMs <= info.setupMs, `tlsMs ${String(info.tlsMs)} of setupMs ${info.setupMs}`);
  });

  test('plain: the recipient writes its proof before it received anything; each checks the other\'s, then data flows', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    const recipient = helloAsRecipient(b, attempt, signal(), false);
    await until(() => a.readableLength > 0, 5_000, 'the recipient\'s proof');
    assert.equal(a.bytesWritten, 0, 'the recipient did not wait for the initiator');
    await Promise.all([helloAsInitiator(a, attempt, signal(), 'plain'), recipient]);
    a.write('application');
    await until(() => b.readableLength > 0, 5_000, 'application data');
    assert.equal(String(b.read()), 'application');
  });

  test('plain: a reflected proof is refused on both sides (its ROLE is the sender\'s)', async () => {
    const attempt = newAttempt();
    const toInitiator = await pair();
    toInitiator.b.pipe(toInitiator.b);
    assert.match((await failure(helloAsInitiator(toInitiator.a, attempt, signal(), 'plain'))).message, /not the recipient's \(our own Hello reflected\?\)/);
    const toRecipient = await pair();
    toRecipient.a.pipe(toRecipient.a);
    assert.match((await failure(helloAsRecipient(toRecipient.b, attempt, signal(), false))).message, /a recipient's Hello \(our own proof reflected\?\)/);
  });

  test('plain: a proof without the secret is refused by the initiator', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    void helloAsRecipient(b, { attemptId: attempt.attemptId, attemptSecret: newAttemptSecret() }, signal(), false).catch(() => undefined);
    assert.match((await failure(helloAsInitiator(a, attempt, signal(), 'plain'))).message, /did not prove the attempt secret/);
  });

  test('older recipients close on the new Hellos (they do not know its SECURITY): both initiators say to upgrade', async () => {
    for (const way of ['tls-flight', 'plain'] as const) {
      const { a, b } = await pair();
      const attempt = newAttempt();
      // What nattrav before this change does: read the Hello, fail to decode SECURITY, close.
      void readOneMessage(b, signal()).then(() => b.destroy());
      const result = way === 'plain' ? await failure(helloAsInitiator(a, attempt, signal(), way)) : await helloAsInitiator(a, attempt, signal(), way).then(() => failure(tlsClient(a)));
      const message = way === 'plain' ? result.message : (explainTlsFlightFailure(result.error) as Error).message;
      assert.match(message, /an older nattrav closes on a Hello it does not know: upgrade it/, way);
    }
  });

  test('an older plain initiator (a Hello request with SECURITY plain, waiting for an answer): the recipient says to upgrade it; the initiator reads the proof, not an answer', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    const old = StunMessage.request(Method.Hello);
    addAttemptId(old, attempt.attemptId);
    addU32(old, AttrType.Security, SecurityMode.Plain);
    a.write(encodeMessage(old, { integritySha256Key: attempt.attemptSecret, fingerprint: true }));
    assert.match((await failure(helloAsRecipient(b, attempt, signal(), false))).message, /older than the plain proofs without a round trip: upgrade it/);
    // What it reads first is the recipient's proof, an indication it does not take for an answer (older
    // nattrav: "did not accept our Hello", ERR_PROTOCOL); a refusal written after it would never be read.
    const proof = await readOneMessage(a, signal());
    assert.equal(proof.cls, MessageClass.Indication);
    assert.equal(getRole(proof), 'recipient');
  });

  test('why TLS resumption stays off: on a resumed TLS 1.3 session Node gives the client no peer certificate', async () => {
    const seenByServer: Array<PeerCertificate | undefined> = [];
    const server = createTlsServer({ key: recipientId.keyPem, cert: recipientId.certPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, (socket) => {
      seenByServer.push(socket.getPeerX509Certificate() === undefined ? undefined : socket.getPeerCertificate());
      socket.end('x');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => server.close());
    const port = (server.address() as { port: number }).port;
    let session: Buffer | undefined;
    const once = (): Promise<{ reused: boolean; peer: unknown }> =>
      new Promise((resolve, reject) => {
        const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, key: initiatorId.keyPem, cert: initiatorId.certPem, rejectUnauthorized: false, checkServerIdentity: () => undefined, ...(session === undefined ? {} : { session }) });
        let result: { reused: boolean; peer: unknown } | undefined;
        socket.once('secureConnect', () => (result = { reused: socket.isSessionReused(), peer: socket.getPeerX509Certificate() }));
        socket.on('session', (ticket: Buffer) => (session = ticket));
        socket.on('error', reject);
        socket.resume();
        // The ticket comes after the handshake: wait for the server's end, which follows it.
        socket.once('end', () => {
          socket.end();
          if (result === undefined) reject(new Error('no handshake'));
          else resolve(result);
        });
      });
    const first = await once();
    assert.equal(first.reused, false);
    assert.ok(first.peer !== undefined, 'a full handshake shows the recipient\'s certificate');
    assert.ok(session !== undefined, 'the server sent a ticket');
    const resumed = await once();
    assert.equal(resumed.reused, true);
    assert.equal(resumed.peer, undefined, 'if Node now re-establishes the peer on resumption, reconsider README "The Hello"');
    assert.equal(seenByServer.length, 2);
    assert.ok(seenByServer[1] !== undefined, 'the server still sees the client\'s certificate, from the ticket');
  });
});
