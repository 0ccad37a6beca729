/**
 * NAT-PMP codec (RFC 6886): pure encode/decode of the external-address and mapping
 * requests and their responses. Every response is untrusted: exact sizes, version,
 * opcode and result code are checked before a field is read.
 */
import { ErrorCode, NattravError } from '../errors.js';

/** NAT-PMP and PCP servers listen on this UDP port (RFC 6886 §3.1, RFC 6887 §19.1). */
export const PORTMAP_SERVER_PORT = 5351;
/** The NAT-PMP version field (RFC 6886 §3.2). */
export const NATPMP_VERSION = 0;

/** NAT-PMP opcodes (RFC 6886 §3.2, §3.3); a response's opcode is the request's + 128. */
export const NatPmpOpcode = {
  /** Determine the external address (§3.2). */
  ExternalAddress: 0,
  /** Map a UDP port (§3.3). */
  MapUdp: 1,
  /** Map a TCP port (§3.3). */
  MapTcp: 2,
} as const;
/** One of {@link NatPmpOpcode}. */
export type NatPmpOpcodeValue = (typeof NatPmpOpcode)[keyof typeof NatPmpOpcode];

/** Added to the request opcode in a response (RFC 6886 §3.2). */
export const NATPMP_RESPONSE_BIT = 128;

/** NAT-PMP result codes (RFC 6886 §3.5). */
export const NatPmpResult = {
  Success: 0,
  UnsupportedVersion: 1,
  /** Not authorized / refused (e.g. the box supports mapping but the user turned it off). */
  NotAuthorized: 2,
  /** Network failure (e.g. the NAT has not obtained a DHCP lease). */
  NetworkFailure: 3,
  /** Out of resources (no ports left). */
  OutOfResources: 4,
  UnsupportedOpcode: 5,
} as const;

const RESULT_NAMES: Record<number, string> = {
  0: 'SUCCESS',
  1: 'UNSUPP_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'NETWORK_FAILURE',
  4: 'OUT_OF_RESOURCES',
  5: 'UNSUPP_OPCODE',
};

/** The RFC's name of a NAT-PMP result code, or `RESULT_<n>` for an unknown one. */
export function natPmpResultName(code: number): string {
  return RESULT_NAMES[code] ?? `RESULT_${code}`;
}

/** Size of the external-address request (§3.2): version, opcode. */
export const NATPMP_ADDRESS_REQUEST_BYTES = 2;
/** Size of the external-address response (§3.2). */
export const NATPMP_ADDRESS_RESPONSE_BYTES = 12;
/** Size of a mapping request (§3.3). */
export const NATPMP_MAP_REQUEST_BYTES = 12;
/** Size of a mapping response (§3.3). */
export const NATPMP_MAP_RESPONSE_BYTES = 16;
/** Size of the header every response starts with: version, opcode, result code, epoch (§3.5). */
export const NATPMP_RESPONSE_HEADER_BYTES = 8;

/** The common part of every NAT-PMP response. */
export interface NatPmpHeader {
  /** The opcode of the request this answers (response opcode - 128). */
  readonly opcode: number;
  /** The result code ({@link NatPmpResult}). */
  readonly result: number;
  /** Seconds since the gateway's port-mapping table was (re)initialized (§3.6). */
  readonly epoch: number;
}

/** A successful external-address response. */
export interface NatPmpAddressResponse extends NatPmpHeader {
  /** The gateway's external IPv4 address, dotted quad. */
  readonly externalAddress: string;
}

/** A successful mapping response. */
export interface NatPmpMapResponse extends NatPmpHeader {
  /** The internal port the mapping forwards to. */
  readonly internalPort: number;
  /** The external port the gateway assigned. */
  readonly externalPort: number;
  /** Granted lifetime in seconds (0: the mapping was deleted). */
  readonly lifetimeSeconds: number;
}

/** A mapping request's fields. */
export interface NatPmpMapRequest {
  /** `tcp` (opcode 2) or `udp` (opcode 1). */
  protocol: 'tcp' | 'udp';
  /** The local port to forward to, 1..65535. */
  internalPort: number;
  /** The external port wanted; 0: any (§3.3). */
  suggestedExternalPort: number;
  /** Requested lifetime in seconds; 0 deletes the mapping (§3.4). */
  lifetimeSeconds: number;
}

