/**
 * Registrations, over UDP (the normal case: the datagrams hold the NAT mapping
 * open) or over a persistent TCP control connection (a recipient whose UDP is
 * blocked: NatTrav's TCP registration, Gnutella's push request).
 *
 * Unless the broker runs in open mode, registering a URI needs proof of a key
 * that may hold it (security/proof.ts): a self-certifying URI names its key's
 * fingerprint; with a CA configured, other URIs need a certificate naming them;
 * otherwise a plain name belongs to the first key that registers it, for as long
 * as that registration is held. Refreshes are cheap: integrity under the session key;
 * one from a new UDP source moves the registration only once that source echoed a
 * routability token (answers to an unverified source are never larger than its request).
 * A refresh asking for LIFETIME 0 withdraws the registration and ends the session
 * (see {@link WITHDRAWAL_LIFETIME_MS}): only the session's holder can send one, once.
 */
import { keyFingerprint, sign, verify } from '../security/keys.js';
import { brokerPayload, newEphemeralKey, NonceBook, registrationPayload, sessionKey } from '../security/proof.js';
import { uriKeyFingerprint } from '../security/uri.js';
import { verifyMessageIntegritySha256, type EncodeOptions } from '../wire/codec.js';
import { AttrType, StunErrorCode, WITHDRAWAL_LIFETIME_MS } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addU32, addXorAddress, getBoundEndpoint, getMappedEndpoint, getU32Attr, getUri, getXorAddressAttrs } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import type { FamilyRegistration, Registry } from './registry/registry.js';
import type { AddressFamilyName } from './family.js';
import { hasSecondFamily } from '../wire/family.js';
import { announceOtherFamily, keptSecondFamily, refreshSecondFamily, routable, success } from './register-family.js';
import type { Session, SessionStore } from './sessions.js';
import { admitInstance, type InstanceChecks } from './instances.js';
import { getInstanceId, hasTakeover } from '../wire/instance.js';

/** Shortest registration lifetime granted, in ms: shorter would be mostly refresh traffic (0 is a withdrawal, not a lifetime). */
export const MIN_LIFETIME_MS = 1_000;
/** Lifetime granted when the peer asks for none, in ms. */
export const DEFAULT_LIFETIME_MS = 30_000;
/** Longest public key accepted (an RSA-4096 SPKI is ~550 bytes; ours are under 100). */
const MAX_PUBLIC_KEY_BYTES = 1_024;

/**
 * The broker's registration nonces: a {@link NonceBook}, or (`--workers`) one whose record
 * of used nonces is the primary's, so a proof is taken once by the whole broker.
 */
export type RegisterNonces = Pick<NonceBook, 'mint' | 'check' | 'mintRoutability' | 'checkRoutability' | 'used'> & {
  use(...args: Parameters<NonceBook['use']>): ReturnType<NonceBook['use']> | Promise<ReturnType<NonceBook['use']>>;
};

/** How the broker authenticates registrations. */
export interface RegisterAuth {
  /** 'open': no proof needed (closed networks only; the broker says so loudly). */
  readonly mode: 'authenticated' | 'open';
  readonly nonces: RegisterNonces;
  readonly sessions: SessionStore;
  /**
   * CA mode: checks that a peer certificate (DER) chains to the broker's CA,
   * is valid now, names `uri` and carries `spki`; returns why not, or undefined.
   */
  readonly verifyCertificate?: (certDer: Uint8Array, uri: string, spki: Uint8Array) => string | undefined;
  /** The broker's own key and certificate, to sign its answers so peers can authenticate it. */
  readonly identity?: { readonly keyPem: string; readonly certDer: Uint8Array };
  /** Tells another live instance of a key from the same one moving (instances.ts). @default none: a proof replaces the holder */
  readonly instances?: InstanceChecks;
}

