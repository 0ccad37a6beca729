/**
 * PCP codec (RFC 6887): the common header and the MAP opcode, IPv4 only. Pure; every
 * response is untrusted and checked (size bounds, version, R bit, opcode, nonce) before use.
 */
import { randomBytes } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { ErrorCode, NattravError } from '../errors.js';

/** The PCP version field (RFC 6887 §7.1). */
export const PCP_VERSION = 2;
/** Requests and responses are at most this long (§7). */
export const PCP_MAX_MESSAGE_BYTES = 1100;
/** The common request header (§7.1) and response header (§7.2). */
export const PCP_HEADER_BYTES = 24;
/** The MAP opcode's payload (§11.1). */
export const PCP_MAP_PAYLOAD_BYTES = 36;
/** Size of the mapping nonce (§11.1). */
export const PCP_NONCE_BYTES = 12;
/** The R bit: set in responses (§7.2). */
export const PCP_RESPONSE_BIT = 0x80;

/** PCP opcodes (§19.2). */
export const PcpOpcode = {
  Announce: 0,
  Map: 1,
  Peer: 2,
} as const;

/** IANA protocol numbers used in the MAP payload (§11.1). */
export const PcpProtocol = { tcp: 6, udp: 17 } as const;

/** PCP result codes (§7.4). */
export const PcpResult = {
  Success: 0,
  UnsuppVersion: 1,
  NotAuthorized: 2,
  MalformedRequest: 3,
  UnsuppOpcode: 4,
  UnsuppOption: 5,
  MalformedOption: 6,
  NetworkFailure: 7,
  NoResources: 8,
  UnsuppProtocol: 9,
  UserExQuota: 10,
  CannotProvideExternal: 11,
  AddressMismatch: 12,
  ExcessiveRemotePeers: 13,
} as const;

const RESULT_NAMES = [
  'SUCCESS',
  'UNSUPP_VERSION',
  'NOT_AUTHORIZED',
  'MALFORMED_REQUEST',
  'UNSUPP_OPCODE',
  'UNSUPP_OPTION',
  'MALFORMED_OPTION',
  'NETWORK_FAILURE',
  'NO_RESOURCES',
  'UNSUPP_PROTOCOL',
  'USER_EX_QUOTA',
  'CANNOT_PROVIDE_EXTERNAL',
  'ADDRESS_MISMATCH',
  'EXCESSIVE_REMOTE_PEERS',
];

/** The RFC's name of a PCP result code, or `RESULT_<n>` for an unknown one. */
export function pcpResultName(code: number): string {
  return RESULT_NAMES[code] ?? `RESULT_${code}`;
}

/** A MAP request (§11.1). */
export interface PcpMapRequest {
  /** The 96-bit nonce; keep it: renewals and the deletion must repeat it (§11.2). */
  nonce: Uint8Array;
  /** `tcp` or `udp`. */
  protocol: 'tcp' | 'udp';
  /** Our own IPv4 address, as the gateway sees it as the packet's source (§8.1). */
  clientAddress: string;
  /** The local port, 1..65535. */
  internalPort: number;
  /** The external port wanted; 0: any. */
  suggestedExternalPort: number;
  /** The external IPv4 address wanted; `0.0.0.0`: any. */
  suggestedExternalAddress: string;
  /** Requested lifetime in seconds; 0 deletes the mapping (§15). */
  lifetimeSeconds: number;
}

/** The common response header (§7.2). */
export interface PcpResponseHeader {
  /** The opcode answered (without the R bit). */
  readonly opcode: number;
  /** The result code ({@link PcpResult}). */
  readonly result: number;
  /** Granted lifetime in seconds; on an error, how long the error is expected to last (§7.2). */
  readonly lifetimeSeconds: number;
  /** The server's epoch time in seconds (§8.5). */
  readonly epoch: number;
}

/** A MAP response (§11.1). */
export interface PcpMapResponse extends PcpResponseHeader {
  /** The nonce echoed by the server. */
  readonly nonce: Buffer;
  /** The IANA protocol number answered. */
  readonly protocolNumber: number;
  /** The internal port the mapping forwards to. */
  readonly internalPort: number;
  /** The assigned external port. */
  readonly externalPort: number;
  /** The assigned external address (IPv4 dotted quad, or the IPv6 text when not IPv4-mapped). */
  readonly externalAddress: string;
}

/** A fresh random 96-bit mapping nonce (§11.1). */
export function newPcpNonce(): Buffer {
  return randomBytes(PCP_NONCE_BYTES);
}

function malformed(message: string): NattravError {
  return new NattravError(ErrorCode.PortMapping, `PCP: ${message}`);
}

function invalid(message: string): NattravError {
  return new NattravError(ErrorCode.InvalidArgument, `PCP ${message}`);
}

/** Writes `address` (IPv4) as an IPv4-mapped IPv6 address (§5) at `offset`. */
function writeMappedIPv4(out: Buffer, offset: number, address: string, what: string): void {
  if (!isIPv4(address)) throw invalid(`${what} must be an IPv4 address, got "${address}"`);
  out.fill(0, offset, offset + 10);
  out[offset + 10] = 0xff;
  out[offset + 11] = 0xff;
  address.split('.').forEach((octet, i) => {
    out[offset + 12 + i] = Number(octet);
  });
}

/** Reads a 16-byte address: IPv4 text when IPv4-mapped (§5), else the IPv6 text. */
function readAddress(buf: Buffer, offset: number): string {
  const bytes = buf.subarray(offset, offset + 16);
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return Array.from(bytes.subarray(12, 16)).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return groups.join(':');
}