function malformed(message: string): NattravError {
  return new NattravError(ErrorCode.PortMapping, `NAT-PMP: ${message}`);
}

function checkUint(name: string, value: number, max: number, min = 0): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new NattravError(ErrorCode.InvalidArgument, `NAT-PMP ${name} must be a whole number ${min}..${max}, got ${value}`);
  }
}

/** The external-address request (§3.2): two bytes, version 0, opcode 0. */
export function encodeNatPmpAddressRequest(): Buffer {
  return Buffer.from([NATPMP_VERSION, NatPmpOpcode.ExternalAddress]);
}

/** A mapping request (§3.3); with lifetime 0 and external port 0 it deletes the mapping (§3.4). */
export function encodeNatPmpMapRequest(request: NatPmpMapRequest): Buffer {
  checkUint('internal port', request.internalPort, 0xffff, 1);
  checkUint('suggested external port', request.suggestedExternalPort, 0xffff);
  checkUint('lifetime', request.lifetimeSeconds, 0xffffffff);
  const out = Buffer.alloc(NATPMP_MAP_REQUEST_BYTES);
  out[0] = NATPMP_VERSION;
  out[1] = request.protocol === 'tcp' ? NatPmpOpcode.MapTcp : NatPmpOpcode.MapUdp;
  // Bytes 2-3 are reserved, zero.
  out.writeUInt16BE(request.internalPort, 4);
  out.writeUInt16BE(request.suggestedExternalPort, 6);
  out.writeUInt32BE(request.lifetimeSeconds, 8);
  return out;
}

/**
 * The common header of a response. Throws ERR_PORTMAP when the bytes are not a NAT-PMP
 * response (short, wrong version, no response bit). Does not judge the result code.
 */
export function decodeNatPmpHeader(bytes: Uint8Array): NatPmpHeader {
  if (bytes.length < NATPMP_RESPONSE_HEADER_BYTES) throw malformed(`a response of ${bytes.length} bytes is shorter than the ${NATPMP_RESPONSE_HEADER_BYTES}-byte header`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf[0] !== NATPMP_VERSION) throw malformed(`response version ${buf[0]}, expected ${NATPMP_VERSION}`);
  const op = buf[1] as number;
  if (op < NATPMP_RESPONSE_BIT) throw malformed(`opcode ${op} is a request, not a response`);
  return { opcode: op - NATPMP_RESPONSE_BIT, result: buf.readUInt16BE(2), epoch: buf.readUInt32BE(4) };
}

function expectSuccess(header: NatPmpHeader, opcode: number, size: number, bytes: Uint8Array): void {
  if (header.opcode !== opcode) throw malformed(`answer to opcode ${header.opcode}, expected ${opcode}`);
  if (header.result !== NatPmpResult.Success) {
    throw malformed(`the gateway answered ${natPmpResultName(header.result)} (result code ${header.result})`);
  }
  if (bytes.length !== size) throw malformed(`a response to opcode ${opcode} has ${bytes.length} bytes, expected ${size}`);
}

/** A successful external-address response (§3.2); throws ERR_PORTMAP otherwise, naming the result code. */
export function decodeNatPmpAddressResponse(bytes: Uint8Array): NatPmpAddressResponse {
  const header = decodeNatPmpHeader(bytes);
  expectSuccess(header, NatPmpOpcode.ExternalAddress, NATPMP_ADDRESS_RESPONSE_BYTES, bytes);
  return { ...header, externalAddress: Array.from(bytes.subarray(8, 12)).join('.') };
}

/** A successful mapping response (§3.3) to a request of `protocol`; throws ERR_PORTMAP otherwise. */
export function decodeNatPmpMapResponse(bytes: Uint8Array, protocol: 'tcp' | 'udp'): NatPmpMapResponse {
  const header = decodeNatPmpHeader(bytes);
  expectSuccess(header, protocol === 'tcp' ? NatPmpOpcode.MapTcp : NatPmpOpcode.MapUdp, NATPMP_MAP_RESPONSE_BYTES, bytes);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { ...header, internalPort: buf.readUInt16BE(8), externalPort: buf.readUInt16BE(10), lifetimeSeconds: buf.readUInt32BE(12) };
}