/** What a registration needs from the broker around it. */
export interface RegisterContext {
  readonly registry: Registry;
  readonly maxLifetimeMs: number;
  readonly auth: RegisterAuth;
  now(): number;
  /**
   * Sends the response back the way the request came. `verified`: the request's source
   * proved it receives at its address (it echoed a nonce or routability token we sent
   * there), so the answer may be larger than the request; otherwise a UDP answer is cut
   * to the request's size (amplification.ts), integrity or not.
   */
  reply(message: StunMessage, options?: EncodeOptions, verified?: boolean): void;
  /**
   * A registration was stored; `refresh`: it renews one the same peer already held (a keepalive), not a new one;
   * `secondFamily`: it is the peer's second address family (SECOND-FAMILY), kept next to its first.
   */
  onRegistered(uri: string, publicEndpoint: TransportAddress, lifetimeMs: number, refresh: boolean, secondFamily?: boolean): void;
  /** The broker's address in the family other than `family` (BrokerOptions.announce), told in verified answers as OTHER-FAMILY-BROKER. @default none */
  otherFamilyBroker?(family: AddressFamilyName): TransportAddress | undefined;
  /** The broker's alternate port, announced in answers to new registrations (where the recipient's mapping probes go). */
  alternatePort?(): number | undefined;
  /** The registration of `uri` was withdrawn by its holder (and removed from the registry). */
  onWithdrawn?(uri: string, transport: 'udp' | 'tcp'): void;
  /** This broker's bus ID when it shares the registry with others: stored in each registration it takes (Registration.broker). */
  readonly brokerId?: string;
  /** The peer registers over a WebSocket: stored as Registration.web (the broker then plans the relay for it). */
  readonly web?: boolean;
}

