/**
 * Secure registration on loopback: proof of key, no hijacking, no replay, cheap
 * authenticated refreshes, CA-issued names, and detection of a fake broker.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { answerRegister } from '../helpers/register-only-broker.js';
import { SessionTable } from '../../src/broker/sessions.js';
import type { NattravError } from '../../src/errors.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { generateKeyPair, sign, type KeyPairPem } from '../../src/security/keys.js';
import { newEphemeralKey, NonceBook, registrationPayload } from '../../src/security/proof.js';
import { selfCertifyingUri } from '../../src/security/uri.js';
import { createServer } from '../../src/peer/server.js';
import { connect } from '../../src/peer/connect.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { startBroker, startRecipient } from '../helpers/loopback.js';

/** A raw UDP client speaking the registration protocol by hand, as an attacker would. */
class RawPeer {
  constructor(readonly socket: UdpSocket, readonly port: number) {}

  static async open(brokerPort: number): Promise<RawPeer> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return new RawPeer(socket, brokerPort);
  }

  async send(bytes: Buffer): Promise<StunMessage> {
    const reply = once(this.socket, 'message');
    this.socket.send(bytes, this.port, '127.0.0.1');
    const [data] = (await Promise.race([reply, new Promise((_, reject) => setTimeout(() => reject(new Error('no answer')), 2000))])) as [Buffer];
    return decodeMessage(data);
  }

  /** Builds a signed Register for `uri` with `key` after asking for a nonce; returns the final request's bytes. */
  async signedRegister(uri: string, key: KeyPairPem, lifetimeMs = 30_000): Promise<{ bytes: Buffer; challenge: StunMessage }> {
    const first = StunMessage.request(Method.Register);
    addUri(first, uri);
    addU32(first, AttrType.Lifetime, lifetimeMs);
    first.add(AttrType.PublicKey, key.spki);
    const challenge = await this.send(encodeMessage(first));
    const nonce = challenge.get(AttrType.Nonce);
    assert.ok(nonce, `a challenge with a NONCE, got ${JSON.stringify(getErrorCode(challenge))}`);
    const ephemeral = newEphemeralKey();
    const proof = StunMessage.request(Method.Register);
    addUri(proof, uri);
    addU32(proof, AttrType.Lifetime, lifetimeMs);
    proof.add(AttrType.PublicKey, key.spki);
    proof.add(AttrType.Nonce, nonce);
    proof.add(AttrType.EphemeralKey, ephemeral.publicKey);
    proof.add(AttrType.Signature, sign(key.privateKeyPem, registrationPayload({ nonce, uri, ephemeralKey: ephemeral.publicKey, lifetimeMs, transport: 'udp' })));
    return { bytes: encodeMessage(proof), challenge };
  }

  close(): void {
    this.socket.close();
  }
}

function errorCodeOf(message: StunMessage): number | undefined {
  return message.cls === MessageClass.ErrorResponse ? getErrorCode(message)?.code : undefined;
}

