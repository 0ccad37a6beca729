/**
 * A dual-stack recipient's two address families at the broker: the view of a registration
 * in the family a Connect arrived in (its second family's endpoints when that is the one),
 * and which of the broker's announced addresses a peer of one family is told about for the
 * other (OTHER-FAMILY-BROKER). Pure.
 */
import { isIP } from 'node:net';
import { ErrorCode, NattravError } from '../errors.js';
import type { TransportAddress } from '../wire/types.js';
import type { Registration } from './registry/registry.js';

/** An address family as TransportAddress names it. */
export type AddressFamilyName = TransportAddress['family'];

/** The other family. */
export function otherFamily(family: AddressFamilyName): AddressFamilyName {
  return family === 'IPv4' ? 'IPv6' : 'IPv4';
}

/**
 * `registration` as seen from `family`: itself when its public endpoint is of that family;
 * with its live second family's endpoints (and broker) in place of the first family's when
 * that one is; undefined when the peer holds no registration in `family`. The port mapping
 * and SOCKS5 BIND belong to the first family and are left out of the second's view.
 */
export function registrationInFamily(registration: Registration, family: AddressFamilyName, now: number): Registration | undefined {
  if (registration.publicEndpoint.family === family) return registration;
  const second = registration.secondFamily;
  if (second === undefined || second.publicEndpoint.family !== family || second.expiresAt <= now) return undefined;
  const { mappedEndpoint: _mapped, boundEndpoint: _bound, broker: _broker, secondFamily: _second, ...rest } = registration;
  return {
    ...rest,
    publicEndpoint: second.publicEndpoint,
    privateEndpoints: second.privateEndpoints,
    transport: 'udp',
    ...(second.broker === undefined ? {} : { broker: second.broker }),
  };
}

/**
 * The broker's addresses announced to peers (BrokerOptions.announce): IP literals, each of
 * which the broker is reached at on its own port. Throws ERR_INVALID_ARGUMENT naming a bad
 * entry, or a second entry of one family (a peer is told one address per family).
 */
export function checkAnnounce(addresses: readonly string[] | undefined, what = 'announce'): readonly string[] {
  if (addresses === undefined) return [];
  if (!Array.isArray(addresses)) throw new NattravError(ErrorCode.InvalidArgument, `${what}: expected a list of IP addresses`);
  const seen = new Set<number>();
  return addresses.map((address: unknown, i) => {
    const text = typeof address === 'string' ? address.replace(/^\[(.*)\]$/, '$1') : '';
    const version = isIP(text);
    if (version === 0) throw new NattravError(ErrorCode.InvalidArgument, `${what}${what === 'announce' ? `[${i}]` : ''}: expected an IPv4 or IPv6 address of this broker (no port: its own), got ${JSON.stringify(address)}`);
    if (seen.has(version)) throw new NattravError(ErrorCode.InvalidArgument, `${what}: two IPv${version} addresses; give at most one of each family`);
    seen.add(version);
    return text;
  });
}

/** The announced address, on `port`, of the family other than `family`'s; undefined when none is. */
export function otherFamilyBroker(announced: readonly string[], family: AddressFamilyName, port: number): TransportAddress | undefined {
  const want = family === 'IPv4' ? 6 : 4;
  const address = announced.find((a) => isIP(a) === want);
  return address === undefined ? undefined : { family: otherFamily(family), address, port };
}