/** Handles one Register request from `remote` arriving over `transport`; returns the URI registered (undefined when refused or withdrawn). */
export async function handleRegister(
  ctx: RegisterContext,
  request: StunMessage,
  remote: TransportAddress,
  transport: 'udp' | 'tcp',
): Promise<string | undefined> {
  const uri = getUri(request);
  if (uri === undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.BadRequest, 'Register needs a URI'));
    return undefined;
  }
  const asked = getU32Attr(request, AttrType.Lifetime) ?? DEFAULT_LIFETIME_MS;
  const username = request.get(AttrType.Username);
  if (asked === WITHDRAWAL_LIFETIME_MS) {
    await withdraw(ctx, request, remote, transport, uri, username === undefined ? undefined : Buffer.from(username).toString('hex'));
    return undefined;
  }
  const lifetimeMs = Math.min(ctx.maxLifetimeMs, Math.max(MIN_LIFETIME_MS, asked));
  if (username !== undefined) return refresh(ctx, request, remote, transport, uri, lifetimeMs, Buffer.from(username).toString('hex'));
  const spki = request.get(AttrType.PublicKey);
  if (spki === undefined) {
    if (ctx.auth.mode === 'open') {
      // Open mode has no sessions: a Register from where the live registration already points renews it.
      const held = await ctx.registry.get(uri);
      await store(ctx, uri, remote, request, lifetimeMs, transport, undefined);
      // No ALTERNATE-PORT here: the source is unverified, so the answer may not outgrow the request.
      const response = success(request, remote, lifetimeMs);
      ctx.reply(response);
      ctx.onRegistered(uri, remote, lifetimeMs, held !== undefined && sameEndpoint(held.publicEndpoint, remote) && (held.transport ?? 'udp') === transport);
      return uri;
    }
    ctx.reply(request.errorResponse(StunErrorCode.Unauthorized, 'proof of key required'));
    return undefined;
  }
  if (spki.length > MAX_PUBLIC_KEY_BYTES) {
    ctx.reply(request.errorResponse(StunErrorCode.BadRequest, 'PUBLIC-KEY too long'));
    return undefined;
  }
  // A retransmission of a proof whose holder is being asked (instances.ts): the first copy will be answered.
  if (ctx.auth.instances?.isWaiting(request.transactionId) === true) return undefined;
  const nonce = request.get(AttrType.Nonce);
  const binding = { source: remote, uri, spki };
  const challenge = (code: number, reason: string): undefined => {
    const response = request.errorResponse(code, reason);
    response.add(AttrType.Nonce, ctx.auth.nonces.mint(binding));
    ctx.reply(response);
    return undefined;
  };
  const replayed = (): undefined => {
    ctx.reply(request.errorResponse(StunErrorCode.Forbidden, 'replayed registration'));
    return undefined;
  };
  if (nonce === undefined) return challenge(StunErrorCode.Unauthorized, 'sign this nonce');
  const signature = request.get(AttrType.Signature);
  const ephemeral = request.get(AttrType.EphemeralKey);
  if (signature === undefined || ephemeral === undefined) return challenge(StunErrorCode.Unauthorized, 'SIGNATURE and EPHEMERAL-KEY needed');
  // Check the nonce, then the signature, and only then record the nonce as used:
  // proofs with garbage signatures must not fill the record (it is bounded per source).
  const verdict = ctx.auth.nonces.check(nonce, binding);
  if (verdict === 'stale') return challenge(StunErrorCode.StaleNonce, 'stale nonce');
  if (verdict === 'invalid') return challenge(StunErrorCode.Unauthorized, 'nonce not valid for this source, URI and key');
  if (verdict === 'replayed') return replayed();
  const payload = registrationPayload({ nonce, uri, ephemeralKey: ephemeral, lifetimeMs: asked, transport });
  if (!verify(spki, payload, signature)) {
    ctx.reply(request.errorResponse(StunErrorCode.Forbidden, 'signature does not verify with PUBLIC-KEY'));
    return undefined;
  }
  const ownership = ownershipProblem(ctx, request, uri, spki);
  if (ownership.problem !== undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.Forbidden, ownership.problem));
    return undefined;
  }
  const fingerprint = keyFingerprint(spki);
  // Before the nonce is taken: a copy of this proof that reaches another worker (`--workers`) while the holder is
  // asked waits for its own answer, and loses the nonce only after ours went out (the peer has it by then).
  const instances = ctx.auth.instances;
  const admitted = instances === undefined ? {} : await admitInstance({ registry: ctx.registry, sessions: ctx.auth.sessions, instances, reply: (m) => ctx.reply(m, {}, true) }, request, uri, fingerprint, instanceOf(request), takeoverOf(request));
  if (admitted === undefined) return undefined;
  const used = await ctx.auth.nonces.use(nonce, binding);
  if (used === 'replayed') return replayed();
  if (used === 'full') return challenge(StunErrorCode.StaleNonce, 'stale nonce (too many proofs from this address)');
  const own = newEphemeralKey();
  const key = sessionKey(own, ephemeral, nonce);
  if (key === undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.BadRequest, 'EPHEMERAL-KEY is not an X25519 key'));
    return undefined;
  }
  // The registration first: a plain name is claimed atomically (another broker may race for it),
  // and only its holder may then replace the URI's session.
  if (!(await store(ctx, uri, remote, request, lifetimeMs, transport, fingerprint, ownership.plain))) return undefined;
  const session = await ctx.auth.sessions.open(uri, key, fingerprint, ctx.now() + lifetimeMs, remote);
  if (session === undefined) {
    // Without a session nobody could refresh or reach it: take the registration back.
    const stored = await ctx.registry.get(uri);
    if (stored?.keyFingerprint === fingerprint) await ctx.registry.deleteIf(stored);
    ctx.reply(request.errorResponse(StunErrorCode.ServerError, 'broker full'));
    return undefined;
  }
  const response = announceOtherFamily(ctx, announceAlternatePort(ctx, success(request, remote, lifetimeMs)), remote);
  const sessionId = Buffer.from(session.id, 'hex');
  response.add(AttrType.Username, sessionId);
  response.add(AttrType.EphemeralKey, own.publicKey);
  if (ctx.auth.identity !== undefined) {
    const proof = brokerPayload({ nonce, sessionId, brokerEphemeralKey: own.publicKey, peerEphemeralKey: ephemeral });
    response.add(AttrType.Signature, sign(ctx.auth.identity.keyPem, proof));
    response.add(AttrType.Certificate, ctx.auth.identity.certDer);
  }
  ctx.reply(response, { integritySha256Key: key }, true); // the nonce came back from `remote`
  ctx.onRegistered(uri, remote, lifetimeMs, false);
  if (admitted.displaced !== undefined) instances?.tellTakenOver(admitted.displaced);
  return uri;
}

/** INSTANCE-ID of a proof; a malformed one counts as none (the behaviour of peers without instances). */
function instanceOf(request: StunMessage): Uint8Array | undefined {
  try {
    return getInstanceId(request);
  } catch {
    return undefined;
  }
}

/** Whether a proof asks to take over (a malformed TAKEOVER does not). */
function takeoverOf(request: StunMessage): boolean {
  try {
    return hasTakeover(request);
  } catch {
    return false;
  }
}

/**
 * A refresh under an existing session: integrity and a fresh sequence number. From
 * another source than the session's, over UDP, it moves the registration only with a
 * routability token echoed from there (security/proof.ts step 4); TCP's handshake is
 * that check already.
 */
