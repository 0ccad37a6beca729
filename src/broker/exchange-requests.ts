/**
 * The exchange side of the rendezvous: what it uses of an exchange's TCP
 * connection, and the parsing of each request it serves. Each parser reads
 * every attribute the rendezvous uses, so a handler can refuse a malformed
 * request before it changes any state (rendezvous.ts).
 */
import { toTransportAddress } from '../common/endpoint.js';
import type { StunChannel } from '../common/stun-channel.js';
import { isNattravError } from '../errors.js';
import { strategiesInMask, type StrategyName } from '../nat/strategy.js';
import type { EncodeOptions } from '../wire/codec.js';
import { X25519_KEY_LENGTH } from '../security/proof.js';
import { AttrType, MAPPING_KEY_LENGTH } from '../wire/constants.js';
import { malformed } from '../wire/fail.js';
import type { StunMessage } from '../wire/message.js';
import { getAttemptId, getRole, getU32Attr, getUri, getXorAddressAttrs, type RoleName } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { hasFamilyOnly } from '../wire/family.js';

/** What the rendezvous uses of an exchange's connection: a {@link StunChannel}, or a fake one in tests. */
export interface ExchangeChannel {
  readonly socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined };
  /** Resolves when the connection has closed. */
  readonly closed: Promise<void>;
  send(message: StunMessage, options?: EncodeOptions): boolean;
  /** Sends a request and resolves with its response; rejects when `signal` aborts or the connection ends. */
  request(message: StunMessage, signal: AbortSignal): Promise<StunMessage>;
  /** Ends our side of the connection. */
  end(): void;
}

/** A Connect request, parsed whole before anything changes. */
export interface ConnectRequest {
  readonly uri: string | undefined;
  readonly proposedId: Uint8Array | undefined;
  readonly privateEndpoints: TransportAddress[];
  readonly claimed: ReadonlySet<StrategyName>;
  /** The initiator's X25519 public key, to seal the attempt secret for it. */
  readonly ephemeralKey: Uint8Array | undefined;
  /** The key of the initiator's mapping probes' integrity (MAPPING-KEY). */
  readonly mappingKey: Uint8Array | undefined;
  /** The initiator's TCP handshake time to the broker (CONNECT-RTT), when given and within {@link MAX_CONNECT_RTT_MS}. */
  readonly connectRttMs: number | undefined;
  /** FAMILY-ONLY: run the attempt in this exchange's address family only (a 476 when the recipient has none there). */
  readonly familyOnly: boolean;
}

/**
 * A CONNECT-RTT above this is not believed (the broker probes instead), in ms. A lie within it
 * moves the start delays of its attempt: an initiator that claims a long round trip starts at
 * once and makes the recipient wait (up to half the bound), holding one of the recipient's
 * attempt slots that much longer. The bound keeps that cost small; a real round trip above it
 * is measured by the Probe instead.
 */
export const MAX_CONNECT_RTT_MS = 1_000;

/** Reads every attribute of a Connect the rendezvous uses; throws StunMalformed on a malformed one. */
export function parseConnect(request: StunMessage): ConnectRequest {
  return {
    uri: getUri(request),
    proposedId: getAttemptId(request),
    privateEndpoints: getXorAddressAttrs(request, AttrType.PrivateEndpoint),
    claimed: new Set(strategiesInMask(getU32Attr(request, AttrType.FailedStrategies) ?? 0)),
    ephemeralKey: ephemeralKeyOf(request),
    mappingKey: fixedLength(request, AttrType.MappingKey, MAPPING_KEY_LENGTH, 'MAPPING-KEY'),
    connectRttMs: connectRttOf(request),
    familyOnly: hasFamilyOnly(request),
  };
}

/** Reads every attribute of a Join the rendezvous uses; throws StunMalformed on a malformed one. */
export function parseJoin(request: StunMessage): { id: Uint8Array | undefined; privateEndpoints: TransportAddress[]; connectRttMs: number | undefined } {
  return { id: getAttemptId(request), privateEndpoints: getXorAddressAttrs(request, AttrType.PrivateEndpoint), connectRttMs: connectRttOf(request) };
}

/** Reads a MappingProbe's attempt ID and role; undefined when either is missing or malformed. */
export function parseMappingProbe(request: StunMessage): { id: Uint8Array; role: RoleName } | undefined {
  try {
    const id = getAttemptId(request);
    const role = getRole(request);
    return id === undefined || role === undefined ? undefined : { id, role };
  } catch (err) {
    if (isNattravError(err)) return undefined;
    throw err;
  }
}

/** The peer's endpoint of an exchange, as the broker sees it. */
export function remoteEndpoint(channel: ExchangeChannel): TransportAddress {
  return toTransportAddress(channel.socket.remoteAddress ?? '0.0.0.0', channel.socket.remotePort ?? 0);
}

/** CONNECT-RTT of a Connect or Join, when within {@link MAX_CONNECT_RTT_MS} (else undefined: the broker probes). */
function connectRttOf(request: StunMessage): number | undefined {
  const rtt = getU32Attr(request, AttrType.ConnectRtt);
  return rtt === undefined || rtt > MAX_CONNECT_RTT_MS ? undefined : rtt;
}

/** EPHEMERAL-KEY of a Connect (X25519, 32 bytes); throws StunMalformed for another length. */
function ephemeralKeyOf(request: StunMessage): Uint8Array | undefined {
  return fixedLength(request, AttrType.EphemeralKey, X25519_KEY_LENGTH, 'EPHEMERAL-KEY');
}

/** Attribute `type` of `request`, which must be `length` bytes long; throws StunMalformed for another length. */
function fixedLength(request: StunMessage, type: number, length: number, name: string): Uint8Array | undefined {
  const value = request.get(type);
  if (value !== undefined && value.length !== length) throw malformed(`${name} must be ${length} bytes, got ${value.length}`);
  return value;
}
