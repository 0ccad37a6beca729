/**
 * Validates {@link LabOptions} and works out every name and address of a lab before anything
 * is created. Pure: no commands run here.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, NattravError } from '../errors.js';
import { validateDelayMs } from './delayline.js';
import { backbone6, sitePrefix6, siteAddress6 } from './ipv6.js';
import { HAIRPIN_NAT_TYPES, IPV6_MODES, NAT_TYPES, type Ipv6Mode, type LabHost, type LabOptions, type LabSite, type NatType, type SiteOptions } from './types.js';

/** Every lab namespace is named `ntlab-<owner pid>-<4 hex>-<role>`. */
export const LAB_NS_PREFIX = 'ntlab-';

/** Matches lab namespace names; group 1 is the owner's PID, group 2 the lab id's hex part. */
export const LAB_NS_PATTERN = /^ntlab-(\d+)-([0-9a-f]{4})-[a-z0-9-]+$/;

/** The lab's public network ("the internet"), RFC 5737 TEST-NET-3. */
export const PUBLIC_PREFIX = '203.0.113';
/** Prefix length of the public network. */
export const PUBLIC_PREFIX_LENGTH = 24;

/** The defaults of {@link SiteOptions}. */
const siteDefaults = { lanSubnet: '192.168.1.0/24' } as const;

/** The carrier network between a CGN and the home routers behind it (RFC 6598 shared address space). */
export const CGN_PREFIX = '100.64';
/** Prefix length of each site's carrier network, 100.64.<site index>.0/24. */
export const CGN_PREFIX_LENGTH = 24;

const maxSites = 25;
const maxHostsPerSite = 4;
const maxPublicHosts = 6;
const NAME = /^[A-Za-z0-9_.-]{1,32}$/;

/** A site with everything the builder needs besides what {@link LabSite} says. */
export interface PlannedSite extends LabSite {
  /** Index of the site in the options (names its namespaces and interfaces). */
  readonly index: number;
  /** Prefix length of the LAN. */
  readonly lanPrefixLength: number;
  /** With a CGN: the CGN's address on the carrier network (the router's default gateway). */
  readonly cgnLanAddress?: string;
}

/** A whole lab, worked out. */
export interface LabPlan {
  /** `<pid>-<4 hex>`: unique per lab, embeds the owner's PID. */
  readonly id: string;
  /** The namespace holding the public bridge. */
  readonly internetNs: string;
  /** The broker host. */
  readonly broker: LabHost;
  /** Extra public hosts by name, in the order given. */
  readonly publicHosts: ReadonlyMap<string, LabHost>;
  /** Sites by name, in the order given. */
  readonly sites: ReadonlyMap<string, PlannedSite>;
}

function invalid(message: string): NattravError {
  return new NattravError(ErrorCode.InvalidArgument, message);
}

/** Parses dotted-quad IPv4 into a 32-bit unsigned number, or undefined. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

/** Formats a 32-bit unsigned number as dotted-quad IPv4. */
export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

const privateRanges: ReadonlyArray<readonly [string, number]> = [
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
];

/** Validates a LAN subnet and returns its network address and prefix length. */
export function parseLanSubnet(subnet: string, site: string): { network: number; prefixLength: number } {
  const match = /^([\d.]+)\/(\d{1,2})$/.exec(subnet);
  const network = match === null ? undefined : parseIpv4(match[1] ?? '');
  const prefixLength = match === null ? NaN : Number(match[2]);
  if (network === undefined || !(prefixLength >= 8 && prefixLength <= 30)) {
    throw invalid(`site "${site}": lanSubnet "${subnet}" is not an IPv4 CIDR with prefix length 8..30; pass e.g. "192.168.1.0/24"`);
  }
  const size = 2 ** (32 - prefixLength);
  if (network % size !== 0) {
    throw invalid(`site "${site}": lanSubnet "${subnet}" has host bits set; pass the network address, e.g. "${formatIpv4(network - (network % size))}/${prefixLength}"`);
  }
  const inside = privateRanges.some(([base, length]) => {
    const baseValue = parseIpv4(base) ?? 0;
    const rangeSize = 2 ** (32 - length);
    return prefixLength >= length && network >= baseValue && network < baseValue + rangeSize;
  });
  if (!inside) {
    throw invalid(`site "${site}": lanSubnet "${subnet}" is not private; pass a subnet inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16`);
  }
  return { network, prefixLength };
}

