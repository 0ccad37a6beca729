/**
 * The broker's answer to a UDP Binding request, as RFC 5780 §6.1 asks of a
 * NAT behaviour discovery server. Pure: it decides what to send, from which of
 * the broker's sockets and to where; broker.ts does the sending.
 *
 * The broker listens on up to four UDP sockets (RFC 5780 §3): the primary
 * address and port, the primary address with the alternate port, and, when
 * an alternate address is configured, the alternate address with either port.
 * "Change IP" and "change port" are relative to the socket a request arrived
 * on, and OTHER-ADDRESS names the socket that differs from it in both
 * (RFC 5780 §7.4: "the source IP address and port that would be used if the
 * client requested the 'change IP' and 'change port' behavior").
 */
import { isIP } from 'node:net';
import { toTransportAddress } from '../common/endpoint.js';
import { isNattravError } from '../errors.js';
import { AttrType, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addAddress, addXorAddress, getChangeRequest, getResponsePort } from '../wire/nattrav.js';
import { encodePadding } from '../wire/padding.js';
import type { TransportAddress } from '../wire/types.js';
import { encodeUnknownAttributes } from '../wire/unknown-attributes.js';

/**
 * RFC 5780 §6.1: PADDING in a response SHOULD be as long as the MTU of the
 * outgoing interface, rounded up to a multiple of 4. Node cannot read the
 * interface MTU, so this assumes Ethernet's 1500 bytes (coturn does the same).
 */
export const RESPONSE_PADDING_BYTES = 1500;

/** One of the broker's sockets, named by whether it uses the alternate address and/or the alternate port. */
export interface ServerSocketId {
  /** True for the alternate address (RFC 5780 §3), false for the primary. */
  readonly alternateIp: boolean;
  /** True for the alternate port, false for the primary. */
  readonly alternatePort: boolean;
}

/** Where the broker listens. */
export interface Rfc5780Layout {
  /** The primary address (may be a wildcard when there is no alternate address). */
  readonly host: string;
  /** The primary port. */
  readonly port: number;
  /** The alternate port (always listened on). */
  readonly alternatePort: number;
  /** The alternate address, when one is configured. */
  readonly alternateHost?: string;
}

/** What to send in answer to one Binding request. */
export interface BindingAnswer {
  /** The response (success or error). */
  readonly response: StunMessage;
  /** The socket to send it from. */
  readonly from: ServerSocketId;
  /** The address to send it to. */
  readonly to: TransportAddress;
}

/** Every socket of `layout`: two, or four with an alternate address. Primary first. */
export function serverSockets(layout: Rfc5780Layout): ServerSocketId[] {
  const ids: ServerSocketId[] = [
    { alternateIp: false, alternatePort: false },
    { alternateIp: false, alternatePort: true },
  ];
  if (layout.alternateHost !== undefined) {
    ids.push({ alternateIp: true, alternatePort: false }, { alternateIp: true, alternatePort: true });
  }
  return ids;
}

/** A stable string key for a socket id (for maps). */
export function socketKey(id: ServerSocketId): string {
  return `${id.alternateIp ? 'alt' : 'pri'}-ip/${id.alternatePort ? 'alt' : 'pri'}-port`;
}

/** The address and port a socket is bound to. */
export function socketAddress(layout: Rfc5780Layout, id: ServerSocketId): { address: string; port: number } {
  const address = id.alternateIp ? layout.alternateHost : layout.host;
  if (address === undefined) throw new Error('socketAddress: the layout has no alternate address');
  return { address, port: id.alternatePort ? layout.alternatePort : layout.port };
}

/** True for 0.0.0.0 and ::, which cannot be reported as a RESPONSE-ORIGIN. */
export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || (isIP(host) === 6 && /^[0:]+$/.test(host));
}

/**
 * Builds the answer to a Binding request that arrived on `arrivedOn` from
 * `remote` (RFC 5780 §6.1):
 *
 * 1. CHANGE-REQUEST picks the socket to answer from: the IP and/or port flipped
 *    relative to `arrivedOn`. "Change IP" without an alternate address is
 *    answered with 420 (Unknown Attribute) listing CHANGE-REQUEST, as coturn
 *    does: the server cannot honour it (RFC 5780 §7.2).
 * 2. RESPONSE-PORT sends the answer to that port of the client's address
 *    (§7.5); together with PADDING it is a 400 (§6.1).
 * 3. The response carries XOR-MAPPED-ADDRESS and, for RFC 3489 era clients and
 *    coturn's ALG check, MAPPED-ADDRESS; RESPONSE-ORIGIN (§7.3) unless the
 *    broker is bound to a wildcard; OTHER-ADDRESS (§7.4) when an alternate
 *    address exists; PADDING of {@link RESPONSE_PADDING_BYTES} when the request
 *    had PADDING (§6.1).
 */
export function answerBinding(
  request: StunMessage,
  arrivedOn: ServerSocketId,
  remote: TransportAddress,
  layout: Rfc5780Layout,
): BindingAnswer {
  const fail = (code: number, reason: string): BindingAnswer => ({
    response: request.errorResponse(code, reason),
    from: arrivedOn,
    to: remote,
  });
  let changeIp = false;
  let changePort = false;
  let responsePort: number | undefined;
  try {
    const change = getChangeRequest(request);
    changeIp = change?.changeIp ?? false;
    changePort = change?.changePort ?? false;
    responsePort = getResponsePort(request);
  } catch (err) {
    return fail(StunErrorCode.BadRequest, isNattravError(err) ? err.message : 'malformed request');
  }
  const padded = request.has(AttrType.Padding);
  if (padded && responsePort !== undefined) {
    return fail(StunErrorCode.BadRequest, 'PADDING and RESPONSE-PORT cannot be used together (RFC 5780 §6.1)');
  }
  if (responsePort === 0) return fail(StunErrorCode.BadRequest, 'RESPONSE-PORT 0 is not a port');
  if (changeIp && layout.alternateHost === undefined) {
    const answer = fail(StunErrorCode.UnknownAttribute, 'Unknown Attribute: this server has no alternate address for CHANGE-REQUEST "change IP"');
    answer.response.add(AttrType.UnknownAttributes, encodeUnknownAttributes([AttrType.ChangeRequest]));
    return answer;
  }
  const from: ServerSocketId = {
    alternateIp: changeIp ? !arrivedOn.alternateIp : arrivedOn.alternateIp,
    alternatePort: changePort ? !arrivedOn.alternatePort : arrivedOn.alternatePort,
  };
  const response = request.successResponse();
  addXorAddress(response, AttrType.XorMappedAddress, remote);
  addAddress(response, AttrType.MappedAddress, remote);
  const origin = socketAddress(layout, from);
  if (!isWildcard(origin.address)) {
    addAddress(response, AttrType.ResponseOrigin, toTransportAddress(origin.address, origin.port));
  }
  if (layout.alternateHost !== undefined) {
    const other = socketAddress(layout, { alternateIp: !arrivedOn.alternateIp, alternatePort: !arrivedOn.alternatePort });
    addAddress(response, AttrType.OtherAddress, toTransportAddress(other.address, other.port));
  }
  if (padded) response.add(AttrType.Padding, encodePadding(RESPONSE_PADDING_BYTES));
  return { response, from, to: responsePort === undefined ? remote : { ...remote, port: responsePort } };
}
