/**
 * Typed accessors and adders for the attributes the broker and peers use.
 * Every getter returns undefined when the attribute is absent and throws
 * StunMalformed (naming the attribute) when it is present but malformed;
 * the first occurrence wins unless the getter returns a list.
 */
import {
  ATTEMPT_ID_LENGTH,
  AttrType,
  HELLO_CERTIFICATE_SEAL_BYTES,
  MAX_HELLO_CERTIFICATE_BYTES,
  MAX_PRIVATE_ENDPOINTS,
  MAX_SOFTWARE_BYTES,
  MAX_URI_BYTES,
  KEY_FINGERPRINT_LENGTH,
  RoleCode,
  SecurityMode,
} from './constants.js';
import { decodeAddress, decodeXorAddress, encodeAddress, encodeXorAddress } from './address.js';
import { decodeChangeRequest, type ChangeRequest } from './change-request.js';
import { decodeErrorCode, type ErrorCodeAttribute } from './error-code.js';
import { checkBytes, invalidArgument, malformed } from './fail.js';
import type { StunMessage } from './message.js';
import { attributeName } from './names.js';
import { decodeRelayQuota, encodeRelayQuota, type RelayQuotaAttribute } from './relay-quota.js';
import { decodeResponsePort } from './response-port.js';
import { decodeText, encodeText } from './text.js';
import type { TransportAddress } from './types.js';
import { decodeU32, encodeU32 } from './uint.js';

/** A role in an attempt: a key of {@link RoleCode}. */
export type RoleName = keyof typeof RoleCode;

/** One of the {@link SecurityMode} values. */
export type SecurityModeValue = (typeof SecurityMode)[keyof typeof SecurityMode];

function decodeIfPresent<T>(msg: StunMessage, type: number, decode: (v: Uint8Array) => T): T | undefined {
  const v = msg.get(type);
  return v === undefined ? undefined : decode(v);
}

/** XOR-MAPPED-ADDRESS (RFC 8489 §14.2). */
export function getXorMappedAddress(msg: StunMessage): TransportAddress | undefined {
  return getXorAddressAttr(msg, AttrType.XorMappedAddress);
}

/** MAPPED-ADDRESS (RFC 8489 §14.1). */
export function getMappedAddress(msg: StunMessage): TransportAddress | undefined {
  return decodeIfPresent(msg, AttrType.MappedAddress, (v) => decodeAddress(v, 'MAPPED-ADDRESS'));
}

/** ERROR-CODE (RFC 8489 §14.8). */
export function getErrorCode(msg: StunMessage): ErrorCodeAttribute | undefined {
  return decodeIfPresent(msg, AttrType.ErrorCode, decodeErrorCode);
}

/** SOFTWARE (RFC 8489 §14.14). */
export function getSoftware(msg: StunMessage): string | undefined {
  return decodeIfPresent(msg, AttrType.Software, (v) => decodeText(v, MAX_SOFTWARE_BYTES, 'SOFTWARE'));
}

/** nattrav URI: non-empty UTF-8, at most `MAX_URI_BYTES`. */
export function getUri(msg: StunMessage): string | undefined {
  return decodeIfPresent(msg, AttrType.Uri, (v) => {
    if (v.length === 0) throw malformed('URI is empty');
    return decodeText(v, MAX_URI_BYTES, 'URI');
  });
}

/** nattrav ATTEMPT-ID: exactly `ATTEMPT_ID_LENGTH` bytes (returned as a copy). */
export function getAttemptId(msg: StunMessage): Uint8Array | undefined {
  return decodeIfPresent(msg, AttrType.AttemptId, (v) => {
    if (v.length !== ATTEMPT_ID_LENGTH) throw malformed(`ATTEMPT-ID is ${v.length} bytes, not ${ATTEMPT_ID_LENGTH}`);
    return Uint8Array.from(v);
  });
}

/** Any attribute in XOR-MAPPED-ADDRESS encoding (e.g. PEER-PUBLIC-ENDPOINT), XORed with `msg.transactionId`. */
export function getXorAddressAttr(msg: StunMessage, type: number): TransportAddress | undefined {
  return decodeIfPresent(msg, type, (v) => decodeXorAddress(v, msg.transactionId, attributeName(type)));
}

/** Every attribute of `type` in XOR-address encoding (PRIVATE-ENDPOINT, PEER-PRIVATE-ENDPOINT); more than `MAX_PRIVATE_ENDPOINTS` is malformed. */
export function getXorAddressAttrs(msg: StunMessage, type: number): TransportAddress[] {
  const values = msg.getAll(type);
  if (values.length > MAX_PRIVATE_ENDPOINTS) {
    throw malformed(`${values.length} ${attributeName(type)} attributes; at most ${MAX_PRIVATE_ENDPOINTS} are allowed`);
  }
  return values.map((v) => decodeXorAddress(v, msg.transactionId, attributeName(type)));
}