async function refresh(
  ctx: RegisterContext,
  request: StunMessage,
  remote: TransportAddress,
  transport: 'udp' | 'tcp',
  uri: string,
  lifetimeMs: number,
  sessionId: string,
): Promise<string | undefined> {
  let second: boolean;
  try {
    second = hasSecondFamily(request);
  } catch {
    ctx.reply(request.errorResponse(StunErrorCode.BadRequest, 'SECOND-FAMILY must be u32 1'));
    return undefined;
  }
  const session = await authenticateRefresh(ctx, request, uri, sessionId);
  if (session === undefined) return undefined;
  if (second) return refreshSecondFamily(ctx, request, remote, transport, uri, lifetimeMs, session);
  if (transport === 'udp' && !sameEndpoint(session.endpoint, remote) && !routable(ctx, request, session, remote)) return undefined;
  if (!(await ctx.auth.sessions.renew(session, remote, ctx.now() + lifetimeMs))) {
    ctx.reply(request.errorResponse(StunErrorCode.Unauthorized, 'unknown session'));
    return undefined;
  }
  // The peer's second family (SECOND-FAMILY) stays next to the first while it lives.
  const kept = keptSecondFamily(await ctx.registry.get(uri), session.keyFingerprint, remote, ctx.now());
  if (!(await store(ctx, uri, remote, request, lifetimeMs, transport, session.keyFingerprint, true, session.key, kept))) return undefined;
  ctx.reply(announceOtherFamily(ctx, success(request, remote, lifetimeMs), remote), { integritySha256Key: session.key }, true);
  ctx.onRegistered(uri, remote, lifetimeMs, true);
  return uri;
}

/**
 * Checks a message under a session: the session exists and holds `uri`, the message
 * carries integrity under its key and a SEQUENCE above every one accepted so far.
 * Answers the refusal itself (undefined); on success records the sequence number
 * (atomically in the session store: a replay handed to two brokers at once passes one).
 */
async function authenticateRefresh(ctx: RegisterContext, request: StunMessage, uri: string, sessionId: string): Promise<Session | undefined> {
  const session = await ctx.auth.sessions.find(uri, sessionId);
  // Unknown or expired session (e.g. the broker restarted): the peer proves its key again.
  if (session === undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.Unauthorized, 'unknown session'));
    return undefined;
  }
  const sequence = getU32Attr(request, AttrType.Sequence);
  if (!verifyMessageIntegritySha256(request, session.key) || sequence === undefined) {
    ctx.reply(request.errorResponse(StunErrorCode.Unauthorized, 'refresh needs integrity under the session key'));
    return undefined;
  }
  const verdict = await ctx.auth.sessions.advance(session, sequence);
  if (verdict === 'unknown') {
    ctx.reply(request.errorResponse(StunErrorCode.Unauthorized, 'unknown session'));
    return undefined;
  }
  if (verdict === 'replayed') {
    ctx.reply(request.errorResponse(StunErrorCode.Forbidden, 'replayed refresh'), { integritySha256Key: session.key });
    return undefined;
  }
  return session;
}

/**
 * LIFETIME 0: the holder withdraws its registration. Under a session (the normal case)
 * the refresh checks apply, then the session ends, so the same withdrawal replayed, or any
 * older refresh, finds no session. Without one, only an open-mode registration made
 * without a key can be withdrawn, and only from the endpoint that holds it. Answers
 * success with LIFETIME 0; a refusal changes nothing.
 */
async function withdraw(
  ctx: RegisterContext,
  request: StunMessage,
  remote: TransportAddress,
  transport: 'udp' | 'tcp',
  uri: string,
  sessionId: string | undefined,
): Promise<void> {
  if (sessionId !== undefined) {
    const session = await authenticateRefresh(ctx, request, uri, sessionId);
    if (session === undefined) return;
    await ctx.auth.sessions.end(session);
    const current = await ctx.registry.get(uri);
    // Another key's registration (a registry shared by brokers) is not this session's to remove.
    const removed = current !== undefined && current.keyFingerprint === session.keyFingerprint && (await ctx.registry.deleteIf(current));
    ctx.reply(success(request, remote, WITHDRAWAL_LIFETIME_MS), { integritySha256Key: session.key }, transport === 'tcp' || sameEndpoint(session.endpoint, remote));
    if (removed) ctx.onWithdrawn?.(uri, transport);
    return;
  }
  if (ctx.auth.mode !== 'open') {
    ctx.reply(request.errorResponse(StunErrorCode.Unauthorized, 'a withdrawal needs integrity under the registration\'s session'));
    return;
  }
  const current = await ctx.registry.get(uri);
  if (current !== undefined) {
    const sameHolder =
      current.keyFingerprint === undefined &&
      (current.transport ?? 'udp') === transport &&
      current.publicEndpoint.address === remote.address &&
      current.publicEndpoint.port === remote.port;
    if (!sameHolder) {
      ctx.reply(request.errorResponse(StunErrorCode.Forbidden, `${uri} is held by another endpoint or key`));
      return;
    }
    await ctx.registry.deleteIf(current);
  }
  ctx.reply(success(request, remote, WITHDRAWAL_LIFETIME_MS));
  if (current !== undefined) ctx.onWithdrawn?.(uri, transport);
}

