/**
 * Mutually authenticated TLS 1.3 over a nattrav connection (direct or relayed).
 *
 * The initiator is the TLS client, the recipient the TLS server (requestCert).
 * Node accepts any certificate in the handshake (`rejectUnauthorized: false`);
 * each side then checks the other's with {@link verifyPeerCertificate}, whose
 * rules handle both CA-issued certificates and self-certifying URIs.
 *
 * In TLS 1.3 the client finishes its handshake before the server has looked at
 * the client's certificate, so a handshake that "succeeded" says nothing about
 * whether the other side accepted us. Hence one more step, the confirmation:
 *
 * 1. Both sides complete the TLS handshake.
 * 2. Each verifies the other's certificate. On failure it destroys the
 *    connection and rejects with what was wrong.
 * 3. On success it sends one confirmation byte ({@link CONFIRM_BYTE}) and waits
 *    for the other's. The connection is handed over only when that arrives; if
 *    the connection closes instead, the other side rejected us, and this side
 *    rejects too. So both ends fail, and neither hangs.
 * 4. A recipient that verified the initiator but does not admit it (`admit`, e.g. an
 *    allow-list) sends {@link REJECT_BYTE} and its reason instead of the confirmation,
 *    then ends the TLS stream. The initiator rejects with ERR_NOT_ALLOWED and that
 *    reason; the recipient with ERR_NOT_ALLOWED naming the initiator.
 *
 * The confirmation bytes are consumed here; application data starts after them.
 *
 * The certified flight (the initiator's certificate came in its Hello before TLS,
 * peer/hello.ts) drops the wait in step 3 for the initiator, one peer round trip:
 * - The recipient verifies that certificate and runs `admit` before it starts TLS,
 *   and its TLS answer says the outcome by ALPN: {@link ADMITTED_ALPN} admits,
 *   {@link REFUSED_ALPN} refuses (the client offers both, and {@link NATTRAV_ALPN}:
 *   a recipient that selects that one did not decide early, and is waited for).
 * - The initiator, once its handshake is done and the recipient's certificate
 *   verified, sends its confirmation byte and hands the connection over at once.
 *   If the recipient refused, it reads why: {@link REJECT_BYTE} (not admitted,
 *   ERR_NOT_ALLOWED) or {@link CERTIFICATE_REFUSED_BYTE} (ERR_TLS), then the reason.
 * - The recipient checks that the certificate of the handshake is the Hello's, sends
 *   no confirmation, and waits for the initiator's (it comes with the client's
 *   Finished, in the same flight).
 */
import type { Socket } from 'node:net';
import { TLSSocket, connect as tlsConnect, createSecureContext, type SecureContext } from 'node:tls';
import { abortError, raceAbort, startPhase } from '../common/signal.js';
import { beforeTls } from '../common/websocket-stream.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import type { Identity } from './identity.js';
import { verifyPeerCertificate, type VerifiedPeer } from './verify.js';

/** Options of {@link secureConnection} that say who we are and whom we trust. */
export interface PeerTlsOptions {
  identity: Identity;
  /** extra trust anchors (PEM) besides identity.ca */
  ca?: string[];
}

/** The rest of {@link secureConnection}'s options. */
export interface SecureConnectionOptions extends PeerTlsOptions {
  /** 'initiator' = TLS client, 'recipient' = TLS server. */
  role: 'initiator' | 'recipient';
  /** The URI the initiator connected to; required for the initiator, ignored for the recipient. */
  expectedPeerUri?: string;
  /** The key the peer must hold when neither its URI nor a CA vouches for it (see verify.ts rule 6). */
  expectedKeyFingerprint?: string;
  /** `expectedKeyFingerprint` is the user's pin: it must match whoever vouches (verify.ts). */
  keyPinned?: boolean;
  signal?: AbortSignal;
  /** Limit on handshake, verification and confirmation together. @default {@link TLS_HANDSHAKE_TIMEOUT_MS} */
  timeoutMs?: number;
  /** Recipient only: decides on the verified initiator; undefined admits it, a reason refuses it (step 4). @default admit everyone verified */
  admit?: (peer: VerifiedPeer) => string | undefined;
  /** Initiator only: our Hello carried our certificate (the certified flight): no wait for the recipient's confirmation. */
  certifiedFlight?: boolean;
  /** Recipient only: the initiator's certificate (DER) from its Hello (the certified flight): decided on before TLS. */
  helloCertificate?: Uint8Array;
}

