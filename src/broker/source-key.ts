/**
 * The key under which the broker counts a source address against its limits
 * (rate buckets, per-source caps, amplification budgets: guard.ts, tcp.ts,
 * rendezvous.ts). An IPv4 host has one address; an IPv6 host, and so an
 * attacker, is handed a whole /64 (RFC 7421) and can send from any address in
 * it, so IPv6 sources are counted by their /64 prefix. An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d, as a dual-stack socket reports an IPv4 peer) is the
 * IPv4 address it maps, so one host is one key on either kind of socket.
 */
import { isIPv6 } from 'node:net';
import { formatIPv6, parseIPv6 } from '../wire/address.js';

/** Bytes of an IPv6 address that make its /64 prefix. */
const PREFIX_64_BYTES = 8;
/** Bytes of zeros, then 0xffff, that start an IPv4-mapped address (RFC 4291 §2.5.5.2). */
const MAPPED_ZERO_BYTES = 10;

/** The address keyed last and its key: a flood comes from one source, so this is the common case. */
let lastAddress = '';
let lastKey = '';

/**
 * The limit key of source address `address`: an IPv4 address as it is, an
 * IPv4-mapped IPv6 address as its IPv4 address, any other IPv6 address as its
 * /64 prefix written `prefix::/64` (zone ID dropped). Anything that is not an
 * IP address (e.g. '?' for a socket already closed) is its own key.
 */
export function sourceKey(address: string): string {
  if (!address.includes(':')) return address;
  if (address === lastAddress) return lastKey;
  let key = address;
  if (isIPv6(address)) {
    const bytes = parseIPv6(address);
    if (isMapped(bytes)) {
      key = `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
    } else {
      bytes.fill(0, PREFIX_64_BYTES);
      key = `${formatIPv6(bytes)}/64`;
    }
  }
  lastAddress = address;
  lastKey = key;
  return key;
}

/** Whether 16 address bytes are ::ffff:a.b.c.d. */
function isMapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < MAPPED_ZERO_BYTES; i++) if (bytes[i] !== 0) return false;
  return bytes[MAPPED_ZERO_BYTES] === 0xff && bytes[MAPPED_ZERO_BYTES + 1] === 0xff;
}
