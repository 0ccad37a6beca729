/**
 * The fast path for plain UDP Binding requests (src/broker/binding-fast.ts): which
 * datagrams it takes (well-formed plain Bindings only, FINGERPRINT checked), and that
 * its answers are byte for byte what the full path (rfc5780.ts + amplification.ts)
 * computes for the same request and requester, through a real broker on loopback
 * (sources 127.0.0.x, all local on Linux), on every socket, with and without an
 * alternate address; shapes whose answers drew on the amplification budgets stay on
 * the full path.
 */
import assert from 'node:assert/strict';
import type { Socket as UdpSocket } from 'node:dgram';
import { after, describe, test } from 'node:test';
import { fitUnauthenticated, udpRequestInfo } from '../../src/broker/amplification.js';
import { NOT_PLAIN, plainBindingRequest, PlainBindingAnswers } from '../../src/broker/binding-fast.js';
import type { Broker } from '../../src/broker/broker.js';
import { answerBinding, type Rfc5780Layout, type ServerSocketId } from '../../src/broker/rfc5780.js';
import { KNOWN_ATTRIBUTES } from '../../src/broker/udp.js';
import { encodeChangeRequest } from '../../src/wire/change-request.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri } from '../../src/wire/nattrav.js';
import { encodePadding } from '../../src/wire/padding.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { startBroker } from '../helpers/loopback.js';
import { udpSocket } from '../helpers/udp.js';

const SOFTWARE = 'nattrav broker';
const PRIMARY: ServerSocketId = { alternateIp: false, alternatePort: false };

const binding = (): StunMessage => StunMessage.request(Method.Binding);
const padded = (bytes: number, fingerprint = true): Buffer => encodeMessage(addRequestPadding(binding(), bytes, fingerprint), { fingerprint });

/** One answer to `request` sent from `socket` to `port` (or undefined after `ms`). */
function ask(socket: UdpSocket, port: number, request: Buffer, ms = 1_000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(undefined), ms);
    const done = (answer: Buffer | undefined): void => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve(answer);
    };
    const onMessage = (data: Buffer): void => {
      if (data.subarray(8, 20).equals(request.subarray(8, 20))) done(data);
    };
    socket.on('message', onMessage);
    socket.send(request, port, '127.0.0.1');
  });
}

/** What the full path answers `request` from `socket` on the primary socket, computed from its parts. */
function fullAnswer(request: Buffer, socket: UdpSocket, layout: Rfc5780Layout): Buffer | undefined {
  const message = decodeMessage(request);
  const { address, port } = socket.address();
  const answer = answerBinding(message, PRIMARY, { family: 'IPv4', address, port }, layout);
  return fitUnauthenticated(answer.response, { software: SOFTWARE, fingerprint: true }, udpRequestInfo(message, request), 'minimal', () => true);
}

describe('plainBindingRequest', () => {
  test('takes plain Bindings, with a FINGERPRINT that matches or none', () => {
    assert.equal(plainBindingRequest(padded(68), KNOWN_ATTRIBUTES), 1);
    assert.equal(plainBindingRequest(padded(68, false), KNOWN_ATTRIBUTES), 0);
    assert.equal(plainBindingRequest(encodeMessage(binding()), KNOWN_ATTRIBUTES), 0);
    assert.equal(plainBindingRequest(encodeMessage(binding(), { software: 'x', fingerprint: true }), KNOWN_ATTRIBUTES), 1);
  });

  test('leaves everything else to the full path', () => {
    const good = padded(68);
    const wrongFingerprint = Buffer.from(good);
    wrongFingerprint[good.length - 1] ^= 1;
    const truncated = good.subarray(0, good.length - 4);
    const register = encodeMessage(addUri(StunMessage.request(Method.Register), 'nattrav://x'), { fingerprint: true });
    const response = encodeMessage(binding().successResponse(), { fingerprint: true });
    const changeRequest = encodeMessage(binding().add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: false, changePort: true })), { fingerprint: true });
    const padding = encodeMessage(binding().add(AttrType.Padding, encodePadding(8)), { fingerprint: true });
    const unknownRequired = encodeMessage(binding().add(0x7ff0, new Uint8Array(4)), { fingerprint: true });
    const integrity = encodeMessage(binding(), { integritySha256Key: Buffer.alloc(32, 1), fingerprint: true });
    const fingerprintNotLast = Buffer.concat([good, Buffer.from([0x80, 0x22, 0, 0])]);
    fingerprintNotLast.writeUInt16BE(fingerprintNotLast.length - 20, 2);
    const overrun = Buffer.from(padded(68, false));
    overrun.writeUInt16BE(0x1000, 22);
    for (const [name, bytes] of Object.entries({ wrongFingerprint, truncated, register, response, changeRequest, padding, unknownRequired, integrity, fingerprintNotLast, overrun, empty: Buffer.alloc(0) })) {
      assert.equal(plainBindingRequest(bytes, KNOWN_ATTRIBUTES), NOT_PLAIN, name);
    }
  });
});