/** A connection that passed {@link secureConnection}. */
export interface SecureConnection {
  socket: TLSSocket;
  /** The other side's URI, from its verified certificate. */
  peerUri: string;
  /** The other side's certificate (PEM). */
  peerCertificatePem: string;
  /** The fingerprint of the other side's key (base32 SHA-256 of its SPKI). */
  peerKeyFingerprint: string;
  /** How the other side was authenticated. */
  vouchedBy: 'self-certifying' | 'ca' | 'key';
}

/** The time for handshake, certificate checks and confirmation: a few round trips even on a slow relayed path. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Only TLS 1.3: both ends are nattrav, and 1.3 encrypts the certificates (the initiator's in its Hello is sealed under the attempt secret, peer/hello.ts). */
const TLS_VERSION = 'TLSv1.3';
/** The ALPN protocol name, so a nattrav TLS connection cannot be mistaken for another protocol's. */
export const NATTRAV_ALPN = 'nattrav/1';
/** Sent by each side once it has accepted the other's certificate (ASCII ACK). */
export const CONFIRM_BYTE = 0x06;
/** Sent by a recipient instead of {@link CONFIRM_BYTE} when it refuses the verified initiator (ASCII NAK); its reason follows. */
export const REJECT_BYTE = 0x15;
/** Sent by a recipient in the certified flight instead of nothing when the initiator's certificate failed its checks (ASCII CAN); the reason follows. */
export const CERTIFICATE_REFUSED_BYTE = 0x18;
/** The ALPN protocol a recipient selects in the certified flight when it admits the initiator: no confirmation follows from it. */
export const ADMITTED_ALPN = 'nattrav/1-admitted';
/** The ALPN protocol a recipient selects in the certified flight when it refuses the initiator; the reason follows the handshake. */
export const REFUSED_ALPN = 'nattrav/1-refused';
/** The longest reason after {@link REJECT_BYTE}, in bytes; more is cut off. */
export const REJECT_REASON_MAX_BYTES = 512;
/** How long a refusing recipient waits for the initiator to close after the reason, in ms (then it closes): one slow round trip. */
const REJECT_LINGER_MS = 2_000;

/** The error message when the peer closed during the handshake or before its confirmation. */
export const PEER_CLOSED = 'the peer rejected our certificate or closed during the TLS handshake';

/**
 * Runs TLS 1.3 with mutual authentication over an already-connected socket.
 * Resolves with the TLS socket, positioned at the first byte of application
 * data, and the peer's verified URI. Rejects with NattravError: ERR_TLS (the
 * message names what was wrong), ERR_TIMEOUT, ERR_ABORTED or ERR_INVALID_ARGUMENT;
 * on any failure both the TLS socket and `socket` are destroyed.
 */
