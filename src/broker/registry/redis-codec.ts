/**
 * How the broker's state is laid out in Redis: the keys of a URI (`<prefix>reg:{<uri>}`,
 * `<prefix>sess:{<uri>}`: the `{uri}` hash tag keeps them in one Redis Cluster slot), and
 * its registration, one binary string of a few dozen bytes (not JSON), laid out so that a
 * Lua script can read the expiry and the key fingerprint at fixed offsets (redis.ts CLAIM):
 *
 *   0      version (1)
 *   1      transport: 0 absent, 1 udp, 2 tcp; plus {@link WEB_FLAG} when the peer registered over
 *          a WebSocket (Registration.web)
 *   2..7   expiresAt, ms since the epoch, unsigned 48-bit big-endian
 *   8      length L of the key fingerprint (0: none)
 *   9..    the fingerprint, L bytes of ASCII
 *   ..     the public endpoint: family (4 or 6), port (16 bits), length A, A bytes of address text
 *   ..     count N of private endpoints (1 byte), then N endpoints as above
 *   ..     version 2 only: the mapped endpoint (Registration.mappedEndpoint), as above
 *   ..     version 3 only: a byte of flags (1: a mapped endpoint follows, 2: a bound endpoint
 *          follows), then the mapped endpoint and the bound endpoint
 *          (Registration.boundEndpoint, a SOCKS5 BIND) that are there, in that order
 *   ..     version 4 only: as version 3, and flag 4: the second address family follows
 *          (Registration.secondFamily): its expiresAt (48 bits), its public endpoint, count N
 *          and N private endpoints as above, length C (0: none) and C bytes of its broker's bus ID
 *   ..     optional: length B (1..{@link MAX_BROKER_ID_LENGTH}) and B bytes of ASCII, the bus ID of
 *          the broker that took the registration (Registration.broker); absent: no such byte
 *
 * A registration without a mapped or bound endpoint is written as version 1, one with only a
 * mapped endpoint as version 2, one with a bound endpoint as version 3, one with a second family
 * as version 4, so that brokers that know only the older ones still read what they can; every
 * version is read.
 *
 * The URI is not in the value: it is in the key. Addresses are kept as text, so that
 * what comes back is exactly what was stored (an IPv6 scope, an address's spelling).
 */
import { ErrorCode, NattravError } from '../../errors.js';
import type { TransportAddress } from '../../wire/types.js';
import type { FamilyRegistration, Registration } from './registry.js';

/** The layout's version byte: 1, or 2 when the registration has a mapped endpoint. */
export const REGISTRATION_VERSION = 1;
/** The version byte of a registration with a mapped endpoint (one more endpoint after the private ones). */
export const REGISTRATION_VERSION_MAPPED = 2;
/** The version byte of a registration with a bound endpoint (SOCKS5 BIND): flags, then the endpoints they name. */
export const REGISTRATION_VERSION_BOUND = 3;
/** The version byte of a registration with a second address family (Registration.secondFamily): version 3's flags, plus {@link HAS_SECOND_FAMILY}. */
export const REGISTRATION_VERSION_SECOND_FAMILY = 4;
/** Version 3 and 4 flags: which endpoints follow the private ones. */
const HAS_MAPPED = 1;
const HAS_BOUND = 2;
/** Version 4 only: the second family follows the mapped and bound endpoints. */
const HAS_SECOND_FAMILY = 4;
const VERSIONS: ReadonlySet<number> = new Set([REGISTRATION_VERSION, REGISTRATION_VERSION_MAPPED, REGISTRATION_VERSION_BOUND, REGISTRATION_VERSION_SECOND_FAMILY]);
/** Offset of expiresAt (48 bits) in the value. */
export const EXPIRES_OFFSET = 2;
/** Offset of the fingerprint's length byte. */
export const FINGERPRINT_LENGTH_OFFSET = 8;
/** Largest expiresAt the 48-bit field holds (year 10889). */
const MAX_EXPIRES_AT = 2 ** 48 - 1;
/** Most bytes of a fingerprint or count of private endpoints: one length byte. */
const MAX_BYTE = 255;
/** An endpoint's bytes before its address text: family, port, length. */
const ENDPOINT_HEADER_LENGTH = 4;
const TRANSPORT_CODES = { absent: 0, udp: 1, tcp: 2 } as const;
/** Set in the transport byte when the peer registered over a WebSocket (Registration.web; brokers older than it read such a value as unknown). */
export const WEB_FLAG = 0x80;
/** Longest bus ID a registration records (RedisBus IDs are 18 characters; room for operators' names). */
export const MAX_BROKER_ID_LENGTH = 64;

