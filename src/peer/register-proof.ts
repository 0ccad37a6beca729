/**
 * The peer's side of registration with proof of key (see security/proof.ts for
 * the protocol): a refresh under the session key when there is a session; else
 * the challenge, the signed answer (once more with the fresh nonce of a 438
 * Stale Nonce answer), and the new session. The broker's answers
 * must carry integrity under the session key (and, when the peer trusts a
 * broker CA, the broker's signature and certificate), or they are rejected:
 * a fake broker cannot redirect the peer. A refresh from a new address is
 * answered 438 with a routability nonce, which the peer echoes once from there
 * (security/proof.ts step 4). Transport-agnostic: the caller supplies one
 * request/response transaction over UDP or TCP. A withdrawal is a
 * refresh asking for LIFETIME 0 (see {@link withdrawalRequest}).
 */
import { X509Certificate } from 'node:crypto';
import { ErrorCode, NattravError } from '../errors.js';
import { brokerCertificateProblem, issuedCertificate } from '../security/issued.js';
import { sign, verify, type KeyPairPem } from '../security/keys.js';
import { brokerPayload, newEphemeralKey, registrationPayload, sessionKey, type EphemeralKey } from '../security/proof.js';
import { verifyMessageIntegritySha256, type EncodeOptions } from '../wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode, WITHDRAWAL_LIFETIME_MS } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addU32, addUri, getErrorCode } from '../wire/nattrav.js';
import { addPreviousSession } from '../wire/instance.js';
import { previousSessionMac } from '../security/previous-session.js';

/** One request/response over the registration's transport. */
export type Transact = (request: StunMessage, options?: EncodeOptions) => Promise<StunMessage>;

/** The key material a registration proves. */
export interface RegistrationKeys {
  readonly key: KeyPairPem;
  /** A CA-issued certificate naming the URI (DER), for brokers that require one. */
  readonly certificateDer?: Uint8Array;
  /** The CA that must have issued the broker's certificate; set = authenticate the broker. */
  readonly brokerCa?: X509Certificate;
  /** The broker's host as we dialed it, which its certificate may name instead of a nattrav-broker:// URI. */
  readonly brokerHost?: string;
}

/** A registration session (after a successful proof). */
export interface RegistrationSession {
  readonly id: Buffer;
  readonly key: Buffer;
  sequence: number;
}

/** A broker that cannot prove itself: connection requests and answers from it are not trusted. */
function brokerAuthError(reason: string): NattravError {
  return new NattravError(ErrorCode.BrokerAuth, `broker authentication failed: ${reason}`);
}

/**
 * Registers (or refreshes). `base` builds a fresh Register request with URI,
 * LIFETIME and private endpoints. Resolves with the broker's success response
 * and the session to use next time.
 */
export async function registerWithProof(
  transact: Transact,
  base: () => StunMessage,
  keys: RegistrationKeys,
  uri: string,
  lifetimeMs: number,
  transport: 'udp' | 'tcp',
  session: RegistrationSession | undefined,
  previous: RegistrationSession | undefined = session,
): Promise<{ response: StunMessage; session: RegistrationSession | undefined }> {
  if (session !== undefined) {
    const response = await refreshUnderSession(transact, base, session, uri);
    if (response !== undefined) return { response, session };
    // The broker forgot the session (restart, expiry): prove the key again.
  }
  const first = withKey(base(), keys);
  const challenge = await transact(first);
  if (challenge.cls === MessageClass.SuccessResponse) {
    // An open-mode broker (no proof asked).
    if (keys.brokerCa !== undefined) throw brokerAuthError('it accepted us without a challenge and did not prove its identity');
    return { response: challenge, session: undefined };
  }
  let nonce = challenge.get(AttrType.Nonce);
  if (nonce === undefined) throw refused(uri, challenge);
  let ephemeral = newEphemeralKey();
  const proof = (): StunMessage => withPrevious(signedProof(base, keys, uri, lifetimeMs, transport, nonce as Uint8Array, ephemeral), previous, nonce as Uint8Array, uri);
  let response = await transact(proof());
  // 438: the nonce went stale on its way (a slow path, or a broker under a flood of proofs).
  // Its answer carries a fresh one: prove once more with it; a second refusal is final.
  const fresh = isStaleNonce(response) ? response.get(AttrType.Nonce) : undefined;
  if (fresh !== undefined) {
    nonce = fresh;
    ephemeral = newEphemeralKey();
    response = await transact(proof());
  }
  if (response.cls === MessageClass.ErrorResponse) throw refused(uri, response);
  const id = response.get(AttrType.Username);
  const brokerEphemeral = response.get(AttrType.EphemeralKey);
  const key = brokerEphemeral === undefined ? undefined : sessionKey(ephemeral, brokerEphemeral, nonce);
  if (id === undefined || brokerEphemeral === undefined || key === undefined) throw brokerAuthError('its answer carries no session');
  if (!verifyMessageIntegritySha256(response, key)) throw brokerAuthError('its answer lacks integrity under the agreed key');
  if (keys.brokerCa !== undefined) {
    const problem = brokerIdentityProblem(response, keys.brokerCa, keys.brokerHost ?? '', {
      nonce,
      sessionId: id,
      brokerEphemeralKey: brokerEphemeral,
      peerEphemeralKey: ephemeral.publicKey,
    });
    if (problem !== undefined) throw brokerAuthError(problem);
  }
  return { response, session: { id: Buffer.from(id), key, sequence: 0 } };
}