export async function secureConnection(socket: Socket, options: SecureConnectionOptions): Promise<SecureConnection> {
  const { role, identity } = options;
  if (role !== 'initiator' && role !== 'recipient') {
    throw new NattravError(ErrorCode.InvalidArgument, `role ${String(role)}: pass 'initiator' or 'recipient'`);
  }
  if (role === 'initiator' && (options.expectedPeerUri === undefined || options.expectedPeerUri === '')) {
    throw new NattravError(ErrorCode.InvalidArgument, 'the initiator must pass expectedPeerUri, the URI it connected to');
  }
  const timeoutMs = options.timeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS;
  const phase = startPhase(options.signal, timeoutMs, `the TLS handshake as ${role}`);
  let tlsSocket: TLSSocket | undefined;
  const destroy = (): void => {
    tlsSocket?.destroy();
    socket.destroy();
  };
  const verify = (certificate: Uint8Array): Promise<VerifiedPeer> =>
    raceAbort(
      verifyPeerCertificate(certificate, {
        trust: [...identity.ca, ...(options.ca ?? [])],
        ...(role === 'initiator' ? { expectedUri: options.expectedPeerUri, peerRole: 'server' as const } : { peerRole: 'client' as const }),
        ...(options.expectedKeyFingerprint === undefined ? {} : { expectedKeyFingerprint: options.expectedKeyFingerprint, keyPinned: options.keyPinned === true }),
      }),
      phase.signal,
      destroy,
    );
  try {
    if (phase.signal.aborted) throw abortError(phase.signal);
    const helloCertificate = role === 'recipient' ? options.helloCertificate : undefined;
    // The certified flight: the recipient decides before its TLS answer, which carries the outcome (ALPN).
    const early = helloCertificate === undefined ? undefined : await decideEarly(helloCertificate, verify, options.admit);
    const certifiedFlight = role === 'initiator' && options.certifiedFlight === true;
    tlsSocket = role === 'initiator' ? startClient(socket, identity, certifiedFlight) : startServer(socket, identity, early === undefined ? NATTRAV_ALPN : early.refusal === undefined ? ADMITTED_ALPN : REFUSED_ALPN);
    const secured = tlsSocket;
    // Until the caller has the socket, no 'error' may go unhandled (the steps below report errors
    // themselves). On failure the listener stays: the destroyed socket is nobody else's.
    const swallow = (): void => undefined;
    secured.on('error', swallow);
    await raceAbort(handshake(secured, role), phase.signal, destroy);
    if (secured.destroyed) throw new NattravError(ErrorCode.Tls, PEER_CLOSED);
    const peerCert = secured.getPeerX509Certificate();
    if (peerCert === undefined) throw new NattravError(ErrorCode.Tls, `the ${role === 'initiator' ? 'recipient' : 'initiator'} sent no certificate`);
    if (helloCertificate !== undefined && !peerCert.raw.equals(helloCertificate)) {
      throw new NattravError(ErrorCode.Tls, 'the initiator\'s TLS certificate is not the one its Hello carried');
    }
    if (early?.refusal !== undefined) {
      await raceAbort(refuse(secured, early.refusal.reason, early.refusal.byte), phase.signal, destroy);
      throw early.refusal.error;
    }
    const verified = early?.verified ?? (await verify(peerCert.raw));
    const refusal = role === 'recipient' && early === undefined ? options.admit?.(verified) : undefined;
    if (refusal !== undefined) {
      await raceAbort(refuse(secured, refusal, REJECT_BYTE), phase.signal, destroy);
      throw new NattravError(ErrorCode.NotAllowed, `refused ${verified.uri}: ${refusal}`);
    }
    if (certifiedFlight && secured.alpnProtocol === REFUSED_ALPN) {
      // The recipient is who we asked for, and it refused us: its reason follows.
      await raceAbort(confirmation(secured), phase.signal, destroy);
      throw new NattravError(ErrorCode.Protocol, 'the recipient announced a refusal and then confirmed the connection');
    }
    if (role === 'initiator' || early === undefined) secured.write(Buffer.of(CONFIRM_BYTE));
    // Only a recipient that admitted us before its TLS answer sends no confirmation.
    if (!(certifiedFlight && secured.alpnProtocol === ADMITTED_ALPN)) await raceAbort(confirmation(secured), phase.signal, destroy);
    secured.off('error', swallow);
    return { socket: secured, peerUri: verified.uri, peerCertificatePem: verified.certificatePem, peerKeyFingerprint: verified.keyFingerprint, vouchedBy: verified.vouchedBy };
  } catch (err) {
    destroy();
    if (isNattravError(err)) throw err;
    throw new NattravError(ErrorCode.Tls, `TLS failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    phase.dispose();
  }
}

/** What a recipient decided on the certificate of a certified flight before TLS: the verified initiator, or the refusal to send after the handshake. */
interface EarlyDecision {
  verified?: VerifiedPeer;
  refusal?: { byte: number; reason: string; error: NattravError };
}

/** The certified flight, recipient side: verifies the Hello's certificate and runs `admit`, before TLS. */
async function decideEarly(certificate: Uint8Array, verify: (certificate: Uint8Array) => Promise<VerifiedPeer>, admit: SecureConnectionOptions['admit']): Promise<EarlyDecision> {
  let verified: VerifiedPeer;
  try {
    verified = await verify(certificate);
  } catch (err) {
    if (!isNattravError(err) || err.code === ErrorCode.Aborted || err.code === ErrorCode.Timeout) throw err;
    return { refusal: { byte: CERTIFICATE_REFUSED_BYTE, reason: err.message, error: err } };
  }
  const reason = admit?.(verified);
  if (reason === undefined) return { verified };
  return { verified, refusal: { byte: REJECT_BYTE, reason, error: new NattravError(ErrorCode.NotAllowed, `refused ${verified.uri}: ${reason}`) } };
}

/** One secure context per identity: parsing the key and certificate costs a few ms per connection on the critical path. */
const contexts = new WeakMap<Identity, SecureContext>();

function contextOf(identity: Identity): SecureContext {
  let context = contexts.get(identity);
  if (context === undefined) {
    context = createSecureContext({ key: identity.keyPem, cert: identity.certPem, minVersion: TLS_VERSION, maxVersion: TLS_VERSION });
    contexts.set(identity, context);
  }
  return context;
}

function startClient(socket: Socket, identity: Identity, certifiedFlight: boolean): TLSSocket {
  return tlsConnect({
    socket: beforeTls(socket),
    secureContext: contextOf(identity),
    minVersion: TLS_VERSION,
    maxVersion: TLS_VERSION,
    // In the certified flight the recipient's choice says whether it admits us.
    ALPNProtocols: certifiedFlight ? [ADMITTED_ALPN, REFUSED_ALPN, NATTRAV_ALPN] : [NATTRAV_ALPN],
    // verifyPeerCertificate does all checks, including the URI; Node's would reject self-signed certificates.
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
  });
}

function startServer(socket: Socket, identity: Identity, alpn: string): TLSSocket {
  return new TLSSocket(beforeTls(socket), {
    isServer: true,
    secureContext: contextOf(identity),
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: [alpn],
  });
}

/** Step 1: resolves when the TLS handshake completes; rejects if it fails or the connection closes. */
function handshake(socket: TLSSocket, role: 'initiator' | 'recipient'): Promise<void> {
  const doneEvent = role === 'initiator' ? 'secureConnect' : 'secure';
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      socket.off(doneEvent, onDone);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.off('end', onClose);
    };
    const onDone = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Tls, `TLS handshake failed: ${err.message}`, { cause: err }));
    };
    const onClose = (): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Tls, PEER_CLOSED));
    };
    socket.on(doneEvent, onDone);
    socket.on('error', onError);
    socket.on('close', onClose);
    // Sockets allow half-open: the peer's FIN before the handshake is done ends it, no close follows.
    socket.on('end', onClose);
  });
}

/** Step 3: reads exactly the peer's confirmation byte, leaving any later data buffered. */
function confirmation(socket: TLSSocket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      socket.off('readable', onReadable);
      socket.off('end', onClosed);
      socket.off('close', onClosed);
      socket.off('error', onError);
    };
    const onReadable = (): void => {
      const chunk = socket.read(1) as Buffer | null;
      if (chunk === null) return;
      cleanup();
      if (chunk[0] === CONFIRM_BYTE) resolve();
      else if (chunk[0] === REJECT_BYTE) void refusalReason(socket).then((reason) => reject(new NattravError(ErrorCode.NotAllowed, `the recipient refused the connection: ${reason}`)));
      else if (chunk[0] === CERTIFICATE_REFUSED_BYTE) void refusalReason(socket).then((reason) => reject(new NattravError(ErrorCode.Tls, `the recipient refused our certificate: ${reason}`)));
      else reject(new NattravError(ErrorCode.Tls, `the peer sent 0x${chunk.toString('hex')} instead of its TLS confirmation; is it a nattrav peer?`));
    };
    const onClosed = (): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Tls, PEER_CLOSED));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new NattravError(ErrorCode.Tls, `${PEER_CLOSED} (${err.message})`, { cause: err }));
    };
    socket.on('readable', onReadable);
    socket.on('end', onClosed);
    socket.on('close', onClosed);
    socket.on('error', onError);
    // The byte may be buffered already, or the connection gone (or half-closed: sockets
    // allow half-open) while we verified: look now.
    if (socket.destroyed) onClosed();
    else {
      onReadable();
      if (socket.readableEnded) onClosed();
    }
  });
}

/** Step 4, the recipient's side: the refusal (`marker`, then its reason) instead of the confirmation, then the end of the stream; resolves once the initiator closed (or after {@link REJECT_LINGER_MS}). */
function refuse(socket: TLSSocket, reason: string, marker: number): Promise<void> {
  const text = Buffer.from(reason, 'utf8').subarray(0, REJECT_REASON_MAX_BYTES);
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(linger);
      socket.off('close', done);
      socket.off('end', done);
      resolve();
    };
    const linger = setTimeout(done, REJECT_LINGER_MS);
    socket.on('close', done);
    socket.on('end', done);
    // Whatever the initiator sent (its confirmation) is read and dropped: unread bytes would turn our close into a reset that could destroy the reason.
    socket.resume();
    socket.end(Buffer.concat([Buffer.of(marker), text]));
  });
}

/** Step 4, the initiator's side: the reason after {@link REJECT_BYTE}, up to the end of the stream, as printable text. */
function refusalReason(socket: TLSSocket): Promise<string> {
  return new Promise<string>((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      socket.off('data', onData);
      socket.off('end', done);
      socket.off('close', done);
      socket.off('error', done);
      const text = Buffer.concat(parts).subarray(0, REJECT_REASON_MAX_BYTES).toString('utf8');
      // Only printable text reaches our logs and terminals.
      resolve(text.replace(/[^\x20-\x7e]/g, '?') || 'no reason given');
    };
    const onData = (chunk: Buffer): void => {
      parts.push(chunk);
      size += chunk.length;
      if (size >= REJECT_REASON_MAX_BYTES) done();
    };
    socket.on('data', onData);
    socket.on('end', done);
    socket.on('close', done);
    socket.on('error', done);
    socket.resume();
    if (socket.readableEnded || socket.destroyed) done();
  });
}
