/**
 * Registrations, over UDP (the normal case: the datagrams hold the NAT mapping
 * open) or over a persistent TCP control connection (a recipient whose UDP is
 * blocked: NatTrav's TCP registration, Gnutella's push request).
 */
import { AttrType, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addU32, addXorAddress, getU32Attr, getUri, getXorAddressAttrs } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import type { Registry } from './registry/registry.js';

/** Shortest registration lifetime granted, in ms: shorter would be mostly refresh traffic. */
export const MIN_LIFETIME_MS = 1_000;
/** Lifetime granted when the peer asks for none, in ms. */
export const DEFAULT_LIFETIME_MS = 30_000;

/** What a registration needs from the broker around it. */
export interface RegisterContext {
  readonly registry: Registry;
  readonly maxLifetimeMs: number;
  now(): number;
  /** Sends the response back the way the request came. */
  reply(message: StunMessage): void;
  onRegistered(uri: string, publicEndpoint: TransportAddress, lifetimeMs: number): void;
}

/** Handles one Register request from `remote` arriving over `transport`; returns the URI registered. */
export async function handleRegister(
  ctx: RegisterContext,
  request: StunMessage,
  remote: TransportAddress,
  transport: 'udp' | 'tcp',
): Promise<string | undefined> {
  const uri = getUri(request);
  if (uri === undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.BadRequest, 'Register needs a URI attribute'));
    return undefined;
  }
  const asked = getU32Attr(request, AttrType.Lifetime) ?? DEFAULT_LIFETIME_MS;
  const lifetimeMs = Math.min(ctx.maxLifetimeMs, Math.max(MIN_LIFETIME_MS, asked));
  const privateEndpoints = getXorAddressAttrs(request, AttrType.PrivateEndpoint);
  await ctx.registry.put({ uri, publicEndpoint: remote, privateEndpoints, expiresAt: ctx.now() + lifetimeMs, transport });
  const response = request.successResponse();
  addXorAddress(response, AttrType.XorMappedAddress, remote);
  addU32(response, AttrType.Lifetime, lifetimeMs);
  ctx.reply(response);
  ctx.onRegistered(uri, remote, lifetimeMs);
  return uri;
}
