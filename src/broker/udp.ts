/**
 * The broker's UDP side: STUN Binding (RFC 8489 §7.3 for any STUN client),
 * registrations and their refreshes, and acknowledgements of connection requests.
 * Anything that does not decode is dropped without an answer (RFC 8489 §6.3).
 */
import { toTransportAddress } from '../common/endpoint.js';
import { decodeDatagram, unknownComprehensionRequired, type EncodeOptions } from '../wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addXorAddress } from '../wire/nattrav.js';
import { encodeUnknownAttributes } from '../wire/unknown-attributes.js';
import type { TransportAddress } from '../wire/types.js';
import type { Registry } from './registry/registry.js';
import { failureAnswer } from './failure.js';
import { handleRegister, type RegisterAuth, type RegisterContext } from './register.js';

/** The attribute types the broker understands in requests. */
export const KNOWN_ATTRIBUTES: ReadonlySet<number> = new Set<number>([
  AttrType.MappedAddress,
  AttrType.XorMappedAddress,
  AttrType.Username,
  AttrType.MessageIntegrity,
  AttrType.MessageIntegritySha256,
  AttrType.ErrorCode,
  AttrType.ChangeRequest,
  AttrType.ResponsePort,
  AttrType.Padding,
  AttrType.Realm,
  AttrType.Nonce,
  AttrType.Uri,
  AttrType.AttemptId,
  AttrType.PrivateEndpoint,
  AttrType.MappedEndpoint,
  AttrType.BoundEndpoint,
  AttrType.PeerPublicEndpoint,
  AttrType.PeerPrivateEndpoint,
  AttrType.StartDelay,
  AttrType.Lifetime,
  AttrType.PublicKey,
  AttrType.Signature,
  AttrType.Certificate,
  AttrType.EphemeralKey,
  AttrType.Sequence,
  AttrType.SecondFamily,
]);


/** What the UDP handler needs from the broker around it. */
export interface UdpContext extends Pick<RegisterContext, 'alternatePort' | 'brokerId' | 'otherFamilyBroker'> {
  readonly registry: Registry;
  readonly maxLifetimeMs: number;
  /** How registrations are authenticated. */
  readonly auth: RegisterAuth;
  now(): number;
  /**
   * Sends `response` to `request` (the broker sizes it by the request: amplification.ts).
   * `verified`: `to` proved it receives at its address (register.ts), so an answer under
   * integrity may exceed the request.
   */
  reply(request: StunMessage, response: StunMessage, to: TransportAddress, options?: EncodeOptions, verified?: boolean): void;
  /**
   * Answers a Binding request (RFC 5780 §6.1: CHANGE-REQUEST, RESPONSE-PORT, PADDING,
   * OTHER-ADDRESS, RESPONSE-ORIGIN; see rfc5780.ts). Without it the answer is a plain
   * RFC 8489 response with XOR-MAPPED-ADDRESS, sent back to the requester.
   */
  binding?(request: StunMessage, remote: TransportAddress): void;
  /** Checks a Register request against the broker's caps first: an error response (429) refuses it. */
  admitRegister?(request: StunMessage, remote: TransportAddress): StunMessage | undefined;
  /** A response to one of the broker's own requests (ConnectionRequest) arrived from `remote` (checked against the attempt: rendezvous.ts). */
  onResponse(message: StunMessage, remote: TransportAddress): void;
  onRegistered(uri: string, publicEndpoint: TransportAddress, lifetimeMs: number, refresh: boolean, secondFamily?: boolean): void;
  /** The holder of `uri` withdrew its registration (LIFETIME 0, see register.ts). */
  onWithdrawn?(uri: string, transport: 'udp' | 'tcp'): void;
  onBinding(remote: TransportAddress): void;
}

/** Handles one UDP datagram. Never throws. */
export async function handleDatagram(ctx: UdpContext, data: Buffer, remoteAddress: string, remotePort: number): Promise<void> {
  const message = decodeDatagram(data);
  if (message === undefined) return;
  const remote = toTransportAddress(remoteAddress, remotePort);
  if (message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse) {
    ctx.onResponse(message, remote);
    return;
  }
  if (message.cls !== MessageClass.Request) return;
  const unknown = unknownComprehensionRequired(message, KNOWN_ATTRIBUTES);
  if (unknown.length > 0) {
    const response = message.errorResponse(StunErrorCode.UnknownAttribute, 'Unknown Attribute');
    response.add(AttrType.UnknownAttributes, encodeUnknownAttributes(unknown));
    ctx.reply(message, response, remote);
    return;
  }
  try {
    switch (message.method) {
      case Method.Binding: {
        if (ctx.binding !== undefined) {
          ctx.binding(message, remote);
        } else {
          const response = message.successResponse();
          addXorAddress(response, AttrType.XorMappedAddress, remote);
          ctx.reply(message, response, remote);
        }
        ctx.onBinding(remote);
        return;
      }
      case Method.Register: {
        const refused = ctx.admitRegister?.(message, remote);
        if (refused !== undefined) {
          ctx.reply(message, refused, remote);
          return;
        }
        await register(ctx, message, remote);
        return;
      }
      default:
        ctx.reply(message, message.errorResponse(StunErrorCode.BadRequest, `method 0x${message.method.toString(16)} is not served over UDP`), remote);
    }
  } catch (err) {
    ctx.reply(message, failureAnswer(message, err), remote);
  }
}

async function register(ctx: UdpContext, request: StunMessage, remote: TransportAddress): Promise<void> {
  await handleRegister({ ...ctx, reply: (message, options, verified) => ctx.reply(request, message, remote, options, verified) }, request, remote, 'udp');
}
