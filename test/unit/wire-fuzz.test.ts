/**
 * Deterministic fuzzing of every decoder: valid messages are mutated (bit
 * flips, byte changes, truncation, length field and attribute length edits,
 * attribute type swaps, random appends) with a seeded PRNG and fed to
 * decodeMessage, every attribute decoder and accessor, and StunStreamDecoder.
 * The only error allowed out is NattravError ERR_STUN_MALFORMED.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NattravError } from '../../src/errors.js';
import {
  AttrType,
  HEADER_LENGTH,
  Method,
  StunMessage,
  StunStreamDecoder,
  addAttemptId,
  addU32,
  addUri,
  addXorAddress,
  decodeAddress,
  decodeChangeRequest,
  decodeErrorCode,
  decodeMessage,
  decodePadding,
  decodeResponsePort,
  decodeText,
  decodeU32,
  decodeUnknownAttributes,
  decodeXorAddress,
  encodeAddress,
  encodeChangeRequest,
  encodeErrorCode,
  encodeMessage,
  encodeResponsePort,
  encodeUnknownAttributes,
  getAttemptId,
  getChangeRequest,
  getErrorCode,
  getMappedAddress,
  getOtherAddress,
  getResponseOrigin,
  getResponsePort,
  getSoftware,
  getU32Attr,
  getUri,
  getXorAddressAttr,
  getXorAddressAttrs,
  getXorMappedAddress,
  isStunMessage,
  unknownComprehensionRequired,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
  type StunAttribute,
} from '../../src/wire/index.js';

const ITERATIONS = 20_000;

/** mulberry32: a small seeded PRNG, so every run fuzzes the same inputs. */
function prng(seed: number): { int: (n: number) => number; bytes: (n: number) => Buffer } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  return { int, bytes };
}

/** Runs `fn`; any error other than ERR_STUN_MALFORMED fails the test with the input that caused it. */
function onlyMalformed(fn: () => unknown, input: Uint8Array, what: string): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    if (err instanceof NattravError && err.code === 'ERR_STUN_MALFORMED') return false;
    assert.fail(`${what} threw ${String(err)} for input ${Buffer.from(input).toString('hex')}`);
  }
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const TID = hex('b7 e7 a7 01 bc 34 d6 86 fa 87 df ae');

/** Types whose values get swapped between attributes, so each accessor meets every other's bytes. */
const TYPES = [
  AttrType.MappedAddress, AttrType.XorMappedAddress, AttrType.ErrorCode, AttrType.Software, AttrType.Uri,
  AttrType.AttemptId, AttrType.PrivateEndpoint, AttrType.PeerPublicEndpoint, AttrType.PeerPrivateEndpoint,
  AttrType.StartDelay, AttrType.Lifetime, AttrType.ChangeRequest, AttrType.ResponsePort, AttrType.OtherAddress,
  AttrType.ResponseOrigin, AttrType.UnknownAttributes, AttrType.Padding, AttrType.MessageIntegrity,
  AttrType.MessageIntegritySha256, AttrType.Fingerprint, AttrType.Username,
];

