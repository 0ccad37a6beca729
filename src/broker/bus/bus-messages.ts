/**
 * What brokers of a cluster say to each other over a {@link BrokerBus} (bus.ts). Two
 * messages, both carrying STUN bytes untouched (their integrity is the recipient's
 * session key, which only the recipient and the brokers hold):
 *
 * 1. relay (X -> Y): "send this ConnectionRequest to the holder of `uri`". X runs the
 *    attempt; Y took the recipient's registration (Registration.broker), so the
 *    recipient's NAT mapping (or control connection) leads to Y.
 *      0      kind 1
 *      1..2   length U of the URI (16 bits), then U bytes of UTF-8
 *      ..     the encoded ConnectionRequest
 * 2. answer (Y -> X): "the recipient answered your request; here is its answer, and
 *    where it came from" (X checks both as if the answer had come to itself).
 *      0      kind 2
 *      1      transport: 1 udp, 2 tcp
 *      2      family (4 or 6), 3..4 port, 5 length A, then A bytes of address text
 *      ..     the encoded response
 *
 * Pure: no sockets. Decoders return undefined for anything else (a bus delivers bytes
 * from brokers only, but a bug or a mixed-version cluster must not crash one).
 */
import { MAX_MESSAGE_LENGTH, MAX_URI_BYTES } from '../../wire/constants.js';
import type { TransportAddress } from '../../wire/types.js';

/** Kind byte of each message. */
export const BusMessageKind = { relay: 1, answer: 2 } as const;

/** X asks Y to send a ConnectionRequest to the registered holder of `uri`. */
export interface RelayRequest {
  readonly kind: 'relay';
  readonly uri: string;
  /** The encoded ConnectionRequest, under the recipient's session key. */
  readonly stun: Uint8Array;
}

/** Y passes the recipient's answer back to X. */
export interface RelayedAnswer {
  readonly kind: 'answer';
  readonly transport: 'udp' | 'tcp';
  /** Where the answer came from (the registered endpoint). */
  readonly from: TransportAddress;
  /** The encoded answer, as the recipient sent it. */
  readonly stun: Uint8Array;
}

/** Any bus message. */
export type BusMessage = RelayRequest | RelayedAnswer;

const MAX_ADDRESS_TEXT = 255;

/** Encodes a bus message. */
export function encodeBusMessage(message: BusMessage): Buffer {
  if (message.kind === 'relay') {
    const uri = Buffer.from(message.uri, 'utf8');
    const header = Buffer.alloc(3);
    header[0] = BusMessageKind.relay;
    header.writeUInt16BE(uri.length, 1);
    return Buffer.concat([header, uri, message.stun]);
  }
  const address = Buffer.from(message.from.address, 'ascii').subarray(0, MAX_ADDRESS_TEXT);
  const header = Buffer.alloc(6);
  header[0] = BusMessageKind.answer;
  header[1] = message.transport === 'udp' ? 1 : 2;
  header[2] = message.from.family === 'IPv4' ? 4 : 6;
  header.writeUInt16BE(message.from.port, 3);
  header[5] = address.length;
  return Buffer.concat([header, address, message.stun]);
}

/** Decodes a bus message; undefined for bytes that are not one (or carry no or an oversized STUN part). */
export function decodeBusMessage(bytes: Uint8Array): BusMessage | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < 1) return undefined;
  let stunStart: number;
  let decoded: BusMessage;
  if (buffer[0] === BusMessageKind.relay) {
    if (buffer.length < 3) return undefined;
    const length = buffer.readUInt16BE(1);
    if (length === 0 || length > MAX_URI_BYTES) return undefined;
    stunStart = 3 + length;
    if (stunStart > buffer.length) return undefined;
    decoded = { kind: 'relay', uri: buffer.toString('utf8', 3, stunStart), stun: buffer.subarray(stunStart) };
  } else if (buffer[0] === BusMessageKind.answer) {
    if (buffer.length < 6) return undefined;
    const transport = buffer[1] === 1 ? 'udp' : buffer[1] === 2 ? 'tcp' : undefined;
    const family = buffer[2] === 4 ? 'IPv4' : buffer[2] === 6 ? 'IPv6' : undefined;
    if (transport === undefined || family === undefined) return undefined;
    stunStart = 6 + (buffer[5] as number);
    if (stunStart > buffer.length) return undefined;
    const from: TransportAddress = { family, address: buffer.toString('ascii', 6, stunStart), port: buffer.readUInt16BE(3) };
    decoded = { kind: 'answer', transport, from, stun: buffer.subarray(stunStart) };
  } else {
    return undefined;
  }
  const stunLength = buffer.length - stunStart;
  if (stunLength === 0 || stunLength > MAX_MESSAGE_LENGTH) return undefined;
  return decoded;
}
