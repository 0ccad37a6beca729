/**
 * Reads a tcpdump capture (classic pcap, microsecond or nanosecond timestamps; link types
 * Ethernet, Linux cooked v1 and v2) into IPv4 TCP/UDP packets, and names what each carries:
 * TCP flags, the STUN messages of nattrav's wire (method and class), TLS records. Pure: takes
 * the file's bytes.
 */
import { MessageClass, Method, MAGIC_COOKIE } from '../../src/wire/constants.js';
import { decodeMessageType } from '../../src/wire/message.js';

/** One captured IPv4 packet. */
export interface CapturedPacket {
  /** Capture time, ms since the epoch (sub-ms precision). */
  readonly timeMs: number;
  readonly protocol: 'tcp' | 'udp';
  readonly src: string;
  readonly srcPort: number;
  readonly dst: string;
  readonly dstPort: number;
  /** The IPv4 identification field and total length: with the protocol, they follow a packet through NAT. */
  readonly ipId: number;
  readonly ipLength: number;
  /** TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for UDP. */
  readonly flags: number;
  readonly payload: Uint8Array;
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;
const ETHERTYPE_IPV4 = 0x0800;
const PCAP_MAGIC_US = 0xa1b2c3d4;
const PCAP_MAGIC_NS = 0xa1b23c4d;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;

/** Where the IPv4 header starts in a frame of `linkType`, or undefined when the frame is not IPv4. */
function ipOffset(linkType: number, frame: DataView): number | undefined {
  const at = (offset: number): number | undefined => (frame.byteLength >= offset + 2 ? frame.getUint16(offset) : undefined);
  if (linkType === LINKTYPE_ETHERNET) return at(12) === ETHERTYPE_IPV4 ? 14 : undefined;
  if (linkType === LINKTYPE_LINUX_SLL) return at(14) === ETHERTYPE_IPV4 ? 16 : undefined;
  if (linkType === LINKTYPE_LINUX_SLL2) return at(0) === ETHERTYPE_IPV4 ? 20 : undefined;
  throw new Error(`pcap: link type ${linkType} is not read here (Ethernet, Linux cooked v1/v2 are)`);
}

const dotted = (view: DataView, offset: number): string => [0, 1, 2, 3].map((i) => view.getUint8(offset + i)).join('.');

/** Decodes one IPv4 TCP/UDP packet starting at `offset` of `frame`, or undefined for anything else. */
function decodeIpv4(frame: DataView, offset: number, timeMs: number): CapturedPacket | undefined {
  if (frame.byteLength < offset + 20 || frame.getUint8(offset) >> 4 !== 4) return undefined;
  const headerLength = (frame.getUint8(offset) & 0x0f) * 4;
  const ipLength = frame.getUint16(offset + 2);
  const proto = frame.getUint8(offset + 9);
  const l4 = offset + headerLength;
  const end = Math.min(frame.byteLength, offset + ipLength);
  if (l4 + 8 > end) return undefined;
  const base = { timeMs, src: dotted(frame, offset + 12), dst: dotted(frame, offset + 16), ipId: frame.getUint16(offset + 4), ipLength, srcPort: frame.getUint16(l4), dstPort: frame.getUint16(l4 + 2) };
  const bytes = (from: number): Uint8Array => new Uint8Array(frame.buffer, frame.byteOffset + from, Math.max(0, end - from));
  if (proto === IPPROTO_UDP) return { ...base, protocol: 'udp', flags: 0, payload: bytes(l4 + 8) };
  if (proto !== IPPROTO_TCP || l4 + 20 > end) return undefined;
  const dataOffset = (frame.getUint8(l4 + 12) >> 4) * 4;
  return { ...base, protocol: 'tcp', flags: frame.getUint8(l4 + 13), payload: bytes(l4 + dataOffset) };
}

/** Every IPv4 TCP/UDP packet of a classic pcap file, in capture order. Throws on a file that is not one. */
export function readPcap(file: Uint8Array): CapturedPacket[] {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (view.byteLength < 24) return [];
  const magicBig = view.getUint32(0, false);
  const magicLittle = view.getUint32(0, true);
  const little = magicLittle === PCAP_MAGIC_US || magicLittle === PCAP_MAGIC_NS;
  if (!little && magicBig !== PCAP_MAGIC_US && magicBig !== PCAP_MAGIC_NS) throw new Error('pcap: not a classic pcap file (bad magic)');
  const nanos = (little ? magicLittle : magicBig) === PCAP_MAGIC_NS;
  const linkType = view.getUint32(20, little);
  const packets: CapturedPacket[] = [];
  for (let at = 24; at + 16 <= view.byteLength; ) {
    const seconds = view.getUint32(at, little);
    const fraction = view.getUint32(at + 4, little);
    const captured = view.getUint32(at + 8, little);
    const start = at + 16;
    at = start + captured;
    if (at > view.byteLength) break;
    const frame = new DataView(file.buffer, file.byteOffset + start, captured);
    const offset = ipOffset(linkType, frame);
    const timeMs = seconds * 1000 + (nanos ? fraction / 1e6 : fraction / 1e3);
    const packet = offset === undefined ? undefined : decodeIpv4(frame, offset, timeMs);
    if (packet !== undefined) packets.push(packet);
  }
  return packets;
}

const METHOD_NAMES = new Map<number, string>(Object.entries(Method).map(([name, code]) => [code, name]));
const CLASS_NAMES = new Map<number, string>([
  [MessageClass.Request, 'request'],
  [MessageClass.Indication, 'indication'],
  [MessageClass.SuccessResponse, 'response'],
  [MessageClass.ErrorResponse, 'error response'],
]);
const TLS_RECORDS = new Map<number, string>([[20, 'TLS ChangeCipherSpec'], [21, 'TLS alert'], [22, 'TLS handshake'], [23, 'TLS encrypted']]);
const TLS_HANDSHAKE_TYPES = new Map<number, string>([[1, 'ClientHello'], [2, 'ServerHello']]);
const STUN_HEADER = 20;
const TLS_HEADER = 5;

/** The messages one payload carries, in order ("Connect request", "TLS handshake ClientHello", "120 bytes"). */
export function describePayload(payload: Uint8Array): string[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const names: string[] = [];
  let at = 0;
  while (at < payload.byteLength) {
    const left = payload.byteLength - at;
    if (left >= STUN_HEADER && view.getUint32(at + 4) === MAGIC_COOKIE && view.getUint8(at) < 0x40) {
      const { method, cls } = decodeMessageType(view.getUint16(at));
      names.push(`${METHOD_NAMES.get(method) ?? `method 0x${method.toString(16)}`} ${CLASS_NAMES.get(cls) ?? ''}`.trim());
      at += STUN_HEADER + view.getUint16(at + 2);
      continue;
    }
    const record = TLS_RECORDS.get(view.getUint8(at));
    if (record !== undefined && left >= TLS_HEADER && view.getUint8(at + 1) === 3) {
      const type = record === 'TLS handshake' && left > TLS_HEADER ? TLS_HANDSHAKE_TYPES.get(view.getUint8(at + TLS_HEADER)) : undefined;
      names.push(type === undefined ? record : `${record} ${type}`);
      at += TLS_HEADER + view.getUint16(at + 3);
      continue;
    }
    names.push(`${left} bytes`);
    break;
  }
  return names;
}

/** What a packet is: its TCP control flags and the messages it carries; undefined for a bare ACK. */
export function describePacket(packet: CapturedPacket): string | undefined {
  const parts: string[] = [];
  if (packet.protocol === 'tcp') {
    const { flags } = packet;
    if ((flags & TCP_SYN) !== 0) parts.push((flags & TCP_ACK) !== 0 ? 'SYN/ACK' : 'SYN');
    if ((flags & TCP_FIN) !== 0) parts.push('FIN');
    if ((flags & TCP_RST) !== 0) parts.push('RST');
  }
  if (packet.payload.byteLength > 0) parts.push(...describePayload(packet.payload));
  return parts.length === 0 ? undefined : parts.join(' + ');
}