test('a learnt template answers another requester exactly as the full path would', () => {
  const layout: Rfc5780Layout = { host: '127.0.0.1', port: 3478, alternatePort: 3479, alternateHost: '127.0.0.2' };
  const requestWith = (txid: Buffer): Buffer => encodeMessage(addRequestPadding(StunMessage.request(Method.Binding, txid), 100), { fingerprint: true });
  const request = requestWith(Buffer.alloc(12, 7));
  const answerTo = (address: string, port: number, txid: Buffer): Buffer => {
    const req = requestWith(txid);
    const message = decodeMessage(req);
    const answer = answerBinding(message, PRIMARY, { family: 'IPv4', address, port }, layout);
    const bytes = fitUnauthenticated(answer.response, { software: SOFTWARE, fingerprint: true }, udpRequestInfo(message, req), 'minimal', () => assert.fail('no draw'));
    assert.ok(bytes !== undefined);
    return bytes;
  };
  const answers = new PlainBindingAnswers(KNOWN_ATTRIBUTES);
  const shape = answers.shape(request, 'IPv4', PRIMARY);
  assert.notEqual(shape, NOT_PLAIN);
  assert.equal(answers.shape(request, 'IPv6', PRIMARY), NOT_PLAIN);
  const sent: Array<{ bytes: Buffer; port: number; address: string }> = [];
  const socket = { send: (bytes: Buffer, port: number, address: string) => sent.push({ bytes, port, address }) } as unknown as UdpSocket;
  assert.equal(answers.send(shape, request, socket, '10.1.2.3', 4000), false, 'nothing learnt yet');
  answers.learn(shape, answerTo('10.1.2.3', 4000, Buffer.alloc(12, 7)), false);
  const txid = Buffer.from('0102030405060708090a0b0c', 'hex');
  const req = requestWith(txid);
  assert.equal(answers.send(shape, req, socket, '198.51.100.200', 61_234), true);
  assert.deepEqual(sent, [{ bytes: answerTo('198.51.100.200', 61_234, txid), port: 61_234, address: '198.51.100.200' }]);
  assert.equal(answers.send(shape, req, socket, '::ffff:1.2.3.4', 1), false, 'only dotted quads');
});

test('a shape that drew on the budgets, or got no answer, is never templated', () => {
  const answers = new PlainBindingAnswers(KNOWN_ATTRIBUTES);
  const bare = encodeMessage(binding());
  const socket = { send: () => assert.fail('must not send') } as unknown as UdpSocket;
  const shape = answers.shape(bare, 'IPv4', PRIMARY);
  answers.learn(shape, Buffer.alloc(44), true);
  assert.equal(answers.send(shape, bare, socket, '10.0.0.1', 1), false);
  const other = answers.shape(padded(40), 'IPv4', PRIMARY);
  answers.learn(other, undefined, false);
  assert.equal(answers.send(other, padded(40), socket, '10.0.0.1', 1), false);
});

describe('through a broker', () => {
  const brokers: Broker[] = [];
  const sockets: UdpSocket[] = [];
  after(async () => {
    for (const s of sockets) s.close();
    await Promise.all(brokers.map((b) => b.close()));
  });

  for (const alternateHost of [undefined, '127.0.0.2']) {
    test(`answers equal the full path's for each requester${alternateHost === undefined ? '' : ' (with an alternate address)'}`, async () => {
      const { broker } = await startBroker(alternateHost === undefined ? {} : { alternateHost });
      brokers.push(broker);
      const { port } = broker.address();
      const layout: Rfc5780Layout = { host: '127.0.0.1', port, alternatePort: port + 1, ...(alternateHost === undefined ? {} : { alternateHost }) };
      const requesters = await Promise.all(['127.0.0.1', '127.0.0.3', '127.0.0.44'].map((a) => udpSocket(a)));
      sockets.push(...requesters);
      const requests: Array<() => Buffer> = [() => padded(68), () => padded(68, false), () => padded(100), () => encodeMessage(binding(), { software: 'client', fingerprint: true })];
      for (const make of requests) {
        for (const socket of requesters) {
          for (let i = 0; i < 2; i++) {
            const request = make();
            const answer = await ask(socket, port, request);
            assert.ok(answer !== undefined, `an answer to a request of ${request.length} bytes`);
            assert.deepEqual(answer, fullAnswer(request, socket, layout), `request of ${request.length} bytes from ${socket.address().address}`);
          }
        }
      }
      // A broken FINGERPRINT on a learnt shape: dropped, as the full path drops it.
      const broken = padded(68);
      broken[broken.length - 1] ^= 0xff;
      assert.equal(await ask(requesters[0], port, broken, 300), undefined);
    });
  }
});
