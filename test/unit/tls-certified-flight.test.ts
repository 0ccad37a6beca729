/**
 * The certified flight (issue 13 item 2; security/tls.ts, peer/hello.ts): the initiator's
 * certificate rides in its Hello, the recipient decides on it (and its allow-list) before its
 * TLS answer and says the outcome by ALPN, so the initiator hands the connection over as soon
 * as its own handshake is done and the recipient's certificate checked, without waiting for a
 * confirmation: one peer round trip less. Refusals still reach the initiator with their reason,
 * and a certificate in the Hello unlike the one in TLS is refused.
 */
import assert from 'node:assert/strict';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { TLSSocket, createSecureContext } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCode } from '../../src/errors.js';
import { helloAsInitiator, helloAsRecipient, helloCertificateOf, sentHelloCertificate, type HelloAttempt } from '../../src/peer/hello.js';
import { closedDuringTls, explainTlsFlightFailure } from '../../src/peer/secure.js';
import { readOneMessage } from '../../src/peer/sockets.js';
import { newAttemptSecret, openHelloCertificate } from '../../src/security/attempt-secret.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { checkedIdentity, newSelfCertifyingIdentity, type Identity } from '../../src/security/identity.js';
import { ADMITTED_ALPN, NATTRAV_ALPN, REFUSED_ALPN, secureConnection, type SecureConnection, type SecureConnectionOptions } from '../../src/security/tls.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { ATTEMPT_ID_LENGTH, AttrType, HELLO_CERTIFICATE_SEAL_BYTES, MAX_HELLO_CERTIFICATE_BYTES, Method, SecurityMode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addInitiatorCertificate, addRole, addU32, getInitiatorCertificate, getSecurityMode } from '../../src/wire/nattrav.js';
import { quietSocketPair, until } from '../helpers/loopback.js';

const signal = (): AbortSignal => AbortSignal.timeout(5_000);
const der = (identity: Identity): Uint8Array => new X509Certificate(identity.certPem).raw;

function newAttempt(): HelloAttempt {
  return { attemptId: randomBytes(ATTEMPT_ID_LENGTH), attemptSecret: newAttemptSecret() };
}

/** A Hello with SECURITY tls-flight-certified and `sealed` as INITIATOR-CERTIFICATE (none when undefined), with integrity under the attempt's secret. */
function certifiedHelloByHand(attempt: HelloAttempt, sealed?: Uint8Array): Buffer {
  const hello = StunMessage.request(Method.Hello);
  addAttemptId(hello, attempt.attemptId);
  addU32(hello, AttrType.Security, SecurityMode.TlsFlightCertified);
  addRole(hello, 'initiator');
  if (sealed !== undefined) addInitiatorCertificate(hello, sealed);
  return encodeMessage(hello, { integritySha256Key: attempt.attemptSecret, fingerprint: true });
}

/** What `promise` rejected with (fails the test if it resolved). */
async function rejection(promise: Promise<unknown>): Promise<{ code: string | undefined; message: string }> {
  try {
    await promise;
  } catch (error) {
    return { code: (error as { code?: string }).code, message: (error as Error).message };
  }
  assert.fail('expected a rejection');
}