/** Any 32-bit unsigned attribute (START-DELAY, LIFETIME). */
export function getU32Attr(msg: StunMessage, type: number): number | undefined {
  return decodeIfPresent(msg, type, (v) => decodeU32(v, attributeName(type)));
}

/** CHANGE-REQUEST (RFC 5780 §7.2). */
export function getChangeRequest(msg: StunMessage): ChangeRequest | undefined {
  return decodeIfPresent(msg, AttrType.ChangeRequest, decodeChangeRequest);
}

/** RESPONSE-PORT (RFC 5780 §7.5). */
export function getResponsePort(msg: StunMessage): number | undefined {
  return decodeIfPresent(msg, AttrType.ResponsePort, decodeResponsePort);
}

/** OTHER-ADDRESS (RFC 5780 §7.4, MAPPED-ADDRESS encoding). */
export function getOtherAddress(msg: StunMessage): TransportAddress | undefined {
  return decodeIfPresent(msg, AttrType.OtherAddress, (v) => decodeAddress(v, 'OTHER-ADDRESS'));
}

/** RESPONSE-ORIGIN (RFC 5780 §7.3, MAPPED-ADDRESS encoding). */
export function getResponseOrigin(msg: StunMessage): TransportAddress | undefined {
  return decodeIfPresent(msg, AttrType.ResponseOrigin, (v) => decodeAddress(v, 'RESPONSE-ORIGIN'));
}

/** Adds `addr` in XOR-MAPPED-ADDRESS encoding under `type`, XORed with `msg.transactionId`. */
export function addXorAddress(msg: StunMessage, type: number, addr: TransportAddress): StunMessage {
  return msg.add(type, encodeXorAddress(addr, msg.transactionId));
}

/** JOIN-AT: where the recipient of a relayed ConnectionRequest is asked to join (XOR-address encoding). */
export function getJoinAt(msg: StunMessage): TransportAddress | undefined {
  return getXorAddressAttr(msg, AttrType.JoinAt);
}

/** Adds JOIN-AT (the broker running the attempt), XORed with `msg.transactionId`. */
export function addJoinAt(msg: StunMessage, broker: TransportAddress): StunMessage {
  return addXorAddress(msg, AttrType.JoinAt, broker);
}

/** MAPPED-ENDPOINT: the port mapping a recipient's gateway holds for it (at most one: a repeated one is malformed). */
export function getMappedEndpoint(msg: StunMessage): TransportAddress | undefined {
  if (msg.getAll(AttrType.MappedEndpoint).length > 1) throw malformed('MAPPED-ENDPOINT appears more than once');
  return getXorAddressAttr(msg, AttrType.MappedEndpoint);
}

/** Adds MAPPED-ENDPOINT (the gateway's external address and port forwarded to us), XORed with `msg.transactionId`. */
export function addMappedEndpoint(msg: StunMessage, endpoint: TransportAddress): StunMessage {
  return addXorAddress(msg, AttrType.MappedEndpoint, endpoint);
}

/** BOUND-ENDPOINT: the address a recipient's SOCKS5 proxy bound for it (at most one: a repeated one is malformed). */
export function getBoundEndpoint(msg: StunMessage): TransportAddress | undefined {
  if (msg.getAll(AttrType.BoundEndpoint).length > 1) throw malformed('BOUND-ENDPOINT appears more than once');
  return getXorAddressAttr(msg, AttrType.BoundEndpoint);
}

/** Adds BOUND-ENDPOINT (the proxy's BIND address and port; unspecified address: the proxy's as the broker sees it), XORed with `msg.transactionId`. */
export function addBoundEndpoint(msg: StunMessage, endpoint: TransportAddress): StunMessage {
  return addXorAddress(msg, AttrType.BoundEndpoint, endpoint);
}

/** Adds `addr` in MAPPED-ADDRESS encoding under `type`. */
export function addAddress(msg: StunMessage, type: number, addr: TransportAddress): StunMessage {
  return msg.add(type, encodeAddress(addr));
}

/** Adds URI; throws InvalidArgument when it is empty or over `MAX_URI_BYTES` of UTF-8. */
export function addUri(msg: StunMessage, uri: string): StunMessage {
  if (uri === '') throw invalidArgument('URI must not be empty');
  return msg.add(AttrType.Uri, encodeText(uri, MAX_URI_BYTES, 'URI'));
}

/** Adds ATTEMPT-ID; throws InvalidArgument unless `id` is `ATTEMPT_ID_LENGTH` bytes. */
export function addAttemptId(msg: StunMessage, id: Uint8Array): StunMessage {
  checkBytes(id, 'attempt ID');
  if (id.length !== ATTEMPT_ID_LENGTH) throw invalidArgument(`attempt ID must be ${ATTEMPT_ID_LENGTH} bytes, got ${id.length}`);
  return msg.add(AttrType.AttemptId, Uint8Array.from(id));
}

/** Adds a 32-bit unsigned attribute (START-DELAY, LIFETIME); throws InvalidArgument outside 0-0xFFFFFFFF. */
export function addU32(msg: StunMessage, type: number, n: number): StunMessage {
  return msg.add(type, encodeU32(n));
}