/** Encodes `registration` (without its URI); throws ERR_INVALID_ARGUMENT for a value the layout cannot hold. */
export function encodeRegistration(registration: Registration): Buffer {
  const { expiresAt, keyFingerprint, privateEndpoints } = registration;
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0 || expiresAt > MAX_EXPIRES_AT) {
    throw new NattravError(ErrorCode.InvalidArgument, `registration expiresAt must be whole milliseconds since the epoch, got ${expiresAt}`);
  }
  const fingerprint = Buffer.from(keyFingerprint ?? '', 'ascii');
  if (fingerprint.length > MAX_BYTE || (keyFingerprint !== undefined && fingerprint.length === 0)) {
    throw new NattravError(ErrorCode.InvalidArgument, `registration keyFingerprint must be 1 to ${MAX_BYTE} ASCII characters`);
  }
  if (privateEndpoints.length > MAX_BYTE) {
    throw new NattravError(ErrorCode.InvalidArgument, `a registration holds at most ${MAX_BYTE} private endpoints, got ${privateEndpoints.length}`);
  }
  const broker = checkedBrokerId(registration.broker);
  const header = Buffer.alloc(FINGERPRINT_LENGTH_OFFSET + 1);
  const { mappedEndpoint, boundEndpoint, secondFamily } = registration;
  header[0] =
    secondFamily !== undefined ? REGISTRATION_VERSION_SECOND_FAMILY
    : boundEndpoint !== undefined ? REGISTRATION_VERSION_BOUND
    : mappedEndpoint === undefined ? REGISTRATION_VERSION
    : REGISTRATION_VERSION_MAPPED;
  header[1] = TRANSPORT_CODES[registration.transport ?? 'absent'] | (registration.web === true ? WEB_FLAG : 0);
  header.writeUIntBE(expiresAt, EXPIRES_OFFSET, 6);
  header[FINGERPRINT_LENGTH_OFFSET] = fingerprint.length;
  const endpoints = [registration.publicEndpoint, ...privateEndpoints].map(encodeEndpoint);
  const tail = broker === undefined ? [] : [Buffer.of(broker.length), broker];
  const flagBits = (mappedEndpoint === undefined ? 0 : HAS_MAPPED) | (boundEndpoint === undefined ? 0 : HAS_BOUND) | (secondFamily === undefined ? 0 : HAS_SECOND_FAMILY);
  const flags = boundEndpoint === undefined && secondFamily === undefined ? [] : [Buffer.of(flagBits)];
  const mapped = [...flags, ...[mappedEndpoint, boundEndpoint].flatMap((e) => (e === undefined ? [] : [encodeEndpoint(e)]))];
  const second = secondFamily === undefined ? [] : [encodeSecondFamily(secondFamily)];
  return Buffer.concat([header, fingerprint, endpoints[0] as Uint8Array, Buffer.of(privateEndpoints.length), ...endpoints.slice(1), ...mapped, ...second, ...tail]);
}

