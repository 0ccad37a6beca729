/**
 * The fast path for the broker's commonest datagram: a plain UDP Binding request
 * over IPv4 (no CHANGE-REQUEST, RESPONSE-PORT, PADDING or integrity; nothing the
 * broker does not understand). Its answer depends only on the socket it arrived on,
 * the request's size and whether it carried FINGERPRINT, and on the requester's
 * address: so the first such request of each shape is answered by the full path
 * (decode, rfc5780.ts, amplification.ts), whose answer is kept as a template, and
 * later ones are answered by copying the template and writing in the transaction ID,
 * the addresses and the FINGERPRINT. No decoding, no message objects.
 *
 * It never answers what the full path would answer differently: anything but a
 * well-formed plain Binding goes the full way (which drops, refuses or answers it),
 * and so does every shape whose answer drew on the amplification budgets (its size
 * then depends on them: a bare 20-byte request) or had no answer at all.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import { crc32 } from 'node:zlib';
import { ATTRIBUTE_HEADER_LENGTH, AttrType, FINGERPRINT_LENGTH, FINGERPRINT_XOR, HEADER_LENGTH, MAGIC_COOKIE, MAX_MESSAGE_LENGTH } from '../wire/constants.js';
import { padded, TRANSACTION_ID_OFFSET } from '../wire/scan.js';
import { packIPv4 } from '../wire/address.js';
import type { ServerSocketId } from './rfc5780.js';

/** The message type of a Binding request (RFC 8489 §5: method 0x001, class request). */
const BINDING_REQUEST_TYPE = 0x0001;
/** RFC 8489 §14.2: X-Port is the port XOR the most significant 16 bits of the magic cookie. */
const COOKIE_HIGH_16 = MAGIC_COOKIE >>> 16;
/** Offsets inside an IPv4 (XOR-)MAPPED-ADDRESS value: family byte, port, address. */
const FAMILY_OFFSET = 1;
const PORT_OFFSET = 2;
const IPV4_OFFSET = 4;
const IPV4_FAMILY = 0x01;
/** Request attributes that change a Binding answer (rfc5780.ts) or need checking (integrity): the full path handles them. */
const ANSWER_CHANGING: ReadonlySet<number> = new Set([
  AttrType.ChangeRequest,
  AttrType.ResponsePort,
  AttrType.Padding,
  AttrType.MessageIntegrity,
  AttrType.MessageIntegritySha256,
]);
/** Shapes remembered at most (sizes x FINGERPRINT x sockets: a flood of odd sizes cannot grow it past this). */
export const MAX_BINDING_SHAPES = 4_096;

/** Not a plain Binding request: the full path decides. */
export const NOT_PLAIN = -1;

/**
 * Whether `data` is a well-formed Binding request that only carries attributes which
 * do not change its answer, all of them known or comprehension-optional (`known`):
 * 1 with a FINGERPRINT that matches, 0 without one, {@link NOT_PLAIN} otherwise
 * (malformed, a FINGERPRINT that does not match, another method or class, ...).
 */
export function plainBindingRequest(data: Uint8Array, known: ReadonlySet<number>): number {
  // The full path refuses what the decoder refuses; this one must not depend on that to stay small.
  if (data.length < HEADER_LENGTH || data.length > MAX_MESSAGE_LENGTH) return NOT_PLAIN;
  if (((data[0] << 8) | data[1]) !== BINDING_REQUEST_TYPE) return NOT_PLAIN;
  if (readU32(data, 4) !== MAGIC_COOKIE) return NOT_PLAIN;
  const length = (data[2] << 8) | data[3];
  if (length % 4 !== 0 || data.length !== HEADER_LENGTH + length) return NOT_PLAIN;
  let offset = HEADER_LENGTH;
  while (offset < data.length) {
    if (offset + ATTRIBUTE_HEADER_LENGTH > data.length) return NOT_PLAIN;
    const type = (data[offset] << 8) | data[offset + 1];
    const valueLength = (data[offset + 2] << 8) | data[offset + 3];
    const next = offset + ATTRIBUTE_HEADER_LENGTH + padded(valueLength);
    if (next > data.length) return NOT_PLAIN;
    if (type === AttrType.Fingerprint) {
      // RFC 8489 §14.7: last, 4 bytes, and it must match.
      if (next !== data.length || valueLength !== FINGERPRINT_LENGTH) return NOT_PLAIN;
      const expected = (crc32(data.subarray(0, offset)) ^ FINGERPRINT_XOR) >>> 0;
      return readU32(data, offset + ATTRIBUTE_HEADER_LENGTH) === expected ? 1 : NOT_PLAIN;
    }
    if (ANSWER_CHANGING.has(type) || (type < 0x8000 && !known.has(type))) return NOT_PLAIN;
    offset = next;
  }
  return 0;
}

