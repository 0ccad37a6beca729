/**
 * Whether an IP address is one a LAN uses: the ranges a peer's private endpoints may
 * name. A peer may point the other one's LAN probes only at such addresses (a datagram
 * attempt's `lan` strategy), never at a public host.
 */
import { isIP } from 'node:net';

/** IPv4 ranges of LANs, as [first octets, prefix length]: RFC 1918, shared address space (RFC 6598), link-local, loopback. */
const PRIVATE_V4: ReadonlyArray<[number, number]> = [
  [0x0a000000, 8],
  [0xac100000, 12],
  [0xc0a80000, 16],
  [0x64400000, 10],
  [0xa9fe0000, 16],
  [0x7f000000, 8],
];

/** True for an IPv4 address in RFC 1918, 100.64/10, 169.254/16 or 127/8, or an IPv6 one in fc00::/7, fe80::/10 or ::1. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) {
    const value = address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
    return PRIVATE_V4.some(([base, bits]) => Math.floor(value / 2 ** (32 - bits)) === Math.floor(base / 2 ** (32 - bits)));
  }
  if (family !== 6) return false;
  const lower = address.toLowerCase();
  if (lower === '::1') return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (mapped !== null) return isPrivateAddress(mapped[1] as string);
  const first = Number.parseInt(lower.split(':')[0] || '0', 16);
  return (first & 0xfe00) === 0xfc00 || (first & 0xffc0) === 0xfe80;
}