/** The version 4 block of Registration.secondFamily: expiresAt, public endpoint, private endpoints, broker ID. */
function encodeSecondFamily(second: FamilyRegistration): Buffer {
  if (!Number.isSafeInteger(second.expiresAt) || second.expiresAt < 0 || second.expiresAt > MAX_EXPIRES_AT) {
    throw new NattravError(ErrorCode.InvalidArgument, `registration secondFamily.expiresAt must be whole milliseconds since the epoch, got ${second.expiresAt}`);
  }
  if (second.privateEndpoints.length > MAX_BYTE) {
    throw new NattravError(ErrorCode.InvalidArgument, `a second family holds at most ${MAX_BYTE} private endpoints, got ${second.privateEndpoints.length}`);
  }
  const expires = Buffer.alloc(6);
  expires.writeUIntBE(second.expiresAt, 0, 6);
  const broker = checkedBrokerId(second.broker) ?? Buffer.alloc(0);
  const endpoints = [second.publicEndpoint, ...second.privateEndpoints].map(encodeEndpoint);
  return Buffer.concat([expires, endpoints[0] as Uint8Array, Buffer.of(second.privateEndpoints.length), ...endpoints.slice(1), Buffer.of(broker.length), broker]);
}

/** A broker bus ID as bytes (undefined for none); throws ERR_INVALID_ARGUMENT for one the layout cannot hold. */
function checkedBrokerId(id: string | undefined): Buffer | undefined {
  const broker = id === undefined ? undefined : Buffer.from(id, 'ascii');
  if (broker !== undefined && (broker.length === 0 || broker.length > MAX_BROKER_ID_LENGTH || !/^[\x21-\x7e]+$/.test(id ?? ''))) {
    throw new NattravError(ErrorCode.InvalidArgument, `registration broker must be 1 to ${MAX_BROKER_ID_LENGTH} printable ASCII characters, got ${JSON.stringify(id)}`);
  }
  return broker;
}

/** Decodes a value of {@link encodeRegistration} stored for `uri`; throws ERR_REGISTRY_UNAVAILABLE for bytes that are not one. */
export function decodeRegistration(uri: string, value: Buffer): Registration {
  try {
    const version = value[0];
    if (version === undefined || !VERSIONS.has(version)) throw new Error(`unknown layout version ${version}`);
    const web = ((value[1] as number) & WEB_FLAG) !== 0;
    const transport = (['absent', 'udp', 'tcp'] as const)[(value[1] as number) & ~WEB_FLAG];
    if (transport === undefined) throw new Error(`unknown transport code ${value[1]}`);
    const expiresAt = value.readUIntBE(EXPIRES_OFFSET, 6);
    const fingerprintLength = value.readUInt8(FINGERPRINT_LENGTH_OFFSET);
    let offset = FINGERPRINT_LENGTH_OFFSET + 1;
    const keyFingerprint = value.toString('ascii', offset, offset + fingerprintLength);
    offset += fingerprintLength;
    const next = (): TransportAddress => {
      const family = value[offset] === 4 ? 'IPv4' : value[offset] === 6 ? 'IPv6' : undefined;
      if (family === undefined) throw new Error(`unknown address family ${value[offset]}`);
      const end = offset + ENDPOINT_HEADER_LENGTH + value.readUInt8(offset + 3);
      if (end > value.length) throw new Error('truncated endpoint');
      const endpoint = { family, address: value.toString('ascii', offset + ENDPOINT_HEADER_LENGTH, end), port: value.readUInt16BE(offset + 1) } as const;
      offset = end;
      return endpoint;
    };
    const publicEndpoint = next();
    const count = value.readUInt8(offset++);
    const privateEndpoints = Array.from({ length: count }, next);
    const flags = version >= REGISTRATION_VERSION_BOUND ? value.readUInt8(offset++) : version === REGISTRATION_VERSION_MAPPED ? HAS_MAPPED : 0;
    const known = HAS_MAPPED | HAS_BOUND | (version === REGISTRATION_VERSION_SECOND_FAMILY ? HAS_SECOND_FAMILY : 0);
    if ((flags & ~known) !== 0) throw new Error(`unknown endpoint flags ${flags}`);
    const mappedEndpoint = (flags & HAS_MAPPED) !== 0 ? next() : undefined;
    const boundEndpoint = (flags & HAS_BOUND) !== 0 ? next() : undefined;
    let secondFamily: FamilyRegistration | undefined;
    if ((flags & HAS_SECOND_FAMILY) !== 0) {
      const secondExpiresAt = value.readUIntBE(offset, 6);
      offset += 6;
      const secondPublic = next();
      const secondPrivate = Array.from({ length: value.readUInt8(offset++) }, next);
      const length = value.readUInt8(offset++);
      if (length > MAX_BROKER_ID_LENGTH || offset + length > value.length) throw new Error(`bad second-family broker ID length ${length}`);
      const secondBroker = value.toString('ascii', offset, offset + length);
      offset += length;
      secondFamily = { publicEndpoint: secondPublic, privateEndpoints: secondPrivate, expiresAt: secondExpiresAt, ...(length === 0 ? {} : { broker: secondBroker }) };
    }
    let broker: string | undefined;
    if (offset < value.length) {
      const length = value.readUInt8(offset++);
      if (length === 0 || length > MAX_BROKER_ID_LENGTH || offset + length > value.length) throw new Error(`bad broker ID length ${length}`);
      broker = value.toString('ascii', offset, offset + length);
      offset += length;
    }
    if (offset !== value.length) throw new Error(`${value.length - offset} bytes after the broker ID`);
    return {
      uri,
      publicEndpoint,
      privateEndpoints,
      expiresAt,
      ...(transport === 'absent' ? {} : { transport }),
      ...(fingerprintLength === 0 ? {} : { keyFingerprint }),
      ...(broker === undefined ? {} : { broker }),
      ...(mappedEndpoint === undefined ? {} : { mappedEndpoint }),
      ...(boundEndpoint === undefined ? {} : { boundEndpoint }),
      ...(web ? { web: true } : {}),
      ...(secondFamily === undefined ? {} : { secondFamily }),
    };
  } catch (err) {
    throw new NattravError(ErrorCode.RegistryUnavailable, `the registration of ${uri} in Redis is not one this broker can read (${(err as Error).message})`, { cause: err });
  }
}