function seedMessages(): Buffer[] {
  const register = (): StunMessage => {
    const m = StunMessage.request(Method.Register, TID);
    addUri(m, 'alice@example');
    addXorAddress(m, AttrType.PrivateEndpoint, { family: 'IPv4', address: '192.168.1.10', port: 5000 });
    addXorAddress(m, AttrType.PrivateEndpoint, { family: 'IPv6', address: 'fd00::1', port: 5000 });
    addU32(m, AttrType.Lifetime, 30000);
    return m;
  };
  const response = new StunMessage({ method: Method.Binding, cls: 2, transactionId: TID });
  addXorAddress(response, AttrType.XorMappedAddress, { family: 'IPv6', address: '2001:db8::7', port: 40000 });
  response.add(AttrType.MappedAddress, encodeAddress({ family: 'IPv4', address: '198.51.100.1', port: 1 }));
  response.add(AttrType.OtherAddress, encodeAddress({ family: 'IPv4', address: '198.51.100.2', port: 2 }));
  response.add(AttrType.ResponseOrigin, encodeAddress({ family: 'IPv6', address: '::1', port: 3 }));
  const connReq = new StunMessage({ method: Method.ConnectionRequest, cls: 0, transactionId: TID });
  addAttemptId(connReq, Buffer.alloc(16, 0xaa));
  addXorAddress(connReq, AttrType.PeerPublicEndpoint, { family: 'IPv4', address: '203.0.113.5', port: 6000 });
  addXorAddress(connReq, AttrType.PeerPrivateEndpoint, { family: 'IPv4', address: '10.1.1.1', port: 6001 });
  addU32(connReq, AttrType.StartDelay, 250);
  const nat = StunMessage.request(Method.Binding, TID)
    .add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: true, changePort: false }))
    .add(AttrType.ResponsePort, encodeResponsePort(4000))
    .add(AttrType.Padding, Buffer.alloc(9));
  const error = StunMessage.request(Method.Connect, TID).errorResponse(420, 'Unknown Attribute');
  error.add(AttrType.UnknownAttributes, encodeUnknownAttributes([0x4e99, 0x0031, 0x7777]));
  const key = Buffer.from('key');
  return [
    encodeMessage(register()),
    encodeMessage(register(), { integrityKey: key, integritySha256Key: key, fingerprint: true }),
    encodeMessage(response, { software: 'nattrav fuzz', integrityKey: key }),
    encodeMessage(connReq),
    encodeMessage(connReq, { fingerprint: true }),
    encodeMessage(nat, { integritySha256Key: key }),
    encodeMessage(error, { software: 'x' }),
    // RFC 5769 §2.2 and §2.4.
    hex(`01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
      00 20 00 08 00 01 a1 47 e1 12 a6 43 00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
      80 28 00 04 c0 7d 4c 96`),
    hex(`00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e 00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83
      e3 82 af e3 82 b9 00 00 00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79
      36 34 73 41 00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00 00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71
      2e 85 c9 a2 8c a8 96 66`),
  ];
}

/** Offsets of the attribute headers of a valid message. */
function attributeOffsets(msg: Buffer): number[] {
  const offsets: number[] = [];
  for (let at = HEADER_LENGTH; at + 4 <= msg.length; at += 4 + ((msg.readUInt16BE(at + 2) + 3) & ~3)) offsets.push(at);
  return offsets;
}

type Rng = ReturnType<typeof prng>;

function mutate(rng: Rng, seed: Buffer): Buffer {
  let b = Buffer.from(seed);
  const offsets = attributeOffsets(seed);
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(9)) {
      case 0: // bit flips
        for (let k = 1 + rng.int(4); k > 0 && b.length > 0; k--) b[rng.int(b.length)] ^= 1 << rng.int(8);
        break;
      case 1: // byte change
        if (b.length > 0) b[rng.int(b.length)] = rng.int(256);
        break;
      case 2: // truncation
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 3: // length field edit
        if (b.length >= 4) b.writeUInt16BE(rng.int(2) === 0 ? rng.int(0x10000) : Math.max(0, Math.min(0xffff, b.readUInt16BE(2) + 4 * (rng.int(9) - 4))), 2);
        break;
      case 4: { // attribute length edit
        const at = offsets[rng.int(offsets.length)];
        if (at !== undefined && at + 4 <= b.length) {
          const old = b.readUInt16BE(at + 2);
          b.writeUInt16BE(rng.int(2) === 0 ? rng.int(0x10000) : Math.max(0, Math.min(0xffff, old + rng.int(9) - 4)), at + 2);
        }
        break;
      }
      case 5: { // attribute type swap: one accessor meets another attribute's bytes
        const at = offsets[rng.int(offsets.length)];
        if (at !== undefined && at + 2 <= b.length) b.writeUInt16BE(TYPES[rng.int(TYPES.length)], at);
        break;
      }
      case 6: { // random append, length field fixed up half the time
        b = Buffer.concat([b, rng.bytes(rng.int(40))]);
        if (rng.int(2) === 0 && b.length >= 4) b.writeUInt16BE(Math.min(0xffff, Math.max(0, b.length - HEADER_LENGTH)), 2);
        break;
      }
      case 7: { // random TLV soup behind a valid header, length consistent
        const body = Buffer.alloc(4 * rng.int(16));
        for (let at = 0; at + 4 <= body.length; at += 4) {
          body.writeUInt16BE(rng.int(3) === 0 ? rng.int(0x10000) : TYPES[rng.int(TYPES.length)], at);
          body.writeUInt16BE(rng.int(24), at + 2);
        }
        b = Buffer.concat([seed.subarray(0, HEADER_LENGTH), body]);
        b.writeUInt16BE(body.length, 2);
        break;
      }
      default: { // value bytes randomised inside one attribute (structure kept)
        const at = offsets[rng.int(offsets.length)];
        if (at !== undefined && at + 4 <= b.length) {
          const len = Math.min(seed.readUInt16BE(at + 2), b.length - at - 4);
          rng.bytes(len).copy(b, at + 4);
        }
      }
    }
  }
  return b;
}

