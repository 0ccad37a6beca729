/**
 * The datagrams of a nattrav datagram channel, and their keys. Everything is derived
 * from the attempt secret the broker sealed to both peers (security/attempt-secret.ts)
 * and the attempt ID, with HKDF-SHA256:
 *
 * - PROBE (each side, until it holds the other's answer): our role and a fresh nonce,
 *   under an HMAC-SHA256 tag (truncated to 16 bytes) with the handshake key.
 * - ACK (to whoever sent a valid PROBE): our role, the nonce of that PROBE and our own,
 *   under the same tag. An ACK echoing our nonce proves that its sender holds the secret
 *   and saw our PROBE of this channel: a replay from another attempt, or our own PROBE
 *   reflected back (wrong role), fails.
 * - DATA, KEEPALIVE, CLOSE, END: ChaCha20-Poly1305 under the key of the sender's direction
 *   (initiator to recipient, recipient to initiator), nonce = 4 zero bytes + a 64-bit
 *   counter that never repeats in a direction; the 11-byte header is the associated data.
 *   The receiver drops a counter it has seen (a {@link ReplayWindow}).
 *
 * Layout: 2 bytes magic "ND", 1 byte type, then per type:
 *   PROBE     role(1) nonce(16) zero padding(16) tag(16)   = 52 bytes (as long as an ACK: no amplification)
 *   ACK       role(1) echoed nonce(16) own nonce(16) tag(16) = 52 bytes
 *   DATA/...  counter(8) ciphertext tag(16)
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { ConnectionRole } from '../info.js';

/** The first two bytes of every channel datagram. */
const MAGIC = 0x4e44; // "ND"
/** Packet types. */
export const PacketType = { Probe: 1, Ack: 2, Data: 3, Keepalive: 4, Close: 5, End: 6 } as const;
/** One of {@link PacketType}. */
export type PacketTypeValue = (typeof PacketType)[keyof typeof PacketType];

/** Bytes of a handshake nonce. */
export const NONCE_LENGTH = 16;
/** Bytes of a handshake tag (HMAC-SHA256, truncated). */
const TAG_LENGTH = 16;
/** Bytes of magic + type + counter in front of an encrypted packet. */
const SEALED_HEADER = 11;
/** Bytes of the Poly1305 tag. */
const AEAD_TAG = 16;
/** Bytes a sealed packet adds to its payload. */
export const SEALED_OVERHEAD = SEALED_HEADER + AEAD_TAG;
/** The largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP). */
export const MAX_UDP_PAYLOAD = 65_507;
/** The largest application datagram a channel carries. */
export const MAX_DATAGRAM = MAX_UDP_PAYLOAD - SEALED_OVERHEAD;
/** Bytes of a PROBE and of an ACK. */
export const HANDSHAKE_LENGTH = 3 + 1 + NONCE_LENGTH * 2 + TAG_LENGTH;

const ROLE_BYTE: Record<ConnectionRole, number> = { initiator: 0, recipient: 1 };

/** The keys of one channel, derived from the attempt's secret and ID. */
export interface ChannelKeys {
  readonly handshake: Buffer;
  readonly send: Buffer;
  readonly receive: Buffer;
}

/** Derives the keys `role` uses (its sending key is the other side's receiving key). */
export function channelKeys(secret: Uint8Array, attemptId: Uint8Array, role: ConnectionRole): ChannelKeys {
  const derive = (label: string): Buffer => Buffer.from(hkdfSync('sha256', secret, attemptId, `nattrav datagram ${label}`, 32));
  const i2r = derive('initiator to recipient');
  const r2i = derive('recipient to initiator');
  return { handshake: derive('handshake'), send: role === 'initiator' ? i2r : r2i, receive: role === 'initiator' ? r2i : i2r };
}

/** A decoded handshake packet (its tag already checked). */
export interface Handshake {
  readonly type: typeof PacketType.Probe | typeof PacketType.Ack;
  readonly role: ConnectionRole;
  /** PROBE: the sender's nonce. ACK: the nonce of the PROBE it answers. */
  readonly nonce: Buffer;
  /** ACK only: the sender's own nonce. */
  readonly ownNonce?: Buffer;
}

/** The type of a channel packet, or undefined when `data` is not one. */
export function packetType(data: Uint8Array): PacketTypeValue | undefined {
  if (data.length < 3 || ((data[0] as number) << 8 | (data[1] as number)) !== MAGIC) return undefined;
  const type = data[2] as number;
  return type >= PacketType.Probe && type <= PacketType.End ? (type as PacketTypeValue) : undefined;
}

function handshakeTag(key: Buffer, body: Uint8Array): Buffer {
  return createHmac('sha256', key).update(body).digest().subarray(0, TAG_LENGTH);
}

/** Encodes a PROBE (`nonce`) or an ACK (`nonce` echoed, `ownNonce` ours) of `role`. */
export function encodeHandshake(key: Buffer, handshake: Handshake): Buffer {
  const out = Buffer.alloc(HANDSHAKE_LENGTH);
  out.writeUInt16BE(MAGIC, 0);
  out[2] = handshake.type;
  out[3] = ROLE_BYTE[handshake.role];
  handshake.nonce.copy(out, 4);
  if (handshake.ownNonce !== undefined) handshake.ownNonce.copy(out, 4 + NONCE_LENGTH);
  handshakeTag(key, out.subarray(0, HANDSHAKE_LENGTH - TAG_LENGTH)).copy(out, HANDSHAKE_LENGTH - TAG_LENGTH);
  return out;
}

