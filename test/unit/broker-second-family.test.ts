/**
 * The broker's side of SECOND-FAMILY (broker/register-family.ts), with hand-made refreshes
 * under a real registration's session: one from the registration's own family is refused
 * (400), one from a new address of the other family must first echo a routability token
 * (438), then is kept next to the first family; OTHER-FAMILY-BROKER is announced only in
 * verified answers. Skipped, with the reason, on a host without ::1.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket as UdpSocket } from 'node:dgram';
import { after, describe, test } from 'node:test';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { PeerRegistration } from '../../src/peer/registration.js';
import { generateKeyPair } from '../../src/security/keys.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { addSecondFamily } from '../../src/wire/family.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode, getXorMappedAddress } from '../../src/wire/nattrav.js';
import { startWatchedBroker } from '../helpers/loopback.js';
import { noIPv6Loopback, udpSocket } from '../helpers/udp.js';

const skip = await noIPv6Loopback();

describe('SECOND-FAMILY at the broker', { skip }, () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('refused from the first family; from IPv6 after a routability echo, kept next to the IPv4 registration', async () => {
    const registry = new MemoryRegistry();
    const { port } = await startWatchedBroker(closers, { host: '::', registry, announce: ['127.0.0.1', '::1'] });
    const uri = 'nattrav://hand-made';
    const registration = new PeerRegistration({ broker: { host: '127.0.0.1', port }, uri, keepaliveMs: 60_000, lifetimeMs: 30_000, registerTimeoutMs: 5_000, transport: 'udp', keys: { key: generateKeyPair() } });
    closers.push(() => registration.close());
    const first = await registration.start();
    assert.deepEqual(first.otherFamilyBroker, { family: 'IPv6', address: '::1', port }, 'the proof\'s answer announces the broker\'s IPv6 address');
    const session = registration.session;
    assert.ok(session !== undefined);

    /** Sends a SECOND-FAMILY refresh (the next SEQUENCE, under the session) from `socket` to `host`; resolves with the answer. */
    const refresh = async (socket: UdpSocket, host: string, nonce?: Uint8Array): Promise<StunMessage> => {
      const request = StunMessage.request(Method.Register);
      addUri(request, uri);
      addU32(request, AttrType.Lifetime, 30_000);
      addSecondFamily(request);
      if (nonce !== undefined) request.add(AttrType.Nonce, nonce);
      request.add(AttrType.Username, session.id);
      addU32(request, AttrType.Sequence, ++session.sequence);
      const answer = once(socket, 'message');
      socket.send(encodeMessage(request, { integritySha256Key: session.key, fingerprint: true }), port, host);
      const [data] = (await answer) as [Buffer];
      return decodeMessage(data);
    };

    const v4 = await udpSocket('127.0.0.1');
    const v6 = await udpSocket('::1');
    closers.push(() => v4.close(), () => v6.close());
    const same = await refresh(v4, '127.0.0.1');
    assert.equal(same.cls, MessageClass.ErrorResponse);
    assert.equal(getErrorCode(same)?.code, StunErrorCode.BadRequest);
    assert.match(getErrorCode(same)?.reason ?? '', /own family \(IPv4\)/);

    const challenge = await refresh(v6, '::1');
    assert.equal(getErrorCode(challenge)?.code, StunErrorCode.StaleNonce, 'a new address must show it receives there');
    assert.equal((await registry.get(uri))?.secondFamily, undefined, 'nothing kept before the echo');
    const granted = await refresh(v6, '::1', challenge.get(AttrType.Nonce));
    assert.equal(granted.cls, MessageClass.SuccessResponse);
    assert.deepEqual(getXorMappedAddress(granted), { family: 'IPv6', address: '::1', port: v6.address().port });
    assert.equal(granted.get(AttrType.OtherFamilyBroker) !== undefined, true, 'the verified answer names the broker\'s IPv4 address');
    const stored = await registry.get(uri);
    assert.equal(stored?.publicEndpoint.family, 'IPv4');
    assert.deepEqual(stored?.secondFamily?.publicEndpoint, { family: 'IPv6', address: '::1', port: v6.address().port });
    // Known now: the next refresh from there needs no echo.
    assert.equal((await refresh(v6, '::1')).cls, MessageClass.SuccessResponse);
  });
});