/** Every accessor, each allowed to throw only ERR_STUN_MALFORMED. */
function runAccessors(msg: StunMessage, input: Uint8Array): void {
  const accessors: Array<[string, () => unknown]> = [
    ['getXorMappedAddress', () => getXorMappedAddress(msg)],
    ['getMappedAddress', () => getMappedAddress(msg)],
    ['getErrorCode', () => getErrorCode(msg)],
    ['getSoftware', () => getSoftware(msg)],
    ['getUri', () => getUri(msg)],
    ['getAttemptId', () => getAttemptId(msg)],
    ['getXorAddressAttr', () => getXorAddressAttr(msg, AttrType.PeerPublicEndpoint)],
    ['getXorAddressAttrs', () => getXorAddressAttrs(msg, AttrType.PrivateEndpoint)],
    ['getXorAddressAttrs peer', () => getXorAddressAttrs(msg, AttrType.PeerPrivateEndpoint)],
    ['getU32Attr', () => getU32Attr(msg, AttrType.Lifetime)],
    ['getU32Attr start', () => getU32Attr(msg, AttrType.StartDelay)],
    ['getChangeRequest', () => getChangeRequest(msg)],
    ['getResponsePort', () => getResponsePort(msg)],
    ['getOtherAddress', () => getOtherAddress(msg)],
    ['getResponseOrigin', () => getResponseOrigin(msg)],
  ];
  for (const [name, fn] of accessors) onlyMalformed(fn, input, name);
}

/** Every attribute decoder on one value. */
function runDecoders(v: Uint8Array, tid: Uint8Array): void {
  onlyMalformed(() => decodeAddress(v), v, 'decodeAddress');
  onlyMalformed(() => decodeXorAddress(v, tid), v, 'decodeXorAddress');
  onlyMalformed(() => decodeErrorCode(v), v, 'decodeErrorCode');
  onlyMalformed(() => decodeText(v, 16, 'TEXT'), v, 'decodeText');
  onlyMalformed(() => decodeUnknownAttributes(v), v, 'decodeUnknownAttributes');
  onlyMalformed(() => decodeChangeRequest(v), v, 'decodeChangeRequest');
  onlyMalformed(() => decodeResponsePort(v), v, 'decodeResponsePort');
  onlyMalformed(() => decodePadding(v), v, 'decodePadding');
  onlyMalformed(() => decodeU32(v, 'U32'), v, 'decodeU32');
}

const TRAILERS = new Set<number>([AttrType.MessageIntegrity, AttrType.MessageIntegritySha256, AttrType.Fingerprint]);

test('fuzz decodeMessage (and accessors/decoders on what it accepts)', () => {
  const rng = prng(0x5eed0001);
  const seeds = seedMessages();
  let accepted = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const input = mutate(rng, seeds[i % seeds.length]);
    let msg: StunMessage | undefined;
    onlyMalformed(() => (msg = decodeMessage(input)), input, 'decodeMessage');
    isStunMessage(input);
    if (msg === undefined) continue;
    accepted++;
    const m: StunMessage = msg;
    assert.deepEqual(m.raw, input);
    assert.equal(isStunMessage(input), true);
    verifyMessageIntegrity(m, Buffer.from('key'));
    verifyMessageIntegritySha256(m, Buffer.from('key'));
    unknownComprehensionRequired(m, new Set([AttrType.Uri]));
    runAccessors(m, input);
    for (const a of m.attributes) runDecoders(a.value, m.transactionId);
    // What decodes re-encodes to a message with the same attributes.
    const kept: StunAttribute[] = m.attributes.filter((a) => !TRAILERS.has(a.type));
    const again = decodeMessage(encodeMessage(new StunMessage({ method: m.method, cls: m.cls, transactionId: m.transactionId, attributes: kept })));
    assert.deepEqual(again.attributes.map((a) => [a.type, Buffer.from(a.value).toString('hex')]), kept.map((a) => [a.type, Buffer.from(a.value).toString('hex')]));
  }
  assert.ok(accepted > ITERATIONS / 20, `only ${accepted} mutated messages decoded: the fuzzer is not reaching the accessors`);
});

