/**
 * MAPPED-ADDRESS (RFC 8489 §14.1) and XOR-MAPPED-ADDRESS (§14.2) encodings,
 * also used by RFC 5780's RESPONSE-ORIGIN / OTHER-ADDRESS and by nattrav's
 * endpoint attributes.
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  |0 0 0 0 0 0 0 0|    Family     |         (X-)Port              |
 *  |                 (X-)Address (32 bits or 128 bits)             |
 */
import { isIPv4, isIPv6 } from 'node:net';
import { AddressFamily, MAGIC_COOKIE, TRANSACTION_ID_LENGTH } from './constants.js';
import { checkBytes, checkInteger, invalidArgument, malformed, readU16, writeU16 } from './fail.js';
import type { AddressFamilyName, TransportAddress } from './types.js';

/** RFC 8489 §14.1: reserved byte + family byte + 16-bit port. */
const ADDRESS_HEADER_LENGTH = 4;
const FAMILY_OFFSET = 1;
const PORT_OFFSET = 2;
const IPV4_LENGTH = 4;
const IPV6_LENGTH = 16;
const IPV6_GROUPS = 8;
/** RFC 8489 §14.2: X-Port is the port XOR the most significant 16 bits of the magic cookie. */
const COOKIE_HIGH_16 = MAGIC_COOKIE >>> 16;

const COOKIE_BYTES = Uint8Array.of(MAGIC_COOKIE >>> 24, (MAGIC_COOKIE >>> 16) & 0xff, (MAGIC_COOKIE >>> 8) & 0xff, MAGIC_COOKIE & 0xff);

/** A dotted quad as an unsigned 32-bit number, or -1 unless it is one as Node writes them (no leading zeros). */
export function packIPv4(text: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && part === 0) return -1;
      part = part * 10 + (c - 0x30);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (digits === 0 || dots !== 3) return -1;
  return value * 256 + part;
}

/** Validates `a` and returns the raw address bytes (4 or 16). */
function addressBytes(a: TransportAddress): Uint8Array {
  if (typeof a !== 'object' || a === null) throw invalidArgument('a transport address must be an object { family, address, port }');
  checkInteger(a.port, 0, 0xffff, 'port');
  if (typeof a.address !== 'string') throw invalidArgument('address must be a string');
  if (a.family === 'IPv4') {
    const packed = packIPv4(a.address);
    if (packed >= 0) return Uint8Array.of(packed >>> 24, (packed >>> 16) & 0xff, (packed >>> 8) & 0xff, packed & 0xff);
    if (!isIPv4(a.address)) throw invalidArgument(`"${a.address}" is not an IPv4 address; pass a dotted quad or family 'IPv6'`);
    return Uint8Array.from(a.address.split('.'), Number);
  }
  if (a.family === 'IPv6') {
    if (!isIPv6(a.address)) throw invalidArgument(`"${a.address}" is not an IPv6 address; pass one or family 'IPv4'`);
    return parseIPv6(a.address);
  }
  throw invalidArgument(`family must be 'IPv4' or 'IPv6', got ${String(a.family)}`);
}

/** Parses an IPv6 address that `net.isIPv6` accepted (zone ID dropped, embedded IPv4 allowed) into its 16 bytes. */
export function parseIPv6(text: string): Uint8Array {
  let s = text;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const groupsOf = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const [a, b, c, d] = g.split('.').map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const gap = s.indexOf('::');
  const head = groupsOf(gap >= 0 ? s.slice(0, gap) : s);
  const tail = gap >= 0 ? groupsOf(s.slice(gap + 2)) : [];
  const groups = [...head, ...new Array<number>(IPV6_GROUPS - head.length - tail.length).fill(0), ...tail];
  if (groups.length !== IPV6_GROUPS || groups.some((g) => !(g >= 0 && g <= 0xffff))) {
    throw invalidArgument(`"${text}" is not an IPv6 address nattrav can encode`);
  }
  const bytes = new Uint8Array(IPV6_LENGTH);
  groups.forEach((g, i) => writeU16(bytes, i * 2, g));
  return bytes;
}

/**
 * Formats 16 bytes as libuv (and so Node's `socket.remoteAddress`) does:
 * lowercase, the longest run of two or more zero groups (the first on a tie)
 * as "::", and dotted-quad form for IPv4-mapped (::ffff:a.b.c.d) and
 * IPv4-compatible (::a.b.c.d) addresses.
 */
export function formatIPv6(b: Uint8Array): string {
  const words: number[] = [];
  for (let i = 0; i < IPV6_GROUPS; i++) words.push(readU16(b, i * 2));
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < IPV6_GROUPS; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < IPV6_GROUPS && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  let out = '';
  for (let i = 0; i < IPV6_GROUPS; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
      break;
    }
    out += words[i].toString(16);
  }
  if (bestBase >= 0 && bestBase + bestLen === IPV6_GROUPS) out += ':';
  return out;
}