/** ROLE (nattrav): the sender's part in an attempt; a code other than a {@link RoleCode} is malformed. */
export function getRole(msg: StunMessage): RoleName | undefined {
  return decodeIfPresent(msg, AttrType.Role, (v) => {
    const code = decodeU32(v, 'ROLE');
    if (code === RoleCode.initiator) return 'initiator';
    if (code === RoleCode.recipient) return 'recipient';
    throw malformed(`ROLE ${code} is not a known role`);
  });
}

/** Adds ROLE. */
export function addRole(msg: StunMessage, role: RoleName): StunMessage {
  return msg.add(AttrType.Role, encodeU32(RoleCode[role]));
}

/** SECURITY (nattrav): what the Hello's sender runs after it; absent means plain. */
export function getSecurityMode(msg: StunMessage): SecurityModeValue | undefined {
  return decodeIfPresent(msg, AttrType.Security, (v) => {
    const mode = decodeU32(v, 'SECURITY');
    const known = Object.values(SecurityMode) as readonly number[];
    if (!known.includes(mode)) throw malformed(`SECURITY ${mode} is not a known mode`);
    return mode as SecurityModeValue;
  });
}

/** RELAY-QUOTA (nattrav, see relay-quota.ts). */
export function getRelayQuota(msg: StunMessage): RelayQuotaAttribute | undefined {
  return decodeIfPresent(msg, AttrType.RelayQuota, decodeRelayQuota);
}

/** Adds RELAY-QUOTA. */
export function addRelayQuota(msg: StunMessage, quota: RelayQuotaAttribute): StunMessage {
  return msg.add(AttrType.RelayQuota, encodeRelayQuota(quota));
}

/** PEER-KEY (nattrav): the other peer's key fingerprint, checked for its form. */
export function getPeerKey(msg: StunMessage): string | undefined {
  return decodeIfPresent(msg, AttrType.PeerKey, (v) => {
    const text = decodeText(v, KEY_FINGERPRINT_LENGTH, 'PEER-KEY');
    if (!/^[a-z2-7]+$/.test(text) || text.length !== KEY_FINGERPRINT_LENGTH) throw malformed(`PEER-KEY must be ${KEY_FINGERPRINT_LENGTH} characters a-z 2-7`);
    return text;
  });
}

/** Adds PEER-KEY; throws InvalidArgument unless `fingerprint` has the form of a key fingerprint. */
export function addPeerKey(msg: StunMessage, fingerprint: string): StunMessage {
  if (!/^[a-z2-7]+$/.test(fingerprint) || fingerprint.length !== KEY_FINGERPRINT_LENGTH) {
    throw invalidArgument(`PEER-KEY must be ${KEY_FINGERPRINT_LENGTH} characters a-z 2-7, got ${JSON.stringify(fingerprint)}`);
  }
  return msg.add(AttrType.PeerKey, encodeText(fingerprint, KEY_FINGERPRINT_LENGTH, 'PEER-KEY'));
}

/** The lengths INITIATOR-CERTIFICATE may have: a sealed certificate of 1 to {@link MAX_HELLO_CERTIFICATE_BYTES} bytes. */
const SEALED_CERTIFICATE_MIN = 1 + HELLO_CERTIFICATE_SEAL_BYTES;
const SEALED_CERTIFICATE_MAX = MAX_HELLO_CERTIFICATE_BYTES + HELLO_CERTIFICATE_SEAL_BYTES;

/** INITIATOR-CERTIFICATE (nattrav): the initiator's sealed certificate in its Hello, of a length a sealed certificate can have (a copy). */
export function getInitiatorCertificate(msg: StunMessage): Uint8Array | undefined {
  return decodeIfPresent(msg, AttrType.InitiatorCertificate, (v) => {
    if (v.length < SEALED_CERTIFICATE_MIN || v.length > SEALED_CERTIFICATE_MAX) throw malformed(`INITIATOR-CERTIFICATE is ${v.length} bytes, not ${SEALED_CERTIFICATE_MIN} to ${SEALED_CERTIFICATE_MAX}`);
    return Uint8Array.from(v);
  });
}

/** Adds INITIATOR-CERTIFICATE (`sealed`: security/attempt-secret.ts sealHelloCertificate); throws InvalidArgument when it cannot be a sealed certificate. */
export function addInitiatorCertificate(msg: StunMessage, sealed: Uint8Array): StunMessage {
  checkBytes(sealed, 'sealed initiator certificate');
  if (sealed.length < SEALED_CERTIFICATE_MIN || sealed.length > SEALED_CERTIFICATE_MAX) {
    throw invalidArgument(`the sealed initiator certificate must be ${SEALED_CERTIFICATE_MIN} to ${SEALED_CERTIFICATE_MAX} bytes, got ${sealed.length}`);
  }
  return msg.add(AttrType.InitiatorCertificate, Uint8Array.from(sealed));
}
