/**
 * Proof of key at registration (challenge/response), and the cheap session
 * that protects keepalives afterwards.
 *
 * 1. A peer sends Register(URI, PUBLIC-KEY). The broker answers 401 with a
 *    NONCE: a timestamp and an HMAC of (timestamp, source endpoint, URI, key)
 *    under a secret only the broker knows. It keeps no state for it.
 * 2. The peer sends Register(URI, PUBLIC-KEY, NONCE, EPHEMERAL-KEY, SIGNATURE),
 *    the signature covering {@link registrationPayload}. The broker checks the
 *    nonce (fresh, for this source, URI and key, never used before), then the
 *    signature, and only then records the nonce as used (bounded per source, so
 *    garbage signatures cost the record nothing); then that the key may hold the
 *    URI. A stale nonce gets 438 with a fresh nonce, and the peer proves once more.
 * 3. Both sides derive a session key from X25519(ephemeral keys) with HKDF.
 *    Refreshes carry USERNAME (session ID), SEQUENCE (strictly increasing) and
 *    MESSAGE-INTEGRITY-SHA256 under that key; so do the broker's answers and its
 *    connection requests, which a fake broker therefore cannot produce.
 * A captured registration cannot be replayed: its nonce is bound to its source
 * and time, and is accepted once.
 * 4. A refresh under the session from another source address than the session's
 *    (the peer's NAT mapping changed, or a peer spoofing a victim's address) moves
 *    nothing at first: the broker answers 438 with a routability token (a nonce bound
 *    to the session and that address), no larger than the refresh, and the
 *    registration moves when a refresh from that address echoes it.
 */
