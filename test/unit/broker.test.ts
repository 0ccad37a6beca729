import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { after, describe, test } from 'node:test';
import { createBroker } from '../../src/broker/broker.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { startDelays } from '../../src/broker/timing.js';
import { connect } from '../../src/peer/connect.js';
import { ErrorCode, type NattravError } from '../../src/errors.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { addU32, addUri, getErrorCode, getU32Attr, getXorMappedAddress } from '../../src/wire/nattrav.js';
import { decodeUnknownAttributes } from '../../src/wire/unknown-attributes.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

async function udpClient(): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return socket;
}

async function udpRequest(socket: UdpSocket, port: number, request: StunMessage | Buffer): Promise<StunMessage> {
  // Padded like our own clients' requests: the broker never answers with more bytes than it got.
  const bytes = Buffer.isBuffer(request) ? request : encodeMessage(addRequestPadding(request));
  const reply = once(socket, 'message');
  socket.send(bytes, port, '127.0.0.1');
  const [data] = (await Promise.race([reply, new Promise((_, reject) => setTimeout(() => reject(new Error('no UDP answer')), 2000))])) as [Buffer];
  return decodeMessage(data);
}

describe('broker', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('answers a STUN Binding request over UDP with the mapped address, fingerprinted', async () => {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const client = await udpClient();
    closers.push(() => client.close());
    const request = StunMessage.request(Method.Binding);
    const response = await udpRequest(client, broker.address().port, request);
    assert.equal(response.cls, MessageClass.SuccessResponse);
    assert.deepEqual(Buffer.from(response.transactionId), Buffer.from(request.transactionId));
    assert.deepEqual(getXorMappedAddress(response), { family: 'IPv4', address: '127.0.0.1', port: client.address().port });
    assert.ok(response.has(AttrType.Fingerprint));
  });

  test('answers a STUN Binding request over TCP on the same port', async () => {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const socket = netConnect({ host: '127.0.0.1', port: broker.address().port });
    closers.push(() => socket.destroy());
    await once(socket, 'connect');
    const decoder = new StunStreamDecoder();
    socket.write(encodeMessage(StunMessage.request(Method.Binding)));
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    const [response] = decoder.push(chunk);
    assert.deepEqual(getXorMappedAddress(response!), { family: 'IPv4', address: '127.0.0.1', port: socket.localPort });
  });

  test('rejects an unknown comprehension-required attribute with 420 and UNKNOWN-ATTRIBUTES', async () => {
    const { broker } = await startBroker();
    closers.push(() => broker.close());
    const client = await udpClient();
    closers.push(() => client.close());
    const request = StunMessage.request(Method.Binding).add(0x7f01, new Uint8Array(4));
    const response = await udpRequest(client, broker.address().port, request);
    assert.equal(response.cls, MessageClass.ErrorResponse);
    assert.equal(getErrorCode(response)?.code, StunErrorCode.UnknownAttribute);
    assert.deepEqual(decodeUnknownAttributes(response.get(AttrType.UnknownAttributes)!), [0x7f01]);
  });

  test('registers a URI, grants a bounded lifetime, and keeps serving after garbage', async () => {
    // Open mode: this test is about lifetimes and garbage, not proof of key (see registration-security).
    const { broker } = await startBroker({ maxLifetimeMs: 60_000, open: true });
    closers.push(() => broker.close());
    const client = await udpClient();
    closers.push(() => client.close());
    const port = broker.address().port;
    // Garbage and truncated STUN are dropped without an answer and without harm.
    client.send(Buffer.from('hello, broker'), port, '127.0.0.1');
    client.send(encodeMessage(StunMessage.request(Method.Register)).subarray(0, 18), port, '127.0.0.1');
    const register = StunMessage.request(Method.Register);
    addUri(register, 'nattrav://carol');
    addU32(register, AttrType.Lifetime, 10_000_000);
    const response = await udpRequest(client, port, register);
    assert.equal(response.cls, MessageClass.SuccessResponse);
    assert.equal(getU32Attr(response, AttrType.Lifetime), 60_000);
    const stored = await broker.registry.get('nattrav://carol');
    assert.equal(stored?.publicEndpoint.port, client.address().port);

    // Padded: the broker never answers an unverified UDP source with more bytes than it sent.
    const missing = await udpRequest(client, port, addRequestPadding(StunMessage.request(Method.Register)));
    assert.equal(getErrorCode(missing)?.code, StunErrorCode.BadRequest);
    assert.match(getErrorCode(missing)?.reason ?? '', /URI/);
  });

  test('a registration expires unless refreshed; the recipient refreshes well within it', async () => {
    // The registry's clock is ours: expiry is checked by moving it, not by waiting for it.
    let offsetMs = 0;
    const registry = new MemoryRegistry({ now: () => Date.now() + offsetMs, sweepIntervalMs: 0 });
    const { broker, address } = await startBroker({ registry });
    closers.push(() => broker.close());
    const { server } = await startRecipient(address, 'nattrav://short', { keepaliveMs: 150, lifetimeMs: 1000 });
    closers.push(() => server.close());
    let refreshes = 0;
    server.on('registered', () => refreshes++);
    await until(() => refreshes >= 3, 10_000, 'three refreshes');
    // Each refresh renews the lifetime: still registered now, though its first lifetime is near.
    offsetMs = 900;
    assert.ok(await registry.get('nattrav://short'), 'registered while refreshed');
    // A lifetime past the last refresh (and before the next one can land), it is gone.
    offsetMs = 900 + 1_000;
    assert.equal(await registry.get('nattrav://short'), undefined);
  });

  test('a recipient that refuses the connection request makes connect fail with ERR_RECIPIENT_UNREACHABLE at once', async () => {
    // The join deadline and the retransmissions run on a fake clock in rendezvous-schedule.test.ts;
    // here the broker passes the refusal on without waiting for any timer.
    const { broker, address } = await startBroker({ recipientTimeoutMs: 60_000, open: true });
    closers.push(() => broker.close());
    // Register (open mode) from a plain UDP socket that refuses every connection request.
    const client = await udpClient();
    closers.push(() => client.close());
    const register = StunMessage.request(Method.Register);
    addUri(register, 'nattrav://busy');
    await udpRequest(client, broker.address().port, register);
    let requests = 0;
    client.on('message', (data: Buffer) => {
      const message = decodeMessage(data);
      if (message.method !== Method.ConnectionRequest || message.cls !== MessageClass.Request) return;
      requests++;
      client.send(encodeMessage(message.errorResponse(StunErrorCode.TooManyRequests, 'too many incoming attempts')), broker.address().port, '127.0.0.1');
    });
    await assert.rejects(connect({ broker: address, uri: 'nattrav://busy' }), (err: NattravError) => {
      assert.equal(err.code, ErrorCode.RecipientUnreachable);
      assert.match(err.message, /refused the connection request/);
      return true;
    });
    assert.equal(requests, 1);
    assert.equal(broker.pendingAttempts, 0);
  });

  test('memory registry: expired entries are invisible and swept', async () => {
    let now = 1_000;
    const registry = new MemoryRegistry({ now: () => now, sweepIntervalMs: 0 });
    await registry.put({ uri: 'u', publicEndpoint: { family: 'IPv4', address: '198.51.100.1', port: 1 }, privateEndpoints: [], expiresAt: 2_000 });
    assert.ok(await registry.get('u'));
    assert.equal(await registry.size(), 1);
    now = 2_000;
    assert.equal(await registry.get('u'), undefined);
    assert.equal(await registry.size(), 0);
    await registry.close();
  });

  test('start delays make both SYNs leave when the slower peer hears the broker', () => {
    assert.deepEqual(startDelays(10, 50), { initiatorMs: 20, recipientMs: 0 });
    assert.deepEqual(startDelays(80, 20), { initiatorMs: 0, recipientMs: 30 });
    assert.deepEqual(startDelays(0, 0), { initiatorMs: 0, recipientMs: 0 });
  });

  test('rejects bad options with a message naming them', () => {
    assert.throws(() => createBroker({ port: 70_000 }), (err: NattravError) => err.code === ErrorCode.InvalidArgument && /port must be an integer/.test(err.message));
    assert.throws(() => createBroker({ maxLifetimeMs: -1 }), /maxLifetimeMs must be a positive integer/);
  });
});
