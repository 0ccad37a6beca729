/**
 * NAT-PMP (RFC 6886) and PCP (RFC 6887) codecs, byte for byte: hand-written vectors laid out
 * from the RFCs' figures, the exchanges captured from the real miniupnpd 2.3.1 in the lab
 * (test/fixtures/portmap/miniupnpd-2.3.1-pmp.json), the epoch rules, and random bytes that must
 * never make a decoder throw anything but ERR_PORTMAP.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isNattravError } from '../../src/errors.js';
import { epochLost } from '../../src/portmap/epoch.js';
import {
  decodeNatPmpAddressResponse,
  decodeNatPmpHeader,
  decodeNatPmpMapResponse,
  encodeNatPmpAddressRequest,
  encodeNatPmpMapRequest,
  natPmpResultName,
} from '../../src/portmap/natpmp.js';
import {
  decodePcpAnnounceResponse,
  decodePcpMapResponse,
  decodePcpResponseHeader,
  encodePcpAnnounceRequest,
  encodePcpMapRequest,
  pcpResultName,
} from '../../src/portmap/pcp.js';

interface Exchange {
  name: string;
  request: string;
  response: string;
}

const captured = JSON.parse(readFileSync(new URL('../../../test/fixtures/portmap/miniupnpd-2.3.1-pmp.json', import.meta.url), 'utf8')) as { exchanges: Exchange[] };

function exchange(name: string): { request: string; response: Buffer } {
  const found = captured.exchanges.find((e) => e.name === name);
  assert.ok(found, `fixture has ${name}`);
  return { request: found.request, response: Buffer.from(found.response, 'hex') };
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const NONCE = hex('0102030405060708090a0b0c');

describe('NAT-PMP codec (RFC 6886)', () => {
  test('requests are laid out as in §3.2 and §3.3', () => {
    assert.equal(encodeNatPmpAddressRequest().toString('hex'), '0000');
    // version 0, opcode 2 (TCP), reserved 0, internal 4001, suggested 4001, lifetime 30.
    assert.equal(encodeNatPmpMapRequest({ protocol: 'tcp', internalPort: 4001, suggestedExternalPort: 4001, lifetimeSeconds: 30 }).toString('hex'), '00 02 0000 0fa1 0fa1 0000001e'.replace(/ /g, ''));
    assert.equal(encodeNatPmpMapRequest({ protocol: 'udp', internalPort: 5350, suggestedExternalPort: 0, lifetimeSeconds: 7200 }).toString('hex'), '0001000014e6000000001c20');
  });

  test('our requests are the bytes miniupnpd was sent in the capture', () => {
    assert.equal(encodeNatPmpAddressRequest().toString('hex'), exchange('natpmp-external-address').request);
    assert.equal(encodeNatPmpMapRequest({ protocol: 'tcp', internalPort: 4001, suggestedExternalPort: 4001, lifetimeSeconds: 30 }).toString('hex'), exchange('natpmp-map-tcp-4001').request);
    assert.equal(encodeNatPmpMapRequest({ protocol: 'tcp', internalPort: 4001, suggestedExternalPort: 0, lifetimeSeconds: 0 }).toString('hex'), exchange('natpmp-delete-tcp-4001').request);
  });

  test('a hand-written external-address response (§3.2) decodes field by field', () => {
    const answer = decodeNatPmpAddressResponse(hex('00 80 0000 00001234 c6336407'));
    assert.deepEqual(answer, { opcode: 0, result: 0, epoch: 0x1234, externalAddress: '198.51.100.7' });
  });

  test('miniupnpd answers decode: address, mapping, deletion', () => {
    assert.deepEqual(decodeNatPmpAddressResponse(exchange('natpmp-external-address').response), { opcode: 0, result: 0, epoch: 10, externalAddress: '203.0.113.10' });
    assert.deepEqual(decodeNatPmpMapResponse(exchange('natpmp-map-tcp-4001').response, 'tcp'), { opcode: 2, result: 0, epoch: 10, internalPort: 4001, externalPort: 4001, lifetimeSeconds: 30 });
    assert.equal(decodeNatPmpMapResponse(exchange('natpmp-delete-tcp-4001').response, 'tcp').lifetimeSeconds, 0);
  });

  test('an error result is ERR_PORTMAP naming the code (miniupnpd: UNSUPP_OPCODE for opcode 3)', () => {
    const { response } = exchange('natpmp-unsupported-opcode');
    assert.deepEqual(decodeNatPmpHeader(response), { opcode: 3, result: 5, epoch: 11 });
    assert.throws(() => decodeNatPmpMapResponse(response, 'tcp'), /answer to opcode 3, expected 2/);
    // The same header for our TCP mapping request (opcode 2), result NOT_AUTHORIZED.
    assert.throws(() => decodeNatPmpMapResponse(hex('0082 0002 0000000b 0fa1 0000 00000000'), 'tcp'), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /NOT_AUTHORIZED \(result code 2\)/.test(err.message));
    assert.equal(natPmpResultName(5), 'UNSUPP_OPCODE');
    assert.equal(natPmpResultName(99), 'RESULT_99');
  });

  test('responses of the wrong size, version, direction or opcode are refused', () => {
    const ok = exchange('natpmp-map-tcp-4001').response;
    assert.throws(() => decodeNatPmpHeader(ok.subarray(0, 7)), /shorter than the 8-byte header/);
    assert.throws(() => decodeNatPmpMapResponse(Buffer.concat([ok, Buffer.alloc(4)]), 'tcp'), /has 20 bytes, expected 16/);
    assert.throws(() => decodeNatPmpMapResponse(ok, 'udp'), /answer to opcode 2, expected 1/);
    assert.throws(() => decodeNatPmpHeader(hex('0002000000000000')), /opcode 2 is a request/);
    assert.throws(() => decodeNatPmpHeader(hex('0280000000000000')), /version 2, expected 0/);
  });

  test('bad request fields are ERR_INVALID_ARGUMENT naming the field', () => {
    assert.throws(() => encodeNatPmpMapRequest({ protocol: 'tcp', internalPort: 0, suggestedExternalPort: 0, lifetimeSeconds: 1 }), (err: unknown) => isNattravError(err, 'ERR_INVALID_ARGUMENT') && /internal port/.test(err.message));
    assert.throws(() => encodeNatPmpMapRequest({ protocol: 'tcp', internalPort: 1, suggestedExternalPort: 70000, lifetimeSeconds: 1 }), /suggested external port/);
    assert.throws(() => encodeNatPmpMapRequest({ protocol: 'tcp', internalPort: 1, suggestedExternalPort: 0, lifetimeSeconds: -1 }), /lifetime/);
  });
});

describe('PCP codec (RFC 6887)', () => {
  const mapRequest = {
    nonce: NONCE,
    protocol: 'tcp' as const,
    clientAddress: '192.168.1.2',
    internalPort: 4002,
    suggestedExternalPort: 4002,
    suggestedExternalAddress: '0.0.0.0',
    lifetimeSeconds: 30,
  };

  test('a MAP request is the §7.1 header and the §11.1 payload', () => {
    const expected = hex(`
      02 01 0000 0000001e
      00000000000000000000ffff c0a80102
      0102030405060708090a0b0c
      06 000000 0fa2 0fa2
      00000000000000000000ffff 00000000`);
    assert.deepEqual(encodePcpMapRequest(mapRequest), expected);
  });

  test('our requests are the bytes miniupnpd was sent in the capture (MAP, renewal, deletion, ANNOUNCE)', () => {
    assert.equal(encodePcpMapRequest(mapRequest).toString('hex'), exchange('pcp-map-tcp-4002').request);
    assert.equal(encodePcpMapRequest(mapRequest).toString('hex'), exchange('pcp-map-tcp-4002-renew').request);
    assert.equal(encodePcpMapRequest({ ...mapRequest, suggestedExternalPort: 0, lifetimeSeconds: 0 }).toString('hex'), exchange('pcp-delete-tcp-4002').request);
    assert.equal(encodePcpAnnounceRequest('192.168.1.2').toString('hex'), exchange('pcp-announce').request);
  });

  test('miniupnpd MAP answers decode: assigned port, external address, lifetime, epoch, nonce', () => {
    const answer = decodePcpMapResponse(exchange('pcp-map-tcp-4002').response, mapRequest);
    assert.equal(answer.externalAddress, '203.0.113.10');
    assert.equal(answer.externalPort, 4002);
    assert.equal(answer.internalPort, 4002);
    assert.equal(answer.lifetimeSeconds, 30);
    assert.equal(answer.epoch, 11);
    assert.deepEqual(answer.nonce, NONCE);
    assert.equal(decodePcpMapResponse(exchange('pcp-delete-tcp-4002').response, mapRequest).lifetimeSeconds, 0);
    assert.equal(decodePcpAnnounceResponse(exchange('pcp-announce').response).epoch, 11);
  });

  test('miniupnpd error answers: ADDRESS_MISMATCH for a wrong client address, UNSUPP_VERSION for version 3', () => {
    assert.throws(() => decodePcpMapResponse(exchange('pcp-address-mismatch').response, { ...mapRequest, internalPort: 4003 }), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /ADDRESS_MISMATCH \(result code 12\)/.test(err.message));
    const header = decodePcpResponseHeader(exchange('pcp-unsupported-version').response);
    assert.equal(header.result, 1);
    assert.equal(pcpResultName(header.result), 'UNSUPP_VERSION');
    assert.equal(pcpResultName(13), 'EXCESSIVE_REMOTE_PEERS');
  });

  test('a MAP answer for another nonce, protocol or port is refused', () => {
    const response = exchange('pcp-map-tcp-4002').response;
    assert.throws(() => decodePcpMapResponse(response, { ...mapRequest, nonce: Buffer.alloc(12) }), /another mapping nonce/);
    assert.throws(() => decodePcpMapResponse(response, { ...mapRequest, protocol: 'udp' }), /for protocol 6 port 4002, not udp port 4002/);
    assert.throws(() => decodePcpMapResponse(response, { ...mapRequest, internalPort: 4003 }), /not tcp port 4003/);
  });

  test('sizes, version and the R bit are checked before any field is read', () => {
    const response = exchange('pcp-map-tcp-4002').response;
    assert.throws(() => decodePcpResponseHeader(response.subarray(0, 20)), /shorter than the 24-byte header/);
    assert.throws(() => decodePcpResponseHeader(Buffer.concat([response, Buffer.alloc(2)])), /multiple of 4/);
    assert.throws(() => decodePcpResponseHeader(Buffer.alloc(1104, 2)), /at most 1100/);
    assert.throws(() => decodePcpMapResponse(response.subarray(0, 56), mapRequest), /shorter than 60/);
    const request = encodePcpMapRequest(mapRequest);
    assert.throws(() => decodePcpResponseHeader(request), /no R bit/);
    const v1 = Buffer.from(response);
    v1[0] = 1;
    assert.throws(() => decodePcpResponseHeader(v1), /version 1, expected 2/);
  });

  test('an external address that is not IPv4-mapped is given as IPv6 text', () => {
    const response = Buffer.from(exchange('pcp-map-tcp-4002').response);
    hex('20010db8000000000000000000000001').copy(response, 44);
    assert.equal(decodePcpMapResponse(response, mapRequest).externalAddress, '2001:db8:0:0:0:0:0:1');
  });

  test('bad request fields are ERR_INVALID_ARGUMENT', () => {
    assert.throws(() => encodePcpMapRequest({ ...mapRequest, nonce: Buffer.alloc(8) }), /nonce must be 12 bytes/);
    assert.throws(() => encodePcpMapRequest({ ...mapRequest, clientAddress: '::1' }), /client address must be an IPv4 address/);
    assert.throws(() => encodePcpMapRequest({ ...mapRequest, internalPort: 65536 }), /internal port/);
  });
});

describe('gateway epoch (RFC 6886 §3.6, RFC 6887 §8.5)', () => {
  test('NAT-PMP: the epoch must grow by 7/8 of our elapsed time, less 2 s', () => {
    const previous = { epochSeconds: 1000, atMs: 0 };
    assert.equal(epochLost('nat-pmp', undefined, previous), false);
    assert.equal(epochLost('nat-pmp', previous, { epochSeconds: 1100, atMs: 100_000 }), false);
    // 7/8 of 100 s is 87.5 s: 1085.5 is within the 2 s slack, 1085 is not.
    assert.equal(epochLost('nat-pmp', previous, { epochSeconds: 1086, atMs: 100_000 }), false);
    assert.equal(epochLost('nat-pmp', previous, { epochSeconds: 1085, atMs: 100_000 }), true);
    assert.equal(epochLost('nat-pmp', previous, { epochSeconds: 3, atMs: 100_000 }), true);
  });

  test('PCP: going back more than 1 s, or deltas that disagree, mean lost state', () => {
    const previous = { epochSeconds: 1000, atMs: 0 };
    assert.equal(epochLost('pcp', previous, { epochSeconds: 999, atMs: 0 }), false);
    assert.equal(epochLost('pcp', previous, { epochSeconds: 998, atMs: 0 }), true);
    assert.equal(epochLost('pcp', previous, { epochSeconds: 1100, atMs: 100_000 }), false);
    // The server's clock ran 200 s while ours ran 100 s: not the same server state.
    assert.equal(epochLost('pcp', previous, { epochSeconds: 1200, atMs: 100_000 }), true);
    // A restarted daemon: epoch small again.
    assert.equal(epochLost('pcp', previous, { epochSeconds: 5, atMs: 100_000 }), true);
  });
});

describe('decoders on random bytes', () => {
  test('throw nothing but ERR_PORTMAP (bounded: 5000 inputs)', () => {
    const decoders: Array<(b: Buffer) => unknown> = [
      (b) => decodeNatPmpAddressResponse(b),
      (b) => decodeNatPmpMapResponse(b, 'tcp'),
      (b) => decodePcpMapResponse(b, { nonce: NONCE, protocol: 'tcp', internalPort: 4002 }),
      (b) => decodePcpAnnounceResponse(b),
    ];
    for (let i = 0; i < 5000; i++) {
      const bytes = randomBytes(i % 80);
      // Make a good share of them look like the right version so the deeper checks run.
      if (bytes.length > 1) bytes[0] = i % 3 === 0 ? 0 : 2;
      if (bytes.length > 1 && i % 2 === 0) bytes[1] = (bytes[1] as number) | 0x80;
      for (const decode of decoders) {
        try {
          decode(bytes);
        } catch (err) {
          assert.ok(isNattravError(err, 'ERR_PORTMAP'), `unexpected ${String(err)} for ${bytes.toString('hex')}`);
        }
      }
    }
  });
});