import { createHmac, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';

/** How long a nonce stays valid, in ms: one retransmitted round trip, with room for slow paths. */
export const NONCE_LIFETIME_MS = 30_000;
/** How far in the future a nonce's time may be, in ms (the broker's clock stepping back). */
const NONCE_CLOCK_SKEW_MS = 1_000;
/** Bytes of the timestamp in a nonce (ms since the epoch, big-endian). */
const NONCE_TIME_BYTES = 8;
/** Bytes of the MAC in a nonce: 128 bits are plenty against forgery within its lifetime. */
const NONCE_MAC_BYTES = 16;
/** The length of a nonce on the wire. */
export const NONCE_LENGTH = NONCE_TIME_BYTES + NONCE_MAC_BYTES;
/** Length of a session ID (USERNAME in refreshes). */
export const SESSION_ID_LENGTH = 16;
/** Length of a raw X25519 public key. */
export const X25519_KEY_LENGTH = 32;
/** Domain separation of the signed payloads, so a signature means one thing only. */
const REGISTER_CONTEXT = Buffer.from('nattrav register v1\0');
const BROKER_CONTEXT = Buffer.from('nattrav broker v1\0');
const SESSION_INFO = Buffer.from('nattrav session key v1');

/** What a nonce is bound to. */
export interface NonceBinding {
  readonly source: { readonly address: string; readonly port: number };
  readonly uri: string;
  readonly spki: Uint8Array;
}

/** Used nonces remembered at once, in total (about 100 bytes each: some 6.5 MB). */
export const MAX_USED_NONCES = 65_536;
/**
 * Used nonces remembered per source address. One address can use at most its UDP
 * Register budget in a nonce lifetime (limits.ts `udpRegister`: 200 + 20/s x 30 s = 800),
 * so this never bites an honest NAT address, and 64 addresses are needed to fill the table.
 */
export const MAX_USED_NONCES_PER_SOURCE = 1_024;

/** What {@link NonceBook.check} says of a nonce. */
export type NonceVerdict = 'ok' | 'stale' | 'replayed' | 'invalid';

/**
 * Mints and checks stateless nonces; remembers used ones so each is accepted once.
 * The record is written only by {@link NonceBook.use}, which the broker calls after
 * the signature verified: a proof with a garbage signature costs the table nothing.
 * It is bounded per source address and in total.
 */
export class NonceBook {
  readonly #secret: Buffer;
  readonly #now: () => number;
  /** Used nonce (hex) -> when it may be forgotten and which source used it; insertion order is expiry order. */
  readonly #used = new Map<string, { expires: number; source: string }>();
  readonly #perSource = new Map<string, number>();
  readonly #maxUsed: number;
  readonly #maxUsedPerSource: number;

  /** `maxUsed` @default MAX_USED_NONCES; `maxUsedPerSource` @default MAX_USED_NONCES_PER_SOURCE; `now` @default Date.now */
  constructor(options: { secret?: Uint8Array; now?: () => number; maxUsed?: number; maxUsedPerSource?: number } = {}) {
    this.#secret = Buffer.from(options.secret ?? randomBytes(32));
    this.#now = options.now ?? Date.now;
    this.#maxUsed = options.maxUsed ?? MAX_USED_NONCES;
    this.#maxUsedPerSource = options.maxUsedPerSource ?? MAX_USED_NONCES_PER_SOURCE;
  }

  /** Used nonces remembered (for tests and metrics). */
  get used(): number {
    return this.#used.size;
  }

  /** A fresh nonce for `binding`. */
  mint(binding: NonceBinding): Buffer {
    const time = Buffer.alloc(NONCE_TIME_BYTES);
    time.writeBigUInt64BE(BigInt(this.#now()));
    return Buffer.concat([time, this.#mac(time, binding)]);
  }

  /**
   * Checks a nonce without recording anything. 'stale': well formed and ours but
   * too old (the window is exact: at {@link NONCE_LIFETIME_MS} after minting it is
   * stale) or from the future; 'replayed': already used; 'invalid': not ours, or for
   * another source, URI or key.
   */
  check(nonce: Uint8Array, binding: NonceBinding): NonceVerdict {
    if (nonce.length !== NONCE_LENGTH) return 'invalid';
    const time = Buffer.from(nonce.subarray(0, NONCE_TIME_BYTES));
    const expected = this.#mac(time, binding);
    if (!timingSafeEqual(expected, Buffer.from(nonce.subarray(NONCE_TIME_BYTES)))) return 'invalid';
    const issued = Number(time.readBigUInt64BE());
    const now = this.#now();
    if (issued > now + NONCE_CLOCK_SKEW_MS || now - issued >= NONCE_LIFETIME_MS) return 'stale';
    this.#prune(now);
    return this.#used.has(Buffer.from(nonce).toString('hex')) ? 'replayed' : 'ok';
  }

  /**
   * Records a nonce that {@link NonceBook.check} accepted, once the proof it came
   * with verified. 'replayed': recorded already; 'full': its source, or the whole
   * table, holds as many as allowed (the proof is refused as stale: the peer asks again).
   */
  use(nonce: Uint8Array, binding: NonceBinding): 'ok' | 'replayed' | 'full' {
    const key = Buffer.from(nonce).toString('hex');
    this.#prune(this.#now());
    if (this.#used.has(key)) return 'replayed';
    const source = binding.source.address;
    const count = this.#perSource.get(source) ?? 0;
    if (count >= this.#maxUsedPerSource || this.#used.size >= this.#maxUsed) return 'full';
    // Kept a full lifetime from now (past its own expiry): insertion order stays expiry order.
    this.#used.set(key, { expires: this.#now() + NONCE_LIFETIME_MS, source });
    this.#perSource.set(source, count + 1);
    return 'ok';
  }

  /**
   * A return-routability token for session `sessionId` at `source`: sent to a new source
   * address of a refresh, which must echo it from there before the registration moves.
   * Stateless like a nonce, and domain-separated from registration nonces.
   */
  mintRoutability(sessionId: string, source: NonceBinding['source']): Buffer {
    return this.mint(routabilityBinding(sessionId, source));
  }

  /** Whether `token` is a fresh routability token (same exact window as a nonce) for `sessionId` at `source`. */
  checkRoutability(token: Uint8Array, sessionId: string, source: NonceBinding['source']): boolean {
    return this.check(token, routabilityBinding(sessionId, source)) === 'ok';
  }

  #mac(time: Buffer, binding: NonceBinding): Buffer {
    const port = Buffer.alloc(2);
    port.writeUInt16BE(binding.source.port);
    return createHmac('sha256', this.#secret)
      .update(time)
      .update(lengthPrefixed(Buffer.from(binding.source.address)))
      .update(port)
      .update(lengthPrefixed(Buffer.from(binding.uri)))
      .update(lengthPrefixed(Buffer.from(binding.spki)))
      .digest()
      .subarray(0, NONCE_MAC_BYTES);
  }

  #prune(now: number): void {
    for (const [key, { expires, source }] of this.#used) {
      if (expires > now) break; // insertion order is expiry order
      this.#used.delete(key);
      const left = (this.#perSource.get(source) ?? 1) - 1;
      if (left <= 0) this.#perSource.delete(source);
      else this.#perSource.set(source, left);
    }
  }
}

/** The binding of a routability token: no URI starts with the NUL-separated context, so it is never a registration nonce. */
function routabilityBinding(sessionId: string, source: NonceBinding['source']): NonceBinding {
  return { source, uri: `nattrav routability v1\0${sessionId}`, spki: new Uint8Array(0) };
}

/** What the peer signs in step 2. */
export function registrationPayload(fields: { nonce: Uint8Array; uri: string; ephemeralKey: Uint8Array; lifetimeMs: number; transport: 'udp' | 'tcp' }): Buffer {
  const lifetime = Buffer.alloc(4);
  lifetime.writeUInt32BE(fields.lifetimeMs >>> 0);
  return Buffer.concat([
    REGISTER_CONTEXT,
    lengthPrefixed(Buffer.from(fields.nonce)),
    lengthPrefixed(Buffer.from(fields.uri)),
    lengthPrefixed(Buffer.from(fields.ephemeralKey)),
    lifetime,
    Buffer.from(fields.transport),
  ]);
}

/** What a broker with an identity signs in its answer to step 2. */
export function brokerPayload(fields: { nonce: Uint8Array; sessionId: Uint8Array; brokerEphemeralKey: Uint8Array; peerEphemeralKey: Uint8Array }): Buffer {
  return Buffer.concat([
    BROKER_CONTEXT,
    lengthPrefixed(Buffer.from(fields.nonce)),
    lengthPrefixed(Buffer.from(fields.sessionId)),
    lengthPrefixed(Buffer.from(fields.brokerEphemeralKey)),
    lengthPrefixed(Buffer.from(fields.peerEphemeralKey)),
  ]);
}

/** An ephemeral X25519 key pair for one registration session. */
export interface EphemeralKey {
  /** Raw 32-byte public key (the EPHEMERAL-KEY attribute). */
  readonly publicKey: Buffer;
  readonly privateKey: KeyObject;
}

/** A fresh X25519 key pair. */
export function newEphemeralKey(): EphemeralKey {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  // JWK, not DER: OpenSSL 3 encodes DER through its slow encoder framework (~200 us a key).
  const { x } = publicKey.export({ format: 'jwk' });
  return { publicKey: Buffer.from(x ?? '', 'base64url'), privateKey };
}

/**
 * The session key: HKDF-SHA256 over X25519(ours, theirs), salted with the
 * nonce. Returns undefined for a malformed peer key (never throws).
 */
export function sessionKey(own: EphemeralKey, peerPublicKey: Uint8Array, nonce: Uint8Array): Buffer | undefined {
  if (peerPublicKey.length !== X25519_KEY_LENGTH) return undefined;
  try {
    // As a JWK of the raw key: OpenSSL 3 imports it ten times faster than the same key as DER SPKI.
    const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(peerPublicKey).toString('base64url') }, format: 'jwk' });
    const shared = diffieHellman({ privateKey: own.privateKey, publicKey });
    return Buffer.from(hkdfSync('sha256', shared, Buffer.from(nonce), SESSION_INFO, 32));
  } catch {
    return undefined;
  }
}

function lengthPrefixed(bytes: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length);
  return Buffer.concat([length, bytes]);
}