describe('secure registration', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-keys-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  test('registering needs proof of key: a bare Register gets 401 and a nonce; a signed one succeeds', async () => {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const peer = await RawPeer.open(broker.address().port);
    closers.push(() => peer.close());
    const bare = StunMessage.request(Method.Register);
    addUri(bare, 'nattrav://alice');
    assert.equal(errorCodeOf(await peer.send(encodeMessage(bare))), StunErrorCode.Unauthorized);
    assert.equal(await broker.registry.get('nattrav://alice'), undefined);
    const key = generateKeyPair();
    const { bytes, challenge } = await peer.signedRegister('nattrav://alice', key);
    assert.equal(errorCodeOf(challenge), StunErrorCode.Unauthorized);
    const ok = await peer.send(bytes);
    assert.equal(ok.cls, MessageClass.SuccessResponse);
    assert.ok(ok.has(AttrType.MessageIntegritySha256), 'the answer carries integrity under the new session key');
    assert.ok((await broker.registry.get('nattrav://alice'))?.keyFingerprint);
  });

  test('a captured registration cannot be replayed, from the same or another source', async () => {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const peer = await RawPeer.open(broker.address().port);
    const attacker = await RawPeer.open(broker.address().port);
    closers.push(() => peer.close(), () => attacker.close());
    const { bytes } = await peer.signedRegister('nattrav://bob', generateKeyPair());
    assert.equal((await peer.send(bytes)).cls, MessageClass.SuccessResponse);
    const again = await peer.send(bytes);
    assert.equal(errorCodeOf(again), StunErrorCode.Forbidden);
    assert.match(getErrorCode(again)?.reason ?? '', /replayed/);
    // From another address the nonce is not valid at all (it is bound to its source).
    assert.equal(errorCodeOf(await attacker.send(bytes)), StunErrorCode.Unauthorized);
  });

  test('a second key cannot take over a plain name while it is held; after it lapses, it can', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const { server } = await startRecipient(address, 'nattrav://carol', { keyDir: join(keyDir, 'owner'), keepaliveMs: 200, lifetimeMs: 800 });
    const rogue = createServer({ broker: address, uri: 'nattrav://carol', keyDir: join(keyDir, 'rogue'), once: true });
    const [error] = (await Promise.all([once(rogue, 'error'), rogue.listen()]))[0] as [NattravError];
    assert.equal(error.code, 'ERR_FORBIDDEN');
    assert.match(error.message, /nattrav:\/\/carol is registered by another key/);
    // The owner still holds it and is reachable.
    const socket = await connect({ broker: address, uri: 'nattrav://carol' });
    socket.destroy();
    server.close();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const successor = await startRecipient(address, 'nattrav://carol', { keyDir: join(keyDir, 'rogue') });
    closers.push(() => successor.server.close());
    assert.ok(successor.server.listening);
  });

  test('refreshes need integrity under the session key and a fresh sequence number', async () => {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const peer = await RawPeer.open(broker.address().port);
    closers.push(() => peer.close());
    const { bytes } = await peer.signedRegister('nattrav://dave', generateKeyPair());
    const ok = await peer.send(bytes);
    const sessionId = ok.get(AttrType.Username) as Uint8Array;
    const forged = StunMessage.request(Method.Register);
    addUri(forged, 'nattrav://dave');
    forged.add(AttrType.Username, sessionId);
    addU32(forged, AttrType.Sequence, 1);
    assert.equal(errorCodeOf(await peer.send(encodeMessage(forged, { integritySha256Key: Buffer.alloc(32, 7) }))), StunErrorCode.Unauthorized, 'wrong key');
    assert.equal(errorCodeOf(await peer.send(encodeMessage(forged))), StunErrorCode.Unauthorized, 'no integrity');
  });

  test('a self-certifying URI can only be registered with its own key', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const peer = await RawPeer.open(broker.address().port);
    closers.push(() => peer.close());
    const owner = generateKeyPair();
    const uri = selfCertifyingUri(owner.spki);
    const { bytes } = await peer.signedRegister(uri, generateKeyPair());
    const refused = await peer.send(bytes);
    assert.equal(errorCodeOf(refused), StunErrorCode.Forbidden);
    assert.match(getErrorCode(refused)?.reason ?? '', /does not match the self-certifying URI/);
    const good = await peer.signedRegister(uri, owner);
    assert.equal((await peer.send(good.bytes)).cls, MessageClass.SuccessResponse);
    void address;
  });

  test('with a CA, a plain name needs a certificate from that CA naming it', async () => {
    const ca = await createCa({ name: 'test CA' });
    const other = await createCa({ name: 'other CA' });
    const { broker, address } = await startBroker({ ca: ca.certPem });
    closers.push(() => broker.close());
    const issued = await issueCertificate({ ca, uri: 'nattrav://erin' });
    const good = await startRecipient(address, 'nattrav://erin', { identity: { uri: 'nattrav://erin', keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] } });
    closers.push(() => good.server.close());
    const cases: Array<[string, { certPem: string; keyPem: string } | undefined, RegExp]> = [
      ['nattrav://frank', undefined, /needs a certificate from its CA naming nattrav:\/\/frank/],
      ['nattrav://frank', await issueCertificate({ ca, uri: 'nattrav://someone-else' }), /names nattrav:\/\/someone-else, not nattrav:\/\/frank/],
      ['nattrav://frank', await issueCertificate({ ca: other, uri: 'nattrav://frank' }), /not issued by the broker's CA/],
      ['nattrav://frank', await issueCertificate({ ca, uri: 'nattrav://frank', notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) }), /expired/],
    ];
    for (const [uri, cert, reason] of cases) {
      const server = createServer({
        broker: address,
        uri,
        keyDir: join(keyDir, 'ca-case'),
        once: true,
        ...(cert === undefined ? {} : { identity: { uri, keyPem: cert.keyPem, certPem: cert.certPem, ca: [] } }),
      });
      const [error] = (await Promise.all([once(server, 'error'), server.listen()]))[0] as [NattravError];
      assert.equal(error.code, 'ERR_FORBIDDEN', error.message);
      assert.match(error.message, reason);
    }
  });

  test('a peer that trusts a broker CA detects a fake broker', async () => {
    const brokerCa = await createCa({ name: 'broker CA' });
    const real = await issueCertificate({ ca: brokerCa, uri: 'nattrav-broker://real' });
    const impostorCa = await createCa({ name: 'impostor CA' });
    const impostor = await issueCertificate({ ca: impostorCa, uri: 'nattrav-broker://real' });

    const genuine = await startBroker({ cert: real.certPem, key: real.keyPem });
    closers.push(() => genuine.broker.close());
    const ok = await startRecipient(genuine.address, 'nattrav://grace', { brokerCa: brokerCa.certPem, keyDir: join(keyDir, 'grace') });
    closers.push(() => ok.server.close());

    // Over TCP too: exchanges run over TLS (STARTTLS) and the connection is made.
    const socket = await connect({ broker: genuine.address, uri: 'nattrav://grace', brokerCa: brokerCa.certPem });
    assert.equal(socket.nattrav.path, 'public');
    socket.destroy();
    for (const fake of [await startBroker({ cert: impostor.certPem, key: impostor.keyPem }), await startBroker(), await startBroker({ open: true })]) {
      closers.push(() => fake.broker.close());
      const victim = createServer({ broker: fake.address, uri: 'nattrav://grace', brokerCa: brokerCa.certPem, keyDir: join(keyDir, 'grace'), once: true });
      const [error] = (await Promise.all([once(victim, 'error'), victim.listen()]))[0] as [NattravError];
      assert.equal(error.code, 'ERR_BROKER_AUTH', error.message);
      await assert.rejects(connect({ broker: fake.address, uri: 'nattrav://grace', brokerCa: brokerCa.certPem }), (err: NattravError) => {
        assert.equal(err.code, 'ERR_BROKER_AUTH', err.message);
        return true;
      });
    }
  });

  test('a broker presenting a peer certificate from the trusted CA is refused, over UDP and TCP', async () => {
    const ca = await createCa({ name: 'one CA for brokers and peers' });
    // mallory holds a genuine peer certificate of the CA and runs a broker with it.
    const mallory = await issueCertificate({ ca, uri: 'nattrav://mallory' });
    const impersonator = await startBroker({ cert: mallory.certPem, key: mallory.keyPem });
    closers.push(() => impersonator.broker.close());
    const victim = createServer({ broker: impersonator.address, uri: 'nattrav://heidi', brokerCa: ca.certPem, keyDir: join(keyDir, 'heidi'), once: true });
    const [error] = (await Promise.all([once(victim, 'error'), victim.listen()]))[0] as [NattravError];
    assert.equal(error.code, 'ERR_BROKER_AUTH', error.message);
    assert.match(error.message, /names the peer nattrav:\/\/mallory: a peer's certificate cannot authenticate a broker/);
    await assert.rejects(connect({ broker: impersonator.address, uri: 'nattrav://heidi', brokerCa: ca.certPem }), (err: NattravError) => {
      assert.equal(err.code, 'ERR_BROKER_AUTH', err.message);
      assert.match(err.message, /a peer's certificate cannot authenticate a broker/);
      return true;
    });
    // The same CA's broker certificate (nattrav-broker://) is accepted.
    const real = await issueCertificate({ ca, uri: 'nattrav-broker://real' });
    const genuine = await startBroker({ cert: real.certPem, key: real.keyPem });
    closers.push(() => genuine.broker.close());
    const ok = await startRecipient(genuine.address, 'nattrav://heidi', { brokerCa: ca.certPem, keyDir: join(keyDir, 'heidi') });
    closers.push(() => ok.server.close());
    const socket = await connect({ broker: genuine.address, uri: 'nattrav://heidi', brokerCa: ca.certPem, knownKeysFile: false });
    socket.destroy();
  });

  test('a recipient acts only on connection requests under its session key', async () => {
    // A minimal broker on one UDP socket: real registration handling, and requests we forge at will.
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    closers.push(() => socket.close());
    const auth = { mode: 'authenticated' as const, nonces: new NonceBook(), sessions: new SessionTable(10) };
    let recipient: { address: string; port: number } | undefined;
    socket.on('message', (data: Buffer, rinfo) => {
      const message = decodeMessage(data);
      if (message.method !== Method.Register || message.cls !== MessageClass.Request) return;
      recipient = { address: rinfo.address, port: rinfo.port };
      answerRegister(socket, auth, message, rinfo);
    });
    const server = createServer({ broker: `127.0.0.1:${socket.address().port}`, uri: 'nattrav://heidi', keyDir: join(keyDir, 'heidi'), exchangeTimeoutMs: 200 });
    closers.push(() => server.close());
    let actedOn = 0;
    server.on('attemptFailed', () => actedOn++); // joining fails here: this broker has no TCP side
    server.listen();
    await once(server, 'listening');
    const to = recipient as { address: string; port: number };
    const request = (): StunMessage => StunMessage.request(Method.ConnectionRequest).add(AttrType.AttemptId, randomBytes(16));
    socket.send(encodeMessage(request(), { fingerprint: true }), to.port, to.address);
    socket.send(encodeMessage(request(), { fingerprint: true, integritySha256Key: Buffer.alloc(32, 9) }), to.port, to.address);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(actedOn, 0, 'requests without (or with wrong) integrity are ignored');
    const key = auth.sessions.byUri('nattrav://heidi')?.key as Buffer;
    socket.send(encodeMessage(request(), { fingerprint: true, integritySha256Key: key }), to.port, to.address);
    const deadline = Date.now() + 3_000;
    while (actedOn === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(actedOn, 1, 'a request under the session key is acted on');
  });
});