/**
 * Why this key may not hold `uri` (`problem`), and whether `uri` is a plain name, which the
 * first key to register holds while its registration lives (claimed in {@link store}).
 */
function ownershipProblem(ctx: RegisterContext, request: StunMessage, uri: string, spki: Uint8Array): { problem?: string; plain: boolean } {
  const claimed = uriKeyFingerprint(uri);
  if (claimed !== undefined) {
    return claimed === keyFingerprint(spki) ? { plain: false } : { problem: 'PUBLIC-KEY does not match the self-certifying URI', plain: false };
  }
  if (ctx.auth.verifyCertificate === undefined) return { plain: true };
  const certificate = request.get(AttrType.Certificate);
  if (certificate === undefined) return { problem: `this broker needs a certificate from its CA naming ${uri}`, plain: false };
  const problem = ctx.auth.verifyCertificate(certificate, uri, spki);
  // A certificate from the CA vouches for the key; the name still goes to the first key while it is registered.
  return problem === undefined ? { plain: true } : { problem, plain: false };
}

/**
 * Stores the registration. With `claim` (a plain name, or any refresh) only if no live
 * registration of another key holds the URI, atomically across brokers; a refusal is
 * answered here (under `integrityKey` when given) and returns false.
 */
async function store(
  ctx: RegisterContext,
  uri: string,
  remote: TransportAddress,
  request: StunMessage,
  lifetimeMs: number,
  transport: 'udp' | 'tcp',
  keyFingerprint: string | undefined,
  claim = false,
  integrityKey?: Buffer,
  secondFamily?: FamilyRegistration,
): Promise<boolean> {
  const mappedEndpoint = getMappedEndpoint(request);
  const boundEndpoint = getBoundEndpoint(request);
  const registration = {
    uri,
    publicEndpoint: remote,
    privateEndpoints: getXorAddressAttrs(request, AttrType.PrivateEndpoint),
    expiresAt: ctx.now() + lifetimeMs,
    // The port its gateway maps for it, when it holds one: path `portmap` (schedule.ts).
    ...(mappedEndpoint === undefined ? {} : { mappedEndpoint }),
    // The address its SOCKS5 proxy bound for it: path `socks5-bind` (schedule.ts).
    ...(boundEndpoint === undefined ? {} : { boundEndpoint }),
    transport,
    // The broker holding the peer's mapping (or control connection): connection requests leave from it.
    ...(ctx.brokerId === undefined ? {} : { broker: ctx.brokerId }),
    ...(ctx.web === true ? { web: true } : {}),
    ...(secondFamily === undefined ? {} : { secondFamily }),
  };
  if (keyFingerprint === undefined) {
    await ctx.registry.put(registration);
    return true;
  }
  if (!claim) {
    await ctx.registry.put({ ...registration, keyFingerprint });
    return true;
  }
  if ((await ctx.registry.claim({ ...registration, keyFingerprint })) === undefined) return true;
  const refusal = request.errorResponse(StunErrorCode.Forbidden, `${uri} is registered by another key`);
  ctx.reply(refusal, integrityKey === undefined ? {} : { integritySha256Key: integrityKey });
  return false;
}

/**
 * Adds ALTERNATE-PORT to the answer of a registration proven from its source (never to
 * refreshes or open-mode registrations: answers to an unverified source must stay no
 * larger than the request). Peers of an open broker learn it from the round-trip probe.
 */
function announceAlternatePort(ctx: RegisterContext, response: StunMessage): StunMessage {
  const port = ctx.alternatePort?.();
  if (port !== undefined) addU32(response, AttrType.AlternatePort, port);
  return response;
}

function sameEndpoint(a: { address: string; port: number }, b: { address: string; port: number }): boolean {
  return a.address === b.address && a.port === b.port;
}