/** Validates `options` (never mutating them) and plans names and addresses for a new lab. */
export function planLab(options: LabOptions): LabPlan {
  if (typeof options !== 'object' || options === null || !Array.isArray(options.sites)) {
    throw invalid('Lab.create needs options with a `sites` array (it may be empty)');
  }
  if (options.sites.length > maxSites) {
    throw invalid(`a lab has at most ${maxSites} sites; ${options.sites.length} were asked for`);
  }
  const publicNames = options.publicHosts ?? [];
  if (!Array.isArray(publicNames) || publicNames.length > maxPublicHosts) {
    throw invalid(`publicHosts must be an array of at most ${maxPublicHosts} names`);
  }
  const id = `${process.pid}-${randomBytes(2).toString('hex')}`;
  const ns = (role: string): string => `${LAB_NS_PREFIX}${id}-${role}`;
  const host = (name: string, role: string, address: string, address6?: string): LabHost =>
    Object.freeze({ name, ns: ns(role), address, ...(address6 === undefined ? {} : { address6 }) });

  const publicHosts = new Map<string, LabHost>();
  publicNames.forEach((name, i) => {
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw invalid(`public host name ${JSON.stringify(name)} is invalid; pass 1-32 characters of [A-Za-z0-9_.-]`);
    }
    if (name === 'broker' || publicHosts.has(name)) {
      throw invalid(`public host name "${name}" is used twice (or is "broker", which is taken); pass unique names`);
    }
    publicHosts.set(name, host(name, `pub${i}`, `${PUBLIC_PREFIX}.${4 + i}`, backbone6(4 + i)));
  });

  const wanDelayMs = validateDelayMs(options.wanDelayMs ?? 0, 'wanDelayMs');
  const sites = new Map<string, PlannedSite>();
  options.sites.forEach((site, index) => {
    if (typeof site !== 'object' || site === null || typeof site.name !== 'string' || !NAME.test(site.name)) {
      throw invalid(`site #${index} needs a name of 1-32 characters of [A-Za-z0-9_.-]`);
    }
    if (sites.has(site.name)) throw invalid(`site name "${site.name}" is used twice; pass unique names`);
    const nat: NatType = site.nat;
    if (!NAT_TYPES.includes(nat)) {
      throw invalid(`site "${site.name}": nat ${JSON.stringify(nat)} is unknown; pass one of ${NAT_TYPES.join(', ')}`);
    }
    const hostCount = site.hosts ?? 1;
    if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > maxHostsPerSite || (nat === 'none' && site.ipv6 !== 'only' && hostCount !== 1)) {
      throw invalid(`site "${site.name}": hosts ${String(site.hosts)} is invalid; pass 1..${maxHostsPerSite} (only 1 with nat "none", unless ipv6 "only")`);
    }
    const cgn = site.cgn === true;
    if (cgn && nat === 'none') throw invalid(`site "${site.name}": cgn needs a NAT type other than "none"`);
    const hairpin = site.hairpin === true;
    if (hairpin && !HAIRPIN_NAT_TYPES.includes(nat)) {
      throw invalid(`site "${site.name}": hairpin applies to ${HAIRPIN_NAT_TYPES.join(', ')} only, not "${nat}"`);
    }
    const delayMs = site.delayMs === undefined ? wanDelayMs : validateDelayMs(site.delayMs, `site "${site.name}": delayMs`);
    const { ipv6, ipv6ToBroker } = ipv6Options(site, cgn);
    const v6 = ipv6 !== 'off';
    const lan6 = (j: number): string | undefined => (v6 ? siteAddress6(index, 2 + j) : undefined);
    const wan6 = v6 ? backbone6(10 * (index + 1)) : undefined;
    const publicAddress = ipv6 === 'only' ? (lan6(0) as string) : `${PUBLIC_PREFIX}.${10 * (index + 1)}`;
    const common = { name: site.name, nat, index, publicAddress, hairpin, delayMs, ipv6, ipv6ToBroker, ...(v6 ? { lanPrefix6: sitePrefix6(index) } : {}) };
    if (ipv6 === 'only') {
      // No IPv4 and no NAT: the router is the IPv6 firewall; addresses are the IPv6 ones.
      const hosts = Object.freeze(Array.from({ length: hostCount }, (_, j) => {
        const address = lan6(j) as string;
        return host(j === 0 ? `${site.name}-host` : `${site.name}-host${j + 1}`, j === 0 ? `s${index}-host` : `s${index}-host${j + 1}`, address, address);
      }));
      sites.set(site.name, Object.freeze({
        ...common, lanAddress: siteAddress6(index, 1), lanPrefixLength: 64, host: hosts[0] as LabHost, hosts,
        router: host(`${site.name}-router`, `s${index}-rtr`, wan6 as string, wan6),
      }));
      return;
    }
    if (nat === 'none') {
      if (site.lanSubnet !== undefined) parseLanSubnet(site.lanSubnet, site.name);
      const only = host(`${site.name}-host`, `s${index}-host`, publicAddress);
      sites.set(site.name, Object.freeze({ ...common, lanPrefixLength: PUBLIC_PREFIX_LENGTH, host: only, hosts: Object.freeze([only]) }));
      return;
    }
    const { network, prefixLength } = parseLanSubnet(site.lanSubnet ?? siteDefaults.lanSubnet, site.name);
    if (2 ** (32 - prefixLength) < hostCount + 3) {
      throw invalid(`site "${site.name}": lanSubnet "${site.lanSubnet ?? ''}" is too small for ${hostCount} hosts; pass a shorter prefix`);
    }
    const lanAddress = formatIpv4(network + 1);
    const hosts = Object.freeze(Array.from({ length: hostCount }, (_, j) =>
      host(j === 0 ? `${site.name}-host` : `${site.name}-host${j + 1}`, j === 0 ? `s${index}-host` : `s${index}-host${j + 1}`, formatIpv4(network + 2 + j), lan6(j))));
    const carrier = `${CGN_PREFIX}.${index}`;
    sites.set(site.name, Object.freeze({
      ...common, lanAddress, lanPrefixLength: prefixLength, host: hosts[0] as LabHost, hosts,
      router: host(`${site.name}-router`, `s${index}-rtr`, cgn ? `${carrier}.2` : publicAddress, wan6),
      ...(cgn ? { cgn: host(`${site.name}-cgn`, `s${index}-cgn`, publicAddress), cgnLanAddress: `${carrier}.1` } : {}),
    }));
  });

  return {
    id,
    internetNs: ns('inet'),
    broker: Object.freeze({ ...host('broker', 'broker', `${PUBLIC_PREFIX}.2`, backbone6(2)), alternateAddress: `${PUBLIC_PREFIX}.3` }),
    publicHosts,
    sites,
  };
}

