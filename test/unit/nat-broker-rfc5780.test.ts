/**
 * The broker as an RFC 5780 server on loopback: 127.0.0.1 is the primary
 * address, 127.0.0.2 the alternate (Linux answers for all of 127/8 on lo).
 * Also `discoverNat()` against it, where there is no NAT to find.
 */
import assert from 'node:assert/strict';
import { generateKeyPair } from '../../src/security/keys.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createBroker, type Broker } from '../../src/broker/broker.js';
import { RESPONSE_PADDING_BYTES } from '../../src/broker/rfc5780.js';
import { discoverNat } from '../../src/nat/discovery.js';
import { describeNat } from '../../src/nat/profile.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { encodeChangeRequest } from '../../src/wire/change-request.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri, getErrorCode, getMappedAddress, getOtherAddress, getResponseOrigin, getXorMappedAddress } from '../../src/wire/nattrav.js';
import { encodePadding } from '../../src/wire/padding.js';
import { encodeResponsePort } from '../../src/wire/response-port.js';
import { decodeUnknownAttributes } from '../../src/wire/unknown-attributes.js';

const PRIMARY = '127.0.0.1';
const ALTERNATE = '127.0.0.2';
/** Loopback answers in well under a millisecond; this only bounds a broken test. */
const ANSWER_TIMEOUT_MS = 2_000;

function bindClient(): Promise<UdpSocket> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.bind(0, PRIMARY, () => resolve(socket));
  });
}