/** The expiresAt of an encoded registration, without decoding the rest. */
export function registrationExpiresAt(value: Buffer): number {
  return value.length > FINGERPRINT_LENGTH_OFFSET ? value.readUIntBE(EXPIRES_OFFSET, 6) : 0;
}

function encodeEndpoint(endpoint: TransportAddress): Buffer {
  const address = Buffer.from(endpoint.address, 'ascii');
  if (address.length > MAX_BYTE || !Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 0xffff) {
    throw new NattravError(ErrorCode.InvalidArgument, `registration endpoint ${endpoint.address} port ${endpoint.port} cannot be stored`);
  }
  const header = Buffer.alloc(ENDPOINT_HEADER_LENGTH);
  header[0] = endpoint.family === 'IPv4' ? 4 : 6;
  header.writeUInt16BE(endpoint.port, 1);
  header[3] = address.length;
  return Buffer.concat([header, address]);
}

/** Options of `RedisRegistry` and `RedisSessionStore`. */
export interface RedisStoreOptions {
  /** Prefix of every key, so that one Redis can hold several deployments. No `{` or `}`. @default 'nattrav:' */
  keyPrefix?: string;
  /** Clock returning milliseconds since the epoch. @default Date.now */
  now?: () => number;
}

/** The Redis key of `uri`'s `kind` of state: `<prefix><kind>:{<uri>}` (the hash tag keeps a URI's keys in one slot). */
export function redisKey(prefix: string, kind: 'reg' | 'sess', uri: string): string {
  return `${prefix}${kind}:{${uri}}`;
}

/** The checked key prefix; throws ERR_INVALID_ARGUMENT for one with a hash-tag brace. */
export function checkKeyPrefix(prefix: string | undefined): string {
  const checked = prefix ?? 'nattrav:';
  if (typeof checked !== 'string' || /[{}]/.test(checked)) {
    throw new NattravError(ErrorCode.InvalidArgument, `Redis keyPrefix must be a string without { or } (they make hash tags), got ${JSON.stringify(checked)}`);
  }
  return checked;
}

