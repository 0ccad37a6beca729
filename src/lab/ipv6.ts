/**
 * IPv6 in the lab, from the documentation prefix 2001:db8::/32 (RFC 3849):
 *
 * ```
 *   backbone 2001:db8::/64 on br0: broker ::2, public hosts ::4, ::5, ..., site i's router wan0 ::<10 * (i + 1)>
 *   site i's LAN 2001:db8:<i + 1>::/64: router lan0 ::1, hosts ::2, ::3, ...
 * ```
 *
 * No router advertisements and no SLAAC: addresses are static and added without duplicate
 * address detection (`nodad`), so they are usable at once; every node on the backbone routes
 * each IPv6 site's LAN prefix via that site's router ({@link backboneRoutes}). A site's router
 * has no IPv6 NAT: it is a stateful firewall ({@link firewall6Ruleset}).
 */
import { isIPv6 } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, NattravError } from '../errors.js';
import { ipIn } from './netns.js';

/** Prefix length of the backbone and of every site's LAN. */
export const PREFIX6_LENGTH = 64;

/** Name of the nftables table of a site's IPv6 firewall. */
export const FIREWALL6_TABLE = 'nattrav6';

/**
 * Routers forward IPv6 (no router advertisements are sent: nothing runs radvd), and skip
 * duplicate address detection on every interface made after this (set before the links): a
 * router resolves next hops with its link-local address, which DAD keeps unusable for a second
 * or more after the link comes up.
 */
export const ROUTER6_SYSCTLS = {
  'net.ipv6.conf.all.forwarding': 1,
  'net.ipv6.conf.all.accept_dad': 0,
  'net.ipv6.conf.default.accept_dad': 0,
} as const;

/** The backbone address ending in `hostPart` (written in decimal digits, read as hex: `::10` for site 0). */
export function backbone6(hostPart: number): string {
  return `2001:db8::${hostPart}`;
}

/** Site `index`'s LAN prefix (without the length). */
export function sitePrefix6(index: number): string {
  return `2001:db8:${index + 1}::`;
}

/** Address `hostPart` in site `index`'s LAN (1: the router). */
export function siteAddress6(index: number, hostPart: number): string {
  return `${sitePrefix6(index)}${hostPart}`;
}

/** Options of {@link firewall6Ruleset}. */
export interface Firewall6Options {
  /**
   * The WAN interface.
   * @default 'wan0'
   */
  wan?: string;
  /**
   * The LAN interface.
   * @default 'lan0'
   */
  lan?: string;
  /**
   * Block IPv6 between the LAN and the internet, except to and from these addresses (the
   * broker's, or none: then all of it). Absent: nothing is blocked beyond the stateful filter.
   */
  blockExcept?: readonly string[];
}

/** ICMPv6 errors a firewall must pass (RFC 4890 section 4.3.1): path MTU discovery needs packet-too-big. */
const ICMP6_ERRORS = 'destination-unreachable, packet-too-big, time-exceeded, parameter-problem';

/**
 * The stateful IPv6 firewall of a site's router (RFC 6092 "simple security"): new flows only
 * from the LAN out; replies (established/related) both ways, which is what lets a TCP
 * simultaneous open through (each side's outgoing SYN makes the conntrack entry the other
 * side's SYN matches); ICMPv6 errors (path MTU) and neighbour discovery; every other
 * unsolicited inbound packet dropped silently (no RST, no ICMP).
 */