/** Decodes a PROBE or ACK whose tag is valid under `key`; undefined for anything else. */
export function decodeHandshake(key: Buffer, data: Buffer): Handshake | undefined {
  const type = packetType(data);
  if ((type !== PacketType.Probe && type !== PacketType.Ack) || data.length !== HANDSHAKE_LENGTH) return undefined;
  const expected = handshakeTag(key, data.subarray(0, HANDSHAKE_LENGTH - TAG_LENGTH));
  if (!timingSafeEqual(expected, data.subarray(HANDSHAKE_LENGTH - TAG_LENGTH))) return undefined;
  const roleByte = data[3];
  if (roleByte !== 0 && roleByte !== 1) return undefined;
  const role: ConnectionRole = roleByte === 0 ? 'initiator' : 'recipient';
  const nonce = Buffer.from(data.subarray(4, 4 + NONCE_LENGTH));
  if (type === PacketType.Probe) return { type, role, nonce };
  return { type, role, nonce, ownNonce: Buffer.from(data.subarray(4 + NONCE_LENGTH, 4 + NONCE_LENGTH * 2)) };
}

function aeadNonce(counter: number): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(counter), 4);
  return nonce;
}

/** Encrypts `payload` as a DATA, KEEPALIVE, CLOSE or END packet with `counter` (never reused under `key`). */
export function seal(key: Buffer, type: PacketTypeValue, counter: number, payload: Uint8Array): Buffer {
  const header = Buffer.alloc(SEALED_HEADER);
  header.writeUInt16BE(MAGIC, 0);
  header[2] = type;
  header.writeBigUInt64BE(BigInt(counter), 3);
  const cipher = createCipheriv('chacha20-poly1305', key, aeadNonce(counter), { authTagLength: AEAD_TAG });
  cipher.setAAD(header, { plaintextLength: payload.length });
  const body = cipher.update(payload);
  cipher.final();
  return Buffer.concat([header, body, cipher.getAuthTag()]);
}

/** A sealed packet, opened. */
export interface Opened {
  readonly type: PacketTypeValue;
  readonly counter: number;
  readonly payload: Buffer;
}

/** Opens a sealed packet under `key`; undefined when it is not one or its tag fails (forged, corrupted, wrong direction). */
export function open(key: Buffer, data: Buffer): Opened | undefined {
  const type = packetType(data);
  if (type === undefined || type < PacketType.Data || data.length < SEALED_OVERHEAD) return undefined;
  const counterBig = data.readBigUInt64BE(3);
  if (counterBig > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  const counter = Number(counterBig);
  const body = data.subarray(SEALED_HEADER, data.length - AEAD_TAG);
  try {
    const decipher = createDecipheriv('chacha20-poly1305', key, aeadNonce(counter), { authTagLength: AEAD_TAG });
    decipher.setAAD(data.subarray(0, SEALED_HEADER), { plaintextLength: body.length });
    decipher.setAuthTag(data.subarray(data.length - AEAD_TAG));
    const payload = Buffer.concat([decipher.update(body), decipher.final()]);
    return { type, counter, payload };
  } catch {
    return undefined;
  }
}

/** Counters remembered behind the highest one seen (older ones are dropped as replays). */
export const REPLAY_WINDOW = 4096;

/**
 * Which counters of a direction arrived (RFC 6479 style sliding window): a counter seen
 * before, or older than the window, is refused. Reordering within the window is accepted.
 */
export class ReplayWindow {
  readonly #bits = new Uint8Array(REPLAY_WINDOW / 8);
  #highest = -1;

  /** True (and remembered) when `counter` is new; false for a replay or a counter too old. */
  accept(counter: number): boolean {
    if (counter > this.#highest) {
      const shift = counter - this.#highest;
      if (shift >= REPLAY_WINDOW) this.#bits.fill(0);
      else for (let c = this.#highest + 1; c < counter; c++) this.#clear(c);
      this.#highest = counter;
      this.#set(counter);
      return true;
    }
    if (this.#highest - counter >= REPLAY_WINDOW) return false;
    if (this.#test(counter)) return false;
    this.#set(counter);
    return true;
  }

  /**
   * True when every counter below `limit` that the window can still take has arrived:
   * nothing sent before `limit` is missing (older ones can no longer be accepted anyway).
   */
  seenAllBelow(limit: number): boolean {
    for (let c = Math.max(0, this.#highest - REPLAY_WINDOW + 1); c < limit; c++) {
      if (c > this.#highest || !this.#test(c)) return false;
    }
    return true;
  }

  #index(counter: number): [number, number] {
    const bit = counter % REPLAY_WINDOW;
    return [bit >> 3, 1 << (bit & 7)];
  }

  #set(counter: number): void {
    const [byte, mask] = this.#index(counter);
    this.#bits[byte] = (this.#bits[byte] as number) | mask;
  }

  #clear(counter: number): void {
    const [byte, mask] = this.#index(counter);
    this.#bits[byte] = (this.#bits[byte] as number) & ~mask;
  }

  #test(counter: number): boolean {
    const [byte, mask] = this.#index(counter);
    return ((this.#bits[byte] as number) & mask) !== 0;
  }
}
