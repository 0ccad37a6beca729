/**
 * Registration requests as a peer sends them over UDP (padded, FINGERPRINT), built for load:
 * open-mode registrations, first registrations with proof of key (challenge, then the signed
 * answer that opens a session) and refreshes under a session. See peer/register-proof.ts for
 * the protocol the real peer runs.
 */
import { createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { keyTypeOf, type KeyPairPem } from '../../src/security/keys.js';
import { newEphemeralKey, registrationPayload, sessionKey } from '../../src/security/proof.js';
import { decodeMessage, encodeMessage, type EncodeOptions } from '../../src/wire/codec.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri } from '../../src/wire/nattrav.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { isSuccess, type AnswerVerdict } from './udp-load.js';

/** Registrations of the benchmarks ask for an hour: none lapses during a run. */
export const BENCH_LIFETIME_MS = 3_600_000;
/** Bytes 8..20: the transaction ID, as a map key. */
const txid = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset + 8, 12).toString('latin1');

function udpBytes(request: StunMessage, options: EncodeOptions = {}): Buffer {
  return encodeMessage(addRequestPadding(request), { ...options, fingerprint: true });
}

function base(uri: string): StunMessage {
  const request = StunMessage.request(Method.Register);
  addUri(request, uri);
  addU32(request, AttrType.Lifetime, BENCH_LIFETIME_MS);
  return request;
}

/** A registration in open mode (no key): one request, one answer. */
export function openRegistration(uri: string): Buffer {
  return udpBytes(base(uri));
}

/** A session opened by a proof: what a refresh needs. */
export interface BenchSession {
  readonly uri: string;
  readonly id: Uint8Array;
  readonly key: Buffer;
  sequence: number;
}

/** A refresh of `session` (next SEQUENCE, integrity under the session key). */
export function refresh(session: BenchSession): Buffer {
  const request = base(session.uri);
  request.add(AttrType.Username, session.id);
  addU32(request, AttrType.Sequence, ++session.sequence);
  return udpBytes(request, { integritySha256Key: session.key });
}

/**
 * First registrations with proof of key, as flows for udpLoad: `first(uri)` sends the
 * Register with the public key; `answer()` turns the broker's challenge into the signed
 * proof and its success into a {@link BenchSession} (kept in `sessions[socket]`).
 */
export class ProofFlows {
  readonly #pending = new Map<string, { uri: string; nonce?: Uint8Array; ephemeral?: ReturnType<typeof newEphemeralKey> }>();
  /** Sessions opened, per socket index. */
  readonly sessions: BenchSession[][];
  /**
   * The private key parsed once: security/keys.ts `sign` parses the PEM on every call (a
   * peer signs once per registration), which would make the generator, not the broker, the
   * limit (about 900 signatures/s instead of about 10,000 on the machine of BENCHMARKS.md).
   */
  readonly #signer: KeyObject;
  /** The digest `sign` uses for this key type (ECDSA: SHA-256; Ed25519: none), as keys.ts does. */
  readonly #digest: string | null;

  constructor(readonly key: KeyPairPem, sockets: number) {
    this.sessions = Array.from({ length: sockets }, () => []);
    this.#signer = createPrivateKey(key.privateKeyPem);
    this.#digest = keyTypeOf(this.#signer) === 'ed25519' ? null : 'sha256';
  }

  /** The first request of a registration of `uri`. */
  first(uri: string): Buffer {
    const request = base(uri);
    request.add(AttrType.PublicKey, this.key.spki);
    const bytes = udpBytes(request);
    this.#pending.set(txid(bytes), { uri });
    return bytes;
  }

  /** What the broker's answer on socket `index` means: the proof to send, a session, or a failure. */
  answer(index: number, answerBytes: Buffer): AnswerVerdict {
    const key = txid(answerBytes);
    const flow = this.#pending.get(key);
    this.#pending.delete(key);
    if (flow === undefined) return { ok: false };
    const answer = decodeMessage(answerBytes);
    if (flow.nonce === undefined) {
      const nonce = answer.get(AttrType.Nonce);
      if (nonce === undefined) return { ok: false };
      const ephemeral = newEphemeralKey();
      const proof = base(flow.uri);
      proof.add(AttrType.PublicKey, this.key.spki);
      proof.add(AttrType.Nonce, nonce);
      proof.add(AttrType.EphemeralKey, ephemeral.publicKey);
      proof.add(AttrType.Signature, sign(this.#digest, registrationPayload({ nonce, uri: flow.uri, ephemeralKey: ephemeral.publicKey, lifetimeMs: BENCH_LIFETIME_MS, transport: 'udp' }), this.#signer));
      const bytes = udpBytes(proof);
      this.#pending.set(txid(bytes), { uri: flow.uri, nonce, ephemeral });
      return { ok: false, followUp: bytes };
    }
    const id = answer.get(AttrType.Username);
    const brokerEphemeral = answer.get(AttrType.EphemeralKey);
    const sessionKeyBytes = isSuccess(answerBytes) && id !== undefined && brokerEphemeral !== undefined && flow.ephemeral !== undefined ? sessionKey(flow.ephemeral, brokerEphemeral, flow.nonce) : undefined;
    if (sessionKeyBytes === undefined || id === undefined) return { ok: false };
    this.sessions[index]!.push({ uri: flow.uri, id, key: sessionKeyBytes, sequence: 0 });
    return { ok: true };
  }
}