describe('the certified flight', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nattrav-certified-'));
  const closers: Array<() => unknown> = [];
  let alice: Identity;
  let bob: Identity;
  before(async () => {
    [alice, bob] = await Promise.all([newSelfCertifyingIdentity({ dir: join(dir, 'alice') }), newSelfCertifyingIdentity({ dir: join(dir, 'bob') })]);
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(dir, { recursive: true, force: true });
  });

  const pair = (): Promise<{ a: Socket; b: Socket }> => quietSocketPair(closers);

  /** Hello with `helloIdentity`'s certificate, then TLS with `initiator`'s on `a`, the recipient's Hello and TLS on `b`. */
  async function run(
    initiator: Identity,
    recipient: Identity,
    options: { helloIdentity?: Identity; recipient?: Partial<SecureConnectionOptions> } = {},
  ): Promise<{ a: Socket; b: Socket; initiator: Promise<SecureConnection>; recipient: Promise<SecureConnection>; order: string[] }> {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await helloAsInitiator(a, attempt, signal(), 'tls-flight', der(options.helloIdentity ?? initiator));
    assert.equal(sentHelloCertificate(a), true);
    const order: string[] = [];
    const client = secureConnection(a, { role: 'initiator', identity: initiator, expectedPeerUri: recipient.uri, certifiedFlight: true, signal: signal() });
    await helloAsRecipient(b, attempt, signal(), true);
    const certificate = helloCertificateOf(b);
    assert.ok(certificate !== undefined, 'the recipient kept the Hello\'s certificate');
    const server = secureConnection(b, { role: 'recipient', identity: recipient, helloCertificate: certificate, signal: signal(), ...options.recipient });
    void client.then(() => order.push('initiator'), () => undefined);
    void server.then(() => order.push('recipient'), () => undefined);
    return { a, b, initiator: client, recipient: server, order };
  }

  test('INITIATOR-CERTIFICATE 0x4e22 with SECURITY 4 in the Hello, sealed under the attempt secret (the DER is not on the wire); bad lengths are refused by name', async () => {
    assert.equal(AttrType.InitiatorCertificate, 0x4e22);
    assert.equal(SecurityMode.TlsFlightCertified, 4);
    assert.equal(SecurityMode.TlsAnsweredCertified, 5);
    const { a, b } = await pair();
    const attempt = newAttempt();
    await helloAsInitiator(a, attempt, signal(), 'tls-flight', der(alice));
    await until(() => b.readableLength > 0, 5_000, 'the Hello');
    const bytes = b.read() as Buffer;
    b.unshift(bytes);
    assert.equal(bytes.includes(Buffer.from(der(alice))), false, 'the certificate is not in the clear');
    assert.equal(bytes.includes(Buffer.from(alice.uri)), false, 'nor the initiator\'s URI');
    const hello = await readOneMessage(b, signal());
    assert.equal(getSecurityMode(hello), SecurityMode.TlsFlightCertified);
    const sealed = getInitiatorCertificate(hello) ?? new Uint8Array();
    assert.equal(sealed.length, der(alice).length + HELLO_CERTIFICATE_SEAL_BYTES);
    assert.deepEqual(openHelloCertificate(attempt.attemptSecret, attempt.attemptId, sealed), Buffer.from(der(alice)));
    assert.equal(openHelloCertificate(newAttemptSecret(), attempt.attemptId, sealed), undefined, 'another secret cannot open it');
    assert.throws(() => addInitiatorCertificate(StunMessage.request(Method.Hello), new Uint8Array(28)), /sealed initiator certificate must be 29 to 3100 bytes, got 28/);
    assert.throws(() => addInitiatorCertificate(StunMessage.request(Method.Hello), new Uint8Array(MAX_HELLO_CERTIFICATE_BYTES + HELLO_CERTIFICATE_SEAL_BYTES + 1)), /got 3101/);
    const empty = Buffer.from(`011100042112a442${'00'.repeat(12)}4e220000`, 'hex');
    assert.throws(() => getInitiatorCertificate(decodeMessage(empty)), /INITIATOR-CERTIFICATE is 0 bytes, not 29 to 3100/);
  });

  test('a certificate not sealed under the attempt secret (but the Hello\'s integrity is): refused, naming it', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    a.write(certifiedHelloByHand(attempt, randomBytes(200)));
    const refused = await rejection(helloAsRecipient(b, attempt, signal(), true));
    assert.equal(refused.code, ErrorCode.Protocol);
    assert.match(refused.message, /the certificate in the initiator's Hello is not sealed under this attempt's secret/);
  });

  test('a certificate over the limit: the Hello goes without it (SECURITY tls-flight), and TLS keeps the confirmation', async () => {
    const { a, b } = await pair();
    await helloAsInitiator(a, newAttempt(), signal(), 'tls-flight', new Uint8Array(MAX_HELLO_CERTIFICATE_BYTES + 1));
    const hello = await readOneMessage(b, signal());
    assert.equal(getSecurityMode(hello), SecurityMode.TlsFlight);
    assert.equal(getInitiatorCertificate(hello), undefined);
    assert.equal(sentHelloCertificate(a), false);
  });

  test('admitted: the initiator is done before the recipient (no confirmation to wait for), the answer says so by ALPN, and no stray byte reaches the data', async () => {
    const run1 = await run(alice, bob);
    const [c, s] = await Promise.all([run1.initiator, run1.recipient]);
    assert.deepEqual(run1.order, ['initiator', 'recipient'], 'the recipient waits for the initiator\'s confirmation, the initiator for nothing');
    assert.equal(c.socket.alpnProtocol, ADMITTED_ALPN);
    assert.equal(c.peerUri, bob.uri);
    assert.equal(s.peerUri, alice.uri);
    s.socket.write('first bytes of the recipient');
    c.socket.write('first bytes of the initiator');
    await until(() => c.socket.readableLength > 0 && s.socket.readableLength > 0, 5_000, 'data both ways');
    assert.equal(String(c.socket.read()), 'first bytes of the recipient');
    assert.equal(String(s.socket.read()), 'first bytes of the initiator');
    c.socket.destroy();
    s.socket.destroy();
  });

  test('the answered Hello (racing strategies) carries the certificate too (SECURITY 5): answered, then TLS without the confirmation', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await Promise.all([helloAsInitiator(a, attempt, signal(), 'tls-answered', der(alice)), helloAsRecipient(b, attempt, signal(), true)]);
    assert.equal(sentHelloCertificate(a), true);
    const certificate = helloCertificateOf(b);
    assert.ok(certificate !== undefined);
    const order: string[] = [];
    const client = secureConnection(a, { role: 'initiator', identity: alice, expectedPeerUri: bob.uri, certifiedFlight: true, signal: signal() }).then((c) => (order.push('initiator'), c));
    const server = secureConnection(b, { role: 'recipient', identity: bob, helloCertificate: certificate, signal: signal() }).then((c) => (order.push('recipient'), c));
    const [c, s] = await Promise.all([client, server]);
    assert.deepEqual(order, ['initiator', 'recipient']);
    assert.equal(c.socket.alpnProtocol, ADMITTED_ALPN);
    c.socket.destroy();
    s.socket.destroy();
  });

  test('the answered Hello without a certificate is SECURITY tls (1), as older initiators send it', async () => {
    const { a, b } = await pair();
    void helloAsInitiator(a, newAttempt(), signal(), 'tls-answered').catch(() => undefined);
    const hello = await readOneMessage(b, signal());
    assert.equal(getSecurityMode(hello), SecurityMode.Tls);
    assert.equal(getInitiatorCertificate(hello), undefined);
  });

  /** The initiator's certified flight on one end; on the other, after the Hello, a bare TLS server (no nattrav logic) that selects `alpn`. */
  async function againstBareServer(alpn: string): Promise<{ client: Promise<SecureConnection>; server: TLSSocket }> {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await helloAsInitiator(a, attempt, signal(), 'tls-flight', der(alice));
    const client = secureConnection(a, { role: 'initiator', identity: alice, expectedPeerUri: bob.uri, certifiedFlight: true, signal: signal() });
    await helloAsRecipient(b, attempt, signal(), true);
    const server = new TLSSocket(b, { isServer: true, secureContext: createSecureContext({ key: bob.keyPem, cert: bob.certPem }), requestCert: true, rejectUnauthorized: false, ALPNProtocols: [alpn] });
    server.on('error', () => undefined);
    closers.push(() => server.destroy());
    return { client, server };
  }

  test('the initiator does not wait: a recipient that answers by ALPN and then stays silent still gives it its connection', async () => {
    // It admits by ALPN and never writes application data (no confirmation).
    const { client } = await againstBareServer(ADMITTED_ALPN);
    const connection = await client;
    assert.equal(connection.peerUri, bob.uri);
    connection.socket.destroy();
  });

  test('a recipient that did not decide early (ALPN nattrav/1) is waited for, as before: no confirmation byte is left in the data', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    await helloAsInitiator(a, attempt, signal(), 'tls-flight', der(alice));
    const client = secureConnection(a, { role: 'initiator', identity: alice, expectedPeerUri: bob.uri, certifiedFlight: true, signal: signal() });
    await helloAsRecipient(b, attempt, signal(), true);
    // helloCertificate not passed: the recipient runs the confirmation.
    const [c, s] = await Promise.all([client, secureConnection(b, { role: 'recipient', identity: bob, signal: signal() })]);
    assert.equal(c.socket.alpnProtocol, NATTRAV_ALPN);
    s.socket.write('data');
    await until(() => c.socket.readableLength > 0, 5_000, 'data');
    assert.equal(String(c.socket.read()), 'data');
    c.socket.destroy();
    s.socket.destroy();
  });

  test('not on the allow-list: decided before TLS (admit runs once), both fail with ERR_NOT_ALLOWED, the initiator with the reason', async () => {
    const judged: string[] = [];
    const refused = await run(alice, bob, { recipient: { admit: (peer) => (judged.push(peer.uri), 'not on the list') } });
    const [initiator, recipient] = await Promise.all([rejection(refused.initiator), rejection(refused.recipient)]);
    assert.deepEqual(judged, [alice.uri]);
    assert.equal(initiator.code, ErrorCode.NotAllowed, initiator.message);
    assert.equal(initiator.message, 'the recipient refused the connection: not on the list');
    assert.equal(recipient.code, ErrorCode.NotAllowed, recipient.message);
    assert.equal(recipient.message, `refused ${alice.uri}: not on the list`);
    await until(() => refused.a.destroyed && refused.b.destroyed, 5_000, 'both sockets closed');
  });

  test('an initiator certificate the recipient does not trust: the initiator learns why (ERR_TLS), not only that the peer closed', async () => {
    const [ca, rogue] = await Promise.all([createCa({}), createCa({})]);
    const carol = checkedIdentity({ ...(await issueCertificate({ ca: rogue, uri: 'nattrav://carol' })), ca: [ca.certPem] });
    const dave = checkedIdentity({ ...(await issueCertificate({ ca, uri: 'nattrav://dave' })), ca: [ca.certPem] });
    const refused = await run(await carol, await dave);
    const [initiator, recipient] = await Promise.all([rejection(refused.initiator), rejection(refused.recipient)]);
    assert.equal(initiator.code, ErrorCode.Tls);
    assert.match(initiator.message, /^the recipient refused our certificate: certificate of nattrav:\/\/carol not issued by a trusted CA/);
    assert.equal(recipient.code, ErrorCode.Tls);
    assert.match(recipient.message, /certificate of nattrav:\/\/carol not issued by a trusted CA/);
  });

  test('a Hello certificate unlike the TLS one (a swap): the recipient refuses with ERR_TLS and closes; nothing reaches it', async () => {
    const swapped = await run(alice, bob, { helloIdentity: bob });
    const recipient = await rejection(swapped.recipient);
    assert.equal(recipient.code, ErrorCode.Tls);
    assert.equal(recipient.message, 'the initiator\'s TLS certificate is not the one its Hello carried');
    // Such an initiator was told "admitted" on the strength of the Hello's certificate (it does
    // not wait), and its connection ends without a byte from the recipient.
    const initiator = await swapped.initiator.catch(() => undefined);
    if (initiator !== undefined) {
      initiator.socket.on('error', () => undefined);
      initiator.socket.resume();
      await until(() => initiator.socket.destroyed || initiator.socket.readableEnded, 5_000, 'the initiator\'s connection ends');
      assert.equal(initiator.socket.bytesRead, 0);
    }
  });

  test('SECURITY tls-flight-certified without the certificate is refused by the recipient, naming it', async () => {
    const { a, b } = await pair();
    const attempt = newAttempt();
    a.write(certifiedHelloByHand(attempt));
    const refused = await rejection(helloAsRecipient(b, attempt, signal(), true));
    assert.equal(refused.code, ErrorCode.Protocol);
    assert.match(refused.message, /announced its certificate in the Hello \(SECURITY tls-flight-certified or tls-answered-certified\) but sent none/);
  });

  test('an older recipient closes on SECURITY 4 (unknown to it): the initiator says to upgrade it', async () => {
    const { a, b } = await pair();
    await helloAsInitiator(a, newAttempt(), signal(), 'tls-flight', der(alice));
    // What nattrav before this change does: read the Hello, fail to decode SECURITY 4, close.
    void readOneMessage(b, signal()).then(() => b.destroy());
    const failed = await secureConnection(a, { role: 'initiator', identity: alice, expectedPeerUri: bob.uri, certifiedFlight: true, signal: signal() }).then(
      () => assert.fail('expected a failure'),
      (err: unknown) => explainTlsFlightFailure(err) as Error,
    );
    assert.match(failed.message, /an older nattrav closes on a Hello it does not know: upgrade it/);
    assert.equal(closedDuringTls(failed), true, 'connect() retries such an attempt without the certificate');
  });

  test('an older recipient closes on SECURITY 5 (the answered Hello with the certificate): the Hello fails as closed, saying to upgrade it', async () => {
    const { a, b } = await pair();
    void readOneMessage(b, signal()).then(() => b.destroy());
    const failed = await rejection(helloAsInitiator(a, newAttempt(), signal(), 'tls-answered', der(alice)));
    assert.equal(failed.code, ErrorCode.Closed);
    assert.match(failed.message, /an older nattrav closes on a Hello it does not know: upgrade it/);
  });

  test('REFUSED_ALPN followed by a confirmation is a protocol error, not a connection', async () => {
    const { client, server: liar } = await againstBareServer(REFUSED_ALPN);
    liar.on('secure', () => liar.write(Buffer.of(0x06)));
    const failed = await rejection(client);
    assert.equal(failed.code, ErrorCode.Protocol);
    assert.match(failed.message, /announced a refusal and then confirmed/);
  });
});