/** Where a learnt answer's variable parts sit (offsets of attribute values; -1 when absent). */
interface Template {
  readonly bytes: Buffer;
  readonly xorMapped: number;
  readonly mapped: number;
  /** Offset of the FINGERPRINT attribute header. */
  readonly fingerprint: number;
}

/** Learnt answers to plain Binding requests, by shape; one per broker. */
export class PlainBindingAnswers {
  readonly #known: ReadonlySet<number>;
  /** Shape -> template, or null: the full path answers this shape every time. */
  readonly #templates = new Map<number, Template | null>();

  /** `known`: the attribute types the broker understands in requests (udp.ts). */
  constructor(known: ReadonlySet<number>) {
    this.#known = known;
  }

  /** Shapes learnt (for tests). */
  get size(): number {
    return this.#templates.size;
  }

  /**
   * The shape of `data` from `address` arriving on `arrivedOn`, or {@link NOT_PLAIN}: a number
   * to answer it by ({@link PlainBindingAnswers.send}) or to learn its answer under.
   */
  shape(data: Uint8Array, family: string, arrivedOn: ServerSocketId): number {
    if (family !== 'IPv4') return NOT_PLAIN;
    const fingerprint = plainBindingRequest(data, this.#known);
    if (fingerprint === NOT_PLAIN) return NOT_PLAIN;
    return (((data.length << 1) | fingerprint) << 2) | (arrivedOn.alternateIp ? 2 : 0) | (arrivedOn.alternatePort ? 1 : 0);
  }

  /** Sends the learnt answer for `shape` from `socket` to the requester; false when none is learnt (the full path answers). */
  send(shape: number, data: Uint8Array, socket: UdpSocket, address: string, port: number): boolean {
    const template = this.#templates.get(shape);
    if (template === undefined || template === null) return false;
    const ip = packIPv4(address);
    if (ip < 0) return false;
    const out = Buffer.allocUnsafe(template.bytes.length);
    template.bytes.copy(out);
    out.set(data.subarray(TRANSACTION_ID_OFFSET, HEADER_LENGTH), TRANSACTION_ID_OFFSET);
    if (template.xorMapped >= 0) {
      out.writeUInt16BE(port ^ COOKIE_HIGH_16, template.xorMapped + PORT_OFFSET);
      out.writeUInt32BE((ip ^ MAGIC_COOKIE) >>> 0, template.xorMapped + IPV4_OFFSET);
    }
    if (template.mapped >= 0) {
      out.writeUInt16BE(port, template.mapped + PORT_OFFSET);
      out.writeUInt32BE(ip, template.mapped + IPV4_OFFSET);
    }
    if (template.fingerprint >= 0) {
      out.writeUInt32BE((crc32(out.subarray(0, template.fingerprint)) ^ FINGERPRINT_XOR) >>> 0, template.fingerprint + ATTRIBUTE_HEADER_LENGTH);
    }
    socket.send(out, port, address, ignore);
    return true;
  }

  /**
   * The full path answered a request of `shape` with `answer`: keep it as the template,
   * unless `drew` (its size depended on the amplification budgets) or there was no answer,
   * in which case that shape always goes the full way.
   */
  learn(shape: number, answer: Buffer | undefined, drew: boolean): void {
    if (shape === NOT_PLAIN || this.#templates.has(shape) || this.#templates.size >= MAX_BINDING_SHAPES) return;
    this.#templates.set(shape, answer === undefined || drew ? null : template(answer));
  }
}

function ignore(): void {}

function readU32(data: Uint8Array, offset: number): number {
  return ((data[offset] << 24) | (data[offset + 1] << 16) | (data[offset + 2] << 8) | data[offset + 3]) >>> 0;
}

/** Finds the variable parts of an answer; null when an address in it is not IPv4 (then it is not reused). */
function template(answer: Buffer): Template | null {
  let xorMapped = -1;
  let mapped = -1;
  let fingerprint = -1;
  for (let offset = HEADER_LENGTH; offset + ATTRIBUTE_HEADER_LENGTH <= answer.length; ) {
    const type = answer.readUInt16BE(offset);
    const length = answer.readUInt16BE(offset + 2);
    const value = offset + ATTRIBUTE_HEADER_LENGTH;
    if (type === AttrType.XorMappedAddress || type === AttrType.MappedAddress) {
      if (answer[value + FAMILY_OFFSET] !== IPV4_FAMILY) return null;
      if (type === AttrType.XorMappedAddress) xorMapped = value;
      else mapped = value;
    } else if (type === AttrType.Fingerprint) {
      fingerprint = offset;
    }
    offset = value + padded(length);
  }
  return { bytes: Buffer.from(answer), xorMapped, mapped, fingerprint };
}