/** Writes the 4-byte header and the address bytes. */
function pack(family: number, port: number, addr: Uint8Array): Uint8Array {
  const v = new Uint8Array(ADDRESS_HEADER_LENGTH + addr.length);
  v[FAMILY_OFFSET] = family;
  writeU16(v, PORT_OFFSET, port);
  v.set(addr, ADDRESS_HEADER_LENGTH);
  return v;
}

/** Checks the header and length; returns the family name. The reserved first byte is ignored (§14.1). */
function unpack(v: Uint8Array, attrName: string): AddressFamilyName {
  if (v.length < ADDRESS_HEADER_LENGTH) throw malformed(`${attrName} is ${v.length} bytes, shorter than its ${ADDRESS_HEADER_LENGTH}-byte header`);
  const family = v[FAMILY_OFFSET];
  if (family === AddressFamily.IPv4) {
    if (v.length !== ADDRESS_HEADER_LENGTH + IPV4_LENGTH) throw malformed(`${attrName} is IPv4 but ${v.length} bytes long, not ${ADDRESS_HEADER_LENGTH + IPV4_LENGTH}`);
    return 'IPv4';
  }
  if (family === AddressFamily.IPv6) {
    if (v.length !== ADDRESS_HEADER_LENGTH + IPV6_LENGTH) throw malformed(`${attrName} is IPv6 but ${v.length} bytes long, not ${ADDRESS_HEADER_LENGTH + IPV6_LENGTH}`);
    return 'IPv6';
  }
  throw malformed(`${attrName} has unknown address family 0x${family.toString(16).padStart(2, '0')}`);
}

function toText(family: AddressFamilyName, addr: Uint8Array): string {
  return family === 'IPv4' ? `${addr[0]}.${addr[1]}.${addr[2]}.${addr[3]}` : formatIPv6(addr);
}

function familyCode(family: AddressFamilyName): number {
  return family === 'IPv4' ? AddressFamily.IPv4 : AddressFamily.IPv6;
}

/** The XOR pad: the magic cookie, then (for IPv6) the transaction ID. */
function xorPad(transactionId: Uint8Array): Uint8Array {
  checkBytes(transactionId, 'transactionId');
  if (transactionId.length !== TRANSACTION_ID_LENGTH) {
    throw invalidArgument(`transactionId must be ${TRANSACTION_ID_LENGTH} bytes, got ${transactionId.length}`);
  }
  const pad = new Uint8Array(IPV6_LENGTH);
  pad.set(COOKIE_BYTES, 0);
  pad.set(transactionId, COOKIE_BYTES.length);
  return pad;
}

function xorWith(addr: Uint8Array, pad: Uint8Array): Uint8Array {
  const out = new Uint8Array(addr.length);
  for (let i = 0; i < addr.length; i++) out[i] = addr[i] ^ pad[i];
  return out;
}

/** Encodes MAPPED-ADDRESS form (RFC 8489 §14.1); throws InvalidArgument for a bad address, family or port. */
export function encodeAddress(a: TransportAddress): Uint8Array {
  const addr = addressBytes(a);
  return pack(familyCode(a.family), a.port, addr);
}

/** Decodes MAPPED-ADDRESS form; throws StunMalformed naming `attrName` for a bad family or length. */
export function decodeAddress(v: Uint8Array, attrName = 'MAPPED-ADDRESS'): TransportAddress {
  const family = unpack(v, attrName);
  return { family, address: toText(family, v.subarray(ADDRESS_HEADER_LENGTH)), port: readU16(v, PORT_OFFSET) };
}

/** Encodes XOR-MAPPED-ADDRESS form (RFC 8489 §14.2) against this transaction ID. */
export function encodeXorAddress(a: TransportAddress, transactionId: Uint8Array): Uint8Array {
  const addr = addressBytes(a);
  const pad = xorPad(transactionId);
  return pack(familyCode(a.family), a.port ^ COOKIE_HIGH_16, xorWith(addr, pad));
}

/** Decodes XOR-MAPPED-ADDRESS form; throws StunMalformed naming `attrName` for a bad family or length. */
export function decodeXorAddress(v: Uint8Array, transactionId: Uint8Array, attrName = 'XOR-MAPPED-ADDRESS'): TransportAddress {
  const pad = xorPad(transactionId);
  const family = unpack(v, attrName);
  const addr = xorWith(v.subarray(ADDRESS_HEADER_LENGTH), pad);
  return { family, address: toText(family, addr), port: readU16(v, PORT_OFFSET) ^ COOKIE_HIGH_16 };
}