function checkUint(name: string, value: number, max: number, min = 0): void {
  if (!Number.isInteger(value) || value < min || value > max) throw invalid(`${name} must be a whole number ${min}..${max}, got ${value}`);
}

/** A MAP request (§7.1 header + §11.1 payload), 60 bytes. */
export function encodePcpMapRequest(request: PcpMapRequest): Buffer {
  if (request.nonce.length !== PCP_NONCE_BYTES) throw invalid(`nonce must be ${PCP_NONCE_BYTES} bytes, got ${request.nonce.length}`);
  checkUint('internal port', request.internalPort, 0xffff, 1);
  checkUint('suggested external port', request.suggestedExternalPort, 0xffff);
  checkUint('lifetime', request.lifetimeSeconds, 0xffffffff);
  const out = Buffer.alloc(PCP_HEADER_BYTES + PCP_MAP_PAYLOAD_BYTES);
  out[0] = PCP_VERSION;
  out[1] = PcpOpcode.Map; // R bit clear: a request.
  // Bytes 2-3 reserved.
  out.writeUInt32BE(request.lifetimeSeconds, 4);
  writeMappedIPv4(out, 8, request.clientAddress, 'client address');
  const p = PCP_HEADER_BYTES;
  Buffer.from(request.nonce).copy(out, p);
  out[p + 12] = PcpProtocol[request.protocol];
  // 3 bytes reserved.
  out.writeUInt16BE(request.internalPort, p + 16);
  out.writeUInt16BE(request.suggestedExternalPort, p + 18);
  writeMappedIPv4(out, p + 20, request.suggestedExternalAddress, 'suggested external address');
  return out;
}

/**
 * An ANNOUNCE request (§14.1): the bare header, lifetime 0. Its answer carries the server's
 * epoch, the cheapest way to learn whether the server lost its state.
 */
export function encodePcpAnnounceRequest(clientAddress: string): Buffer {
  const out = Buffer.alloc(PCP_HEADER_BYTES);
  out[0] = PCP_VERSION;
  out[1] = PcpOpcode.Announce;
  writeMappedIPv4(out, 8, clientAddress, 'client address');
  return out;
}

/** A successful ANNOUNCE response (§14.1); throws ERR_PORTMAP otherwise. */
export function decodePcpAnnounceResponse(bytes: Uint8Array): PcpResponseHeader {
  const header = decodePcpResponseHeader(bytes);
  if (header.opcode !== PcpOpcode.Announce) throw malformed(`answer to opcode ${header.opcode}, expected ANNOUNCE (${PcpOpcode.Announce})`);
  if (header.result !== PcpResult.Success) throw malformed(`the gateway answered ${pcpResultName(header.result)} (result code ${header.result})`);
  return header;
}

/**
 * The common response header. Throws ERR_PORTMAP unless the bytes are a PCP response of a
 * legal size (24..1100, a multiple of 4: §7). Does not judge the result code.
 */
export function decodePcpResponseHeader(bytes: Uint8Array): PcpResponseHeader {
  if (bytes.length < PCP_HEADER_BYTES) throw malformed(`a response of ${bytes.length} bytes is shorter than the ${PCP_HEADER_BYTES}-byte header`);
  if (bytes.length > PCP_MAX_MESSAGE_BYTES || bytes.length % 4 !== 0) throw malformed(`a response of ${bytes.length} bytes: must be a multiple of 4, at most ${PCP_MAX_MESSAGE_BYTES}`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf[0] !== PCP_VERSION) throw malformed(`response version ${buf[0]}, expected ${PCP_VERSION}`);
  const op = buf[1] as number;
  if ((op & PCP_RESPONSE_BIT) === 0) throw malformed(`opcode byte ${op} has no R bit: a request, not a response`);
  return { opcode: op & 0x7f, result: buf[3] as number, lifetimeSeconds: buf.readUInt32BE(4), epoch: buf.readUInt32BE(8) };
}

/**
 * A MAP response to `request`: checks the opcode, the result code (ERR_PORTMAP naming it),
 * the nonce, protocol and internal port (a response for another mapping is refused).
 */
export function decodePcpMapResponse(bytes: Uint8Array, request: Pick<PcpMapRequest, 'nonce' | 'protocol' | 'internalPort'>): PcpMapResponse {
  const header = decodePcpResponseHeader(bytes);
  if (header.opcode !== PcpOpcode.Map) throw malformed(`answer to opcode ${header.opcode}, expected MAP (${PcpOpcode.Map})`);
  if (header.result !== PcpResult.Success) {
    throw malformed(`the gateway answered ${pcpResultName(header.result)} (result code ${header.result})`);
  }
  if (bytes.length < PCP_HEADER_BYTES + PCP_MAP_PAYLOAD_BYTES) throw malformed(`a MAP response of ${bytes.length} bytes is shorter than ${PCP_HEADER_BYTES + PCP_MAP_PAYLOAD_BYTES}`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const p = PCP_HEADER_BYTES;
  const nonce = Buffer.from(buf.subarray(p, p + PCP_NONCE_BYTES));
  if (!nonce.equals(Buffer.from(request.nonce))) throw malformed('the MAP response carries another mapping nonce');
  const protocolNumber = buf[p + 12] as number;
  const internalPort = buf.readUInt16BE(p + 16);
  if (protocolNumber !== PcpProtocol[request.protocol] || internalPort !== request.internalPort) {
    throw malformed(`the MAP response is for protocol ${protocolNumber} port ${internalPort}, not ${request.protocol} port ${request.internalPort}`);
  }
  return { ...header, nonce, protocolNumber, internalPort, externalPort: buf.readUInt16BE(p + 18), externalAddress: readAddress(buf, p + 20) };
}