/** Validates a site's IPv6 options (see {@link SiteOptions.ipv6}). */
function ipv6Options(site: SiteOptions, cgn: boolean): { ipv6: Ipv6Mode; ipv6ToBroker: boolean } {
  const ipv6: Ipv6Mode = site.ipv6 ?? 'off';
  if (!IPV6_MODES.includes(ipv6)) {
    throw invalid(`site "${site.name}": ipv6 ${JSON.stringify(ipv6)} is unknown; pass one of ${IPV6_MODES.join(', ')}`);
  }
  if (ipv6 === 'only' && site.nat !== 'none') {
    throw invalid(`site "${site.name}": ipv6 "only" has no IPv4 and so no NAT; pass nat "none" with it`);
  }
  if ((ipv6 === 'dual' || ipv6 === 'blocked') && site.nat === 'none') {
    throw invalid(`site "${site.name}": ipv6 "${ipv6}" puts IPv6 behind the site's router; pass a NAT type other than "none" (or ipv6 "only")`);
  }
  if (ipv6 !== 'off' && cgn) throw invalid(`site "${site.name}": ipv6 "${ipv6}" cannot be combined with cgn`);
  if (site.ipv6ToBroker !== undefined && (ipv6 !== 'blocked' || typeof site.ipv6ToBroker !== 'boolean')) {
    throw invalid(`site "${site.name}": ipv6ToBroker is a boolean for ipv6 "blocked" sites only`);
  }
  return { ipv6, ipv6ToBroker: site.ipv6ToBroker ?? true };
}