/**
 * A refresh under `session`: `base()` with USERNAME, the next SEQUENCE and integrity under the
 * session key. Resolves with the broker's success; undefined when the broker answers 401 (it
 * forgot the session: prove the key again); throws for another refusal or an answer without
 * integrity under the key. A 438 under the key with a NONCE (the broker saw us at a new address)
 * is echoed once from there.
 */
export async function refreshUnderSession(transact: Transact, base: () => StunMessage, session: RegistrationSession, uri: string): Promise<StunMessage | undefined> {
  const refresh = base();
  let response = await transact(refresh, underSession(refresh, session));
  const echo = isStaleNonce(response) && verifyMessageIntegritySha256(response, session.key) ? response.get(AttrType.Nonce) : undefined;
  if (echo !== undefined) {
    const again = base();
    again.add(AttrType.Nonce, echo);
    response = await transact(again, underSession(again, session));
  }
  if (isUnauthorized(response)) return undefined;
  if (!verifyMessageIntegritySha256(response, session.key)) throw brokerAuthError('its answer to our refresh lacks integrity under the session key');
  if (response.cls === MessageClass.ErrorResponse) throw refused(uri, response);
  return response;
}

/** Step 2 of the proof (security/proof.ts): the Register signed over `nonce` and our ephemeral key. */
function signedProof(
  base: () => StunMessage,
  keys: RegistrationKeys,
  uri: string,
  lifetimeMs: number,
  transport: 'udp' | 'tcp',
  nonce: Uint8Array,
  ephemeral: EphemeralKey,
): StunMessage {
  const proof = withKey(base(), keys);
  proof.add(AttrType.Nonce, nonce);
  proof.add(AttrType.EphemeralKey, ephemeral.publicKey);
  proof.add(AttrType.Signature, sign(keys.key.privateKeyPem, registrationPayload({ nonce, uri, ephemeralKey: ephemeral.publicKey, lifetimeMs, transport })));
  return proof;
}

/**
 * The withdrawal of `uri`'s registration: a Register with LIFETIME 0, under the session
 * (USERNAME, the next SEQUENCE, integrity under the session key) when there is one.
 * Without a session only an open-mode broker accepts it, from the registered endpoint.
 * Send it with the returned encode options.
 */
export function withdrawalRequest(uri: string, session: RegistrationSession | undefined): { request: StunMessage; options: EncodeOptions } {
  const request = StunMessage.request(Method.Register);
  addUri(request, uri);
  addU32(request, AttrType.Lifetime, WITHDRAWAL_LIFETIME_MS);
  return { request, options: session === undefined ? {} : underSession(request, session) };
}

/** Adds the session's USERNAME and next SEQUENCE to `request`; returns the options that add its integrity. */
function underSession(request: StunMessage, session: RegistrationSession): EncodeOptions {
  request.add(AttrType.Username, session.id);
  addU32(request, AttrType.Sequence, ++session.sequence);
  return { integritySha256Key: session.key };
}

/** Adds PREVIOUS-SESSION when we held a session before (the broker then knows it is us, not another process of our key). */
function withPrevious(proof: StunMessage, previous: RegistrationSession | undefined, nonce: Uint8Array, uri: string): StunMessage {
  if (previous !== undefined) addPreviousSession(proof, { sessionId: previous.id, mac: previousSessionMac(previous.key, nonce, uri) });
  return proof;
}

function withKey(request: StunMessage, keys: RegistrationKeys): StunMessage {
  request.add(AttrType.PublicKey, keys.key.spki);
  if (keys.certificateDer !== undefined) request.add(AttrType.Certificate, keys.certificateDer);
  return request;
}

function isStaleNonce(response: StunMessage): boolean {
  return response.cls === MessageClass.ErrorResponse && getErrorCode(response)?.code === StunErrorCode.StaleNonce;
}

function isUnauthorized(response: StunMessage): boolean {
  return response.cls === MessageClass.ErrorResponse && getErrorCode(response)?.code === StunErrorCode.Unauthorized;
}

function refused(uri: string, response: StunMessage): NattravError {
  const error = getErrorCode(response);
  const code = error?.code === StunErrorCode.Forbidden ? ErrorCode.Forbidden : error?.code === StunErrorCode.HeldByInstance ? ErrorCode.UriHeldByInstance : ErrorCode.BrokerError;
  return new NattravError(code, `broker refused registration of ${uri}: ${error?.code ?? '?'} ${error?.reason ?? ''}`.trim());
}

/** Why the broker's signed answer does not prove an identity issued by `ca`, or undefined. */
function brokerIdentityProblem(response: StunMessage, ca: X509Certificate, host: string, payload: Parameters<typeof brokerPayload>[0]): string | undefined {
  const der = response.get(AttrType.Certificate);
  const signature = response.get(AttrType.Signature);
  if (der === undefined || signature === undefined) return 'it presented no certificate';
  const checked = issuedCertificate(der, ca, 'the trusted broker CA');
  if ('problem' in checked) return `its ${checked.problem}`;
  const { cert } = checked;
  const notBroker = brokerCertificateProblem(cert, host);
  if (notBroker !== undefined) return `its ${notBroker}`;
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  if (!verify(spki, brokerPayload(payload), signature)) return 'its signature does not verify';
  return undefined;
}
