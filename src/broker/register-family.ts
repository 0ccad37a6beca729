/**
 * Registrations of a dual-stack recipient's second address family (SECOND-FAMILY): a refresh
 * under the registration's session, from the peer's socket of the other family, kept next to
 * the first family's endpoint instead of moving the registration (register.ts runs the rest).
 * Also the pieces of an answer both share: the success with XOR-MAPPED-ADDRESS and LIFETIME,
 * the routability check of a refresh from a new address, OTHER-FAMILY-BROKER.
 */
import { sameEndpoint } from '../common/endpoint.js';
import { AttrType, StunErrorCode } from '../wire/constants.js';
import { addOtherFamilyBroker } from '../wire/family.js';
import type { StunMessage } from '../wire/message.js';
import { addU32, addXorAddress, getXorAddressAttrs } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import type { RegisterContext } from './register.js';
import type { FamilyRegistration, Registration } from './registry/registry.js';
import type { Session } from './sessions.js';

/**
 * Whether a refresh from `remote` (not the session's endpoint) was shown to come from there:
 * it echoes a routability token minted for it. If not, answers 438 with one, no larger than
 * the refresh (security/proof.ts step 4), and returns false.
 */
export function routable(ctx: RegisterContext, request: StunMessage, session: Session, remote: TransportAddress): boolean {
  const echo = request.get(AttrType.Nonce);
  if (echo !== undefined && ctx.auth.nonces.checkRoutability(echo, session.id, remote)) return true;
  const challenge = request.errorResponse(StunErrorCode.StaleNonce, 'new address: echo this nonce from it');
  challenge.add(AttrType.Nonce, ctx.auth.nonces.mintRoutability(session.id, remote));
  ctx.reply(challenge, { integritySha256Key: session.key });
  return false;
}

/**
 * A refresh with SECOND-FAMILY: the session's holder registers its other address family from
 * `remote` (a dual-stack recipient's IPv6 socket next to its IPv4 one, or the reverse). Kept as
 * the registration's second family, not a move: the first family's endpoint and the session
 * stay as they are. A new source must echo a routability token first, as any refresh from a
 * new address; the registration must exist, be the session key's, and be of the other family.
 */
export async function refreshSecondFamily(
  ctx: RegisterContext,
  request: StunMessage,
  remote: TransportAddress,
  transport: 'udp' | 'tcp',
  uri: string,
  lifetimeMs: number,
  session: Session,
): Promise<string | undefined> {
  const current = await ctx.registry.get(uri);
  const problem =
    transport !== 'udp' ? 'SECOND-FAMILY is for UDP registrations'
    : current === undefined || current.keyFingerprint !== session.keyFingerprint ? `no registration of ${uri} under this session to add a family to`
    : current.publicEndpoint.family === remote.family ? `SECOND-FAMILY from the registration's own family (${remote.family})`
    : undefined;
  if (problem !== undefined || current === undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.BadRequest, problem ?? 'no registration'), { integritySha256Key: session.key });
    return undefined;
  }
  const known = current.secondFamily?.publicEndpoint;
  if ((known === undefined || !sameEndpoint(known, remote)) && !routable(ctx, request, session, remote)) return undefined;
  const secondFamily: FamilyRegistration = {
    publicEndpoint: remote,
    privateEndpoints: getXorAddressAttrs(request, AttrType.PrivateEndpoint).filter((e) => e.family === remote.family),
    expiresAt: ctx.now() + lifetimeMs,
    ...(ctx.brokerId === undefined ? {} : { broker: ctx.brokerId }),
  };
  await ctx.registry.put({ ...current, secondFamily });
  ctx.reply(announceOtherFamily(ctx, success(request, remote, lifetimeMs), remote), { integritySha256Key: session.key }, true);
  ctx.onRegistered(uri, remote, lifetimeMs, true, true);
  return uri;
}

/** The second family of `current` to keep through a refresh of the first from `remote`: the same key's, live, of the other family. */
export function keptSecondFamily(current: Registration | undefined, fingerprint: string, remote: TransportAddress, now: number): FamilyRegistration | undefined {
  const second = current?.secondFamily;
  if (current === undefined || second === undefined || current.keyFingerprint !== fingerprint) return undefined;
  return second.publicEndpoint.family !== remote.family && second.expiresAt > now ? second : undefined;
}

/** Adds OTHER-FAMILY-BROKER (the broker's address in the family other than `remote`'s) to a verified answer, when one is announced. */
export function announceOtherFamily(ctx: RegisterContext, response: StunMessage, remote: TransportAddress): StunMessage {
  const other = ctx.otherFamilyBroker?.(remote.family);
  if (other !== undefined) addOtherFamilyBroker(response, other);
  return response;
}

/** A success answer to a Register: where the request came from (XOR-MAPPED-ADDRESS) and the lifetime granted. */
export function success(request: StunMessage, remote: TransportAddress, lifetimeMs: number): StunMessage {
  const response = request.successResponse();
  addXorAddress(response, AttrType.XorMappedAddress, remote);
  addU32(response, AttrType.Lifetime, lifetimeMs);
  return response;
}