test('fuzz attribute decoders and accessors directly', () => {
  const rng = prng(0x5eed0002);
  const valid = [
    encodeAddress({ family: 'IPv4', address: '1.2.3.4', port: 5 }),
    encodeAddress({ family: 'IPv6', address: '2001:db8::1', port: 5 }),
    encodeErrorCode({ code: 487, reason: 'R\u00e9ason' }),
    encodeUnknownAttributes([1, 2, 3]),
    encodeChangeRequest({ changeIp: true, changePort: true }),
    encodeResponsePort(1),
    Buffer.from('\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9'),
    Buffer.alloc(16, 1),
  ];
  for (let i = 0; i < ITERATIONS; i++) {
    const base = valid[i % valid.length];
    let v: Buffer;
    if (rng.int(3) === 0) {
      v = rng.bytes(rng.int(40));
    } else {
      v = Buffer.from(base);
      for (let k = 1 + rng.int(3); k > 0 && v.length > 0; k--) v[rng.int(v.length)] = rng.int(2) === 0 ? rng.int(256) : v[rng.int(v.length)] ^ (1 << rng.int(8));
      if (rng.int(4) === 0) v = v.subarray(0, rng.int(v.length + 1));
      if (rng.int(4) === 0) v = Buffer.concat([v, rng.bytes(1 + rng.int(4))]);
      if (rng.int(8) === 0) v[1] = 1 + rng.int(2); // keep the address family plausible
    }
    runDecoders(v, TID);
    const attributes: StunAttribute[] = [];
    for (let k = 1 + rng.int(20); k > 0; k--) attributes.push({ type: TYPES[rng.int(TYPES.length)], value: rng.int(2) === 0 ? v : rng.bytes(rng.int(24)) });
    runAccessors(new StunMessage({ method: Method.Register, cls: 0, transactionId: TID, attributes }), v);
  }
});

test('fuzz StunStreamDecoder with mutated streams split at random points', () => {
  const rng = prng(0x5eed0003);
  const seeds = seedMessages();
  let decoded = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const parts: Buffer[] = [];
    for (let k = 1 + rng.int(3); k > 0; k--) {
      const seed = seeds[rng.int(seeds.length)];
      parts.push(rng.int(3) === 0 ? mutate(rng, seed) : seed);
    }
    if (rng.int(4) === 0) parts.push(rng.bytes(rng.int(30)));
    const stream = Buffer.concat(parts);
    const dec = new StunStreamDecoder();
    const untilOne = rng.int(4) === 0;
    let taken = 0;
    for (let at = 0; at < stream.length; ) {
      const end = Math.min(stream.length, at + 1 + rng.int(64));
      const chunk = stream.subarray(at, end);
      at = end;
      if (untilOne) {
        let first: StunMessage | undefined;
        if (!onlyMalformed(() => (first = dec.pushUntilOne(chunk)), stream, 'pushUntilOne')) break;
        if (first !== undefined) {
          taken++;
          // Whatever followed the first message is handed back untouched.
          const firstLength = first.raw!.length;
          assert.deepEqual(Buffer.concat([dec.takeRemainder(), stream.subarray(at)]), stream.subarray(firstLength));
          break;
        }
      } else if (!onlyMalformed(() => (taken += dec.push(chunk).length), stream, 'push')) {
        break;
      }
    }
    decoded += taken;
  }
  assert.ok(decoded > ITERATIONS / 2, `only ${decoded} messages came out of the stream decoder`);
});