/** Sends `request` from `from` to `to`, and waits for the message with its transaction ID on `listen` (default `from`). */
function exchange(from: UdpSocket, to: { address: string; port: number }, request: StunMessage, listen: UdpSocket = from): Promise<{ message: StunMessage; rinfo: RemoteInfo }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      listen.off('message', onMessage);
      reject(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms`));
    }, ANSWER_TIMEOUT_MS);
    const onMessage = (data: Buffer, rinfo: RemoteInfo): void => {
      const message = decodeMessage(data);
      if (!Buffer.from(message.transactionId).equals(Buffer.from(request.transactionId))) return;
      clearTimeout(timer);
      listen.off('message', onMessage);
      resolve({ message, rinfo });
    };
    listen.on('message', onMessage);
    // Padded like our own clients' requests: the broker never answers with more bytes than it got.
    from.send(encodeMessage(addRequestPadding(request)), to.port, to.address);
  });
}

function binding(change?: { changeIp: boolean; changePort: boolean }): StunMessage {
  const request = StunMessage.request(Method.Binding);
  if (change !== undefined) request.add(AttrType.ChangeRequest, encodeChangeRequest(change));
  return request;
}

describe('broker: RFC 5780 server with an alternate address (loopback)', () => {
  let broker: Broker;
  let client: UdpSocket;
  let port = 0;
  let altPort = 0;
  before(async () => {
    broker = createBroker({ host: PRIMARY, port: 0, alternateHost: ALTERNATE });
    port = (await broker.listen()).port;
    altPort = port + 1;
    client = await bindClient();
  });
  after(async () => {
    client?.close();
    await broker?.close();
  });

  test('listens on the primary and alternate port of both addresses', () => {
    const endpoints = broker.addresses().map((e) => `${e.address}:${e.port}`).sort();
    assert.deepEqual(endpoints, [`${PRIMARY}:${port}`, `${PRIMARY}:${altPort}`, `${ALTERNATE}:${port}`, `${ALTERNATE}:${altPort}`].sort());
    assert.deepEqual(broker.address(), { address: PRIMARY, port });
  });

  const ips = [PRIMARY, ALTERNATE];
  for (const [ipIndex, ip] of ips.entries()) {
    for (const alternatePort of [false, true]) {
      for (const changeIp of [false, true]) {
        for (const changePort of [false, true]) {
          test(`request to ${ip}:${alternatePort ? 'P+1' : 'P'}, change IP ${changeIp}, change port ${changePort}`, async () => {
            const to = { address: ip, port: alternatePort ? altPort : port };
            const { message, rinfo } = await exchange(client, to, binding({ changeIp, changePort }));
            assert.equal(message.cls, MessageClass.SuccessResponse);
            const expectedFrom = {
              address: ips[changeIp ? 1 - ipIndex : ipIndex],
              port: alternatePort !== changePort ? altPort : port,
            };
            assert.deepEqual({ address: rinfo.address, port: rinfo.port }, expectedFrom, 'answered from the socket CHANGE-REQUEST asks for');
            const origin = getResponseOrigin(message);
            assert.deepEqual({ address: origin?.address, port: origin?.port }, expectedFrom, 'RESPONSE-ORIGIN names that socket');
            const other = getOtherAddress(message);
            assert.deepEqual({ address: other?.address, port: other?.port }, { address: ips[1 - ipIndex], port: alternatePort ? port : altPort });
            const mapped = getXorMappedAddress(message);
            assert.deepEqual(mapped, { family: 'IPv4', address: PRIMARY, port: client.address().port });
            assert.deepEqual(getMappedAddress(message), mapped, 'MAPPED-ADDRESS equals XOR-MAPPED-ADDRESS (coturn checks for ALGs)');
          });
        }
      }
    }
  }

  test('RESPONSE-PORT sends the answer to that port', async () => {
    const other = await bindClient();
    try {
      const request = binding().add(AttrType.ResponsePort, encodeResponsePort(other.address().port));
      const { message, rinfo } = await exchange(client, { address: PRIMARY, port }, request, other);
      assert.equal(message.cls, MessageClass.SuccessResponse);
      assert.equal(rinfo.port, port);
      assert.equal(getXorMappedAddress(message)?.port, client.address().port, 'the mapped address is still the sender');
    } finally {
      other.close();
    }
  });

  test('RESPONSE-PORT changes only the port, never the address: a third host on that port hears nothing (no reflection)', async () => {
    const victim = createSocket('udp4');
    await new Promise<void>((resolve) => victim.bind(0, '127.0.0.3', () => resolve()));
    const shared = victim.address().port;
    const own = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      own.once('error', reject);
      own.bind(shared, PRIMARY, () => resolve());
    });
    const heardByVictim: Buffer[] = [];
    victim.on('message', (data) => heardByVictim.push(data));
    try {
      const { rinfo } = await exchange(client, { address: PRIMARY, port }, binding().add(AttrType.ResponsePort, encodeResponsePort(shared)), own);
      assert.equal(rinfo.address, PRIMARY);
      // The answer went to the requester's own address at that port; give a stray copy time to arrive.
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(heardByVictim.length, 0, 'the socket of another address with that port got a datagram');
    } finally {
      victim.close();
      own.close();
    }
  });

  test('PADDING gets a padded answer no larger than the request (MTU-sized only for a large request); PADDING with RESPONSE-PORT is a 400', async () => {
    const padded = binding().add(AttrType.Padding, encodePadding(500));
    const { message } = await exchange(client, { address: PRIMARY, port }, padded);
    assert.ok((message.get(AttrType.Padding)?.length ?? 0) > 0, 'a padded answer');
    assert.ok((message.raw?.length ?? Infinity) <= encodeMessage(padded).length, 'anti-amplification: the answer is no larger than the request');
    const large = binding().add(AttrType.Padding, encodePadding(RESPONSE_PADDING_BYTES + 100));
    const full = await exchange(client, { address: PRIMARY, port }, large);
    assert.equal(full.message.get(AttrType.Padding)?.length, RESPONSE_PADDING_BYTES);
    const both = binding().add(AttrType.Padding, encodePadding(500)).add(AttrType.ResponsePort, encodeResponsePort(client.address().port));
    const refused = await exchange(client, { address: PRIMARY, port }, both);
    assert.equal(refused.message.cls, MessageClass.ErrorResponse);
    assert.equal(getErrorCode(refused.message)?.code, StunErrorCode.BadRequest);
  });

  test('a registration arriving on the alternate address is answered from there', async () => {
    const request = addUri(StunMessage.request(Method.Register), 'nattrav://rfc5780-alt');
    request.add(AttrType.PublicKey, generateKeyPair().spki);
    const { message, rinfo } = await exchange(client, { address: ALTERNATE, port: altPort }, request);
    // The first answer of a registration is the proof-of-key challenge (see registration-security tests).
    assert.equal(message.cls, MessageClass.ErrorResponse);
    assert.ok(message.has(AttrType.Nonce));
    assert.deepEqual({ address: rinfo.address, port: rinfo.port }, { address: ALTERNATE, port: altPort });
  });

  test('TCP Binding works on the alternate address and port', async () => {
    const socket = connect({ host: ALTERNATE, port: altPort });
    try {
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      socket.write(encodeMessage(binding()));
      const decoder = new StunStreamDecoder();
      const response = await new Promise<StunMessage>((resolve) => socket.on('data', (chunk) => {
        const [first] = decoder.push(chunk);
        if (first !== undefined) resolve(first);
      }));
      assert.deepEqual(getXorMappedAddress(response), { family: 'IPv4', address: PRIMARY, port: socket.localPort });
    } finally {
      socket.destroy();
    }
  });

  test('discoverNat finds no NAT on loopback', async () => {
    const profile = await discoverNat({ server: `${PRIMARY}:${port}` });
    assert.equal(profile.udpBlocked, false);
    assert.equal(profile.isPublic, true);
    assert.equal(profile.publicAddress, PRIMARY);
    assert.equal(profile.mapping, 'endpoint-independent');
    assert.equal(profile.filtering, 'endpoint-independent');
    assert.equal(profile.hairpinning, true);
    assert.deepEqual(profile.allocation, { kind: 'preserving' });
    assert.deepEqual(profile.tcp, { blocked: false, mapping: 'endpoint-independent', allocation: { kind: 'preserving' } });
    assert.equal(describeNat(profile), 'open internet');
    assert.equal(profile.notes, undefined);
  });
});

describe('broker: RFC 5780 without an alternate address (loopback)', () => {
  let broker: Broker;
  let client: UdpSocket;
  let port = 0;
  before(async () => {
    broker = createBroker({ host: PRIMARY, port: 0 });
    port = (await broker.listen()).port;
    client = await bindClient();
  });
  after(async () => {
    client?.close();
    await broker?.close();
  });

  test('still listens on the alternate port, and sends no OTHER-ADDRESS', async () => {
    assert.deepEqual(broker.addresses().map((e) => e.port).sort(), [port, port + 1]);
    const { message, rinfo } = await exchange(client, { address: PRIMARY, port: port + 1 }, binding());
    assert.equal(rinfo.port, port + 1);
    assert.equal(getOtherAddress(message), undefined);
    assert.equal(getResponseOrigin(message)?.port, port + 1);
  });

  test('"change port" is honoured, "change IP" is a 420 naming CHANGE-REQUEST', async () => {
    const changed = await exchange(client, { address: PRIMARY, port }, binding({ changeIp: false, changePort: true }));
    assert.equal(changed.message.cls, MessageClass.SuccessResponse);
    assert.equal(changed.rinfo.port, port + 1);
    const refused = await exchange(client, { address: PRIMARY, port }, binding({ changeIp: true, changePort: false }));
    assert.equal(refused.message.cls, MessageClass.ErrorResponse);
    assert.equal(getErrorCode(refused.message)?.code, StunErrorCode.UnknownAttribute);
    assert.deepEqual(decodeUnknownAttributes(refused.message.get(AttrType.UnknownAttributes) ?? new Uint8Array()), [AttrType.ChangeRequest]);
    assert.equal(refused.rinfo.port, port);
  });

  test('discoverNat notes that the server cannot test mapping and filtering', async () => {
    const profile = await discoverNat({ server: `${PRIMARY}:${port}`, tcp: false });
    assert.equal(profile.isPublic, true);
    assert.equal(profile.mapping, undefined);
    assert.equal(profile.filtering, undefined);
    assert.match(profile.notes?.join(' ') ?? '', /OTHER-ADDRESS/);
  });

  test('refuses an alternate address with a wildcard primary host', () => {
    assert.throws(() => createBroker({ host: '0.0.0.0', alternateHost: ALTERNATE }), { code: 'ERR_INVALID_ARGUMENT' });
  });
});