export function firewall6Ruleset(options: Firewall6Options = {}): string {
  const wan = options.wan ?? 'wan0';
  const lan = options.lan ?? 'lan0';
  for (const name of [wan, lan]) {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
      throw new NattravError(ErrorCode.InvalidArgument, `interface "${name}" is not a valid interface name; pass 1-15 characters of [A-Za-z0-9_.-]`);
    }
  }
  let block = '';
  if (options.blockExcept !== undefined) {
    const bad = options.blockExcept.find((address) => !isIPv6(address));
    if (bad !== undefined) throw new NattravError(ErrorCode.InvalidArgument, `blockExcept: "${bad}" is not an IPv6 address`);
    const except = options.blockExcept.length === 0 ? '' : ` daddr != { ${options.blockExcept.join(', ')} }`;
    const exceptIn = options.blockExcept.length === 0 ? '' : ` saddr != { ${options.blockExcept.join(', ')} }`;
    block = `
    # IPv6 to and from other sites is blocked${options.blockExcept.length === 0 ? ' (all of it)' : ', the broker stays reachable'}.
    iifname "${lan}" oifname "${wan}"${except === '' ? '' : ` ip6${except}`} drop
    iifname "${wan}" oifname "${lan}"${exceptIn === '' ? '' : ` ip6${exceptIn}`} drop`;
  }
  return `table ip6 ${FIREWALL6_TABLE} {
  # The router itself: replies, ICMPv6 errors and neighbour discovery from the WAN; nothing else.
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${wan}" ct state established,related accept
    iifname "${wan}" icmpv6 type { ${ICMP6_ERRORS}, nd-neighbor-solicit, nd-neighbor-advert } accept
    iifname "${wan}" drop
  }

  # Forwarding: replies both ways, ICMPv6 errors, new flows from the LAN out; nothing else.
  chain forward {
    type filter hook forward priority filter; policy drop;${block}
    ct state established,related accept
    icmpv6 type { ${ICMP6_ERRORS} } accept
    ct state invalid drop
    iifname "${lan}" oifname "${wan}" accept
  }
}
`;
}

/** A static route: `prefix`/64 via `via`. */
export interface Route6 {
  readonly prefix: string;
  readonly via: string;
}

/**
 * The routes a backbone node needs: each IPv6 site's LAN prefix via that site's router,
 * except `ownPrefix` (a router's own LAN is on-link).
 */
export function backboneRoutes(sites: ReadonlyArray<{ readonly lanPrefix6?: string; readonly router?: { readonly address6?: string } }>, ownPrefix?: string): Route6[] {
  const routes: Route6[] = [];
  for (const site of sites) {
    const via = site.router?.address6;
    if (site.lanPrefix6 === undefined || via === undefined || site.lanPrefix6 === ownPrefix) continue;
    routes.push({ prefix: site.lanPrefix6, via });
  }
  return routes;
}

/** Adds `routes` in namespace `ns` with one `ip -batch` run. */
export async function addRoutes6(ns: string, routes: readonly Route6[]): Promise<void> {
  if (routes.length === 0) return;
  const input = routes.map((route) => `route add ${route.prefix}/${PREFIX6_LENGTH} via ${route.via}\n`).join('');
  await ipIn(ns, ['-6', '-batch', '-'], { input });
}

/** Adds the IPv6 `address`/64 to `iface` in `ns`, usable at once (no duplicate address detection). */
export async function addAddress6(ns: string, iface: string, address: string): Promise<void> {
  await ipIn(ns, ['-6', 'addr', 'add', `${address}/${PREFIX6_LENGTH}`, 'dev', iface, 'nodad']);
}

/** A bridge's carrier reaches IPv6 through the kernel's link watch, up to a second after it is up; it seldom takes longer. */
const prefixRouteTimeoutMs = 5_000;
/** How often {@link waitForPrefixRoute} looks. */
const prefixRoutePollMs = 25;

/**
 * Waits until `prefix`/64 is routed on `iface` in `ns`. IPv6 on a bridge starts only once the
 * kernel has seen the bridge's carrier (not at `ip link set up`, unlike IPv4): until then the
 * router cannot reach its own LAN, and the first packets to it are lost.
 */
export async function waitForPrefixRoute(ns: string, iface: string, prefix: string): Promise<void> {
  const deadline = Date.now() + prefixRouteTimeoutMs;
  for (;;) {
    const { stdout } = await ipIn(ns, ['-6', 'route', 'show', `${prefix}/${PREFIX6_LENGTH}`, 'dev', iface]);
    if (stdout.trim() !== '') return;
    if (Date.now() > deadline) throw new NattravError(ErrorCode.Lab, `${prefix}/${PREFIX6_LENGTH} was not routed on ${iface} in ${ns} within ${prefixRouteTimeoutMs} ms`);
    await sleep(prefixRoutePollMs);
  }
}
