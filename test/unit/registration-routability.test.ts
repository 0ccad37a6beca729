/**
 * Return routability of refreshes on loopback: a refresh under a valid session that
 * comes from a new address (the peer's NAT mapping changed, or the session's holder
 * spoofing a victim's address) moves the registration only after the new address
 * echoed the broker's nonce, and the broker sends that address no more bytes than the
 * refresh had. The "spoofed" refresh is sent from a socket standing for the victim.
 */
import assert from 'node:assert/strict';
import type { Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { after, describe, test } from 'node:test';
import type { Broker } from '../../src/broker/broker.js';
import { registerWithProof, type RegistrationSession, type Transact } from '../../src/peer/register-proof.js';
import { generateKeyPair } from '../../src/security/keys.js';
import { decodeMessage, encodeMessage, verifyMessageIntegritySha256 } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { startBroker, until } from '../helpers/loopback.js';
import { udpSocket } from '../helpers/udp.js';

const LIFETIME_MS = 60_000;
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** Request/response over UDP from `socket`, padded as nattrav peers pad; logs the size of each request and answer. */
function udpTransact(socket: UdpSocket, port: number, sizes: Array<{ request: number; answer: number }> = []): Transact {
  return (request, options) =>
    new Promise<StunMessage>((resolve, reject) => {
      addRequestPadding(request);
      const bytes = encodeMessage(request, { fingerprint: true, ...options });
      const onMessage = (data: Buffer): void => {
        const message = decodeMessage(data);
        if (hex(message.transactionId) !== hex(request.transactionId)) return;
        socket.off('message', onMessage);
        clearTimeout(timer);
        sizes.push({ request: bytes.length, answer: data.length });
        resolve(message);
      };
      const timer = setTimeout(() => {
        socket.off('message', onMessage);
        reject(new Error('no answer within 2 s'));
      }, 2_000);
      socket.on('message', onMessage);
      socket.send(bytes, port, '127.0.0.1');
    });
}

const base = (uri: string) => (): StunMessage => addU32(addUri(StunMessage.request(Method.Register), uri), AttrType.Lifetime, LIFETIME_MS);

describe('return routability of refreshes', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  async function setup(uri: string): Promise<{ broker: Broker; port: number; home: UdpSocket; session: RegistrationSession }> {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const port = broker.address().port;
    const home = await udpSocket('127.0.0.1');
    closers.push(() => home.close());
    const { session } = await registerWithProof(udpTransact(home, port), base(uri), { key: generateKeyPair() }, uri, LIFETIME_MS, 'udp', undefined);
    assert.ok(session);
    assert.equal((await broker.registry.get(uri))?.publicEndpoint.port, home.address().port);
    return { broker, port, home, session };
  }

  test('a peer that really moved must echo the nonce from its new address before its registration moves', async () => {
    const uri = 'nattrav://mover';
    const { broker, port, home, session } = await setup(uri);
    const moved = await udpSocket('127.0.0.2');
    closers.push(() => moved.close());
    // A plain refresh from the new address: 438 with a nonce, under the session key, no larger than the refresh.
    const sizes: Array<{ request: number; answer: number }> = [];
    const refresh = base(uri)();
    refresh.add(AttrType.Username, session.id);
    addU32(refresh, AttrType.Sequence, ++session.sequence);
    const challenge = await udpTransact(moved, port, sizes)(refresh, { integritySha256Key: session.key });
    assert.equal(getErrorCode(challenge)?.code, StunErrorCode.StaleNonce);
    assert.ok(challenge.get(AttrType.Nonce), 'a nonce to echo');
    assert.ok(verifyMessageIntegritySha256(challenge, session.key), 'under the session key');
    assert.ok(sizes[0] !== undefined && sizes[0].answer <= sizes[0].request, `answer ${sizes[0]?.answer} B to a ${sizes[0]?.request} B refresh`);
    assert.equal((await broker.registry.get(uri))?.publicEndpoint.port, home.address().port, 'not moved yet');
    // The peer's own refresh logic echoes it once and the registration moves.
    const { response } = await registerWithProof(udpTransact(moved, port), base(uri), { key: generateKeyPair() }, uri, LIFETIME_MS, 'udp', session);
    assert.equal(response.cls, MessageClass.SuccessResponse);
    const now = await broker.registry.get(uri);
    assert.deepEqual([now?.publicEndpoint.address, now?.publicEndpoint.port], ['127.0.0.2', moved.address().port]);
    // A nonce for one address does not move the registration to another.
    const third = await udpSocket('127.0.0.3');
    closers.push(() => third.close());
    const stolen = base(uri)();
    stolen.add(AttrType.Username, session.id);
    stolen.add(AttrType.Nonce, challenge.get(AttrType.Nonce) as Uint8Array);
    addU32(stolen, AttrType.Sequence, ++session.sequence);
    assert.equal(getErrorCode(await udpTransact(third, port)(stolen, { integritySha256Key: session.key }))?.code, StunErrorCode.StaleNonce);
    assert.equal((await broker.registry.get(uri))?.publicEndpoint.address, '127.0.0.2');
  });

  test('a refresh "from" a victim moves nothing, and the victim gets no more bytes than the refresh had, however many connects follow', async () => {
    const uri = 'nattrav://reflector';
    const { broker, port, home, session } = await setup(uri);
    // The session's holder sends a valid refresh from the victim's address (here: from a socket standing for it).
    const victim = await udpSocket('127.0.0.4');
    closers.push(() => victim.close());
    let victimBytes = 0;
    victim.on('message', (data: Buffer) => (victimBytes += data.length));
    let homeRequests = 0;
    home.on('message', (data: Buffer) => {
      const message = decodeMessage(data);
      if (message.cls === MessageClass.Request && message.method === Method.ConnectionRequest) homeRequests++;
    });
    const refresh = addRequestPadding(base(uri)().add(AttrType.Username, session.id));
    addU32(refresh, AttrType.Sequence, ++session.sequence);
    const forged = encodeMessage(refresh, { fingerprint: true, integritySha256Key: session.key });
    victim.send(forged, port, '127.0.0.1');
    await until(() => victimBytes > 0, 3_000, 'the answer to the forged refresh');
    assert.ok(victimBytes > 0 && victimBytes <= forged.length, `victim got ${victimBytes} B for a ${forged.length} B refresh`);
    assert.equal((await broker.registry.get(uri))?.publicEndpoint.address, '127.0.0.1', 'the registration did not move');
    // Accomplices ask to connect: the connection requests go to the registered address, never the victim.
    for (let i = 0; i < 3; i++) {
      const socket = netConnect({ host: '127.0.0.1', port });
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      closers.push(() => socket.destroy());
      socket.write(encodeMessage(addUri(StunMessage.request(Method.Connect), uri)));
    }
    await until(() => homeRequests >= 3, 3_000, 'a connection request per connect at the registered address');
    assert.ok(victimBytes <= forged.length, `victim got ${victimBytes} B in all for a ${forged.length} B refresh`);
  });
});
