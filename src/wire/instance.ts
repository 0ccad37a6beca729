/**
 * nattrav's instance attributes (see constants.ts): INSTANCE-ID (which running process of a key
 * sends), TAKEOVER (a proof of key that takes the URI from a live instance) and INSTANCE-CHECK
 * (the broker asks the holder of a URI whether it is alive, or tells it that it was taken over),
 * and PREVIOUS-SESSION (the session the same instance held before).
 * Each encoder sits beside its decoder; decoders throw StunMalformed naming the attribute.
 */
import { AttrType, INSTANCE_ID_LENGTH, InstanceCheckCode } from './constants.js';
import { checkBytes, invalidArgument, malformed } from './fail.js';
import type { StunMessage } from './message.js';
import { decodeU32, encodeU32 } from './uint.js';

/** A key of {@link InstanceCheckCode}: what an INSTANCE-CHECK asks. */
export type InstanceCheckKind = keyof typeof InstanceCheckCode;

/** The MAC at the end of PREVIOUS-SESSION: HMAC-SHA256. */
export const PREVIOUS_SESSION_MAC_BYTES = 32;

/** TAKEOVER's only value. */
const TAKEOVER_ON = 1;

/** Adds INSTANCE-ID; throws InvalidArgument unless `id` is {@link INSTANCE_ID_LENGTH} bytes. */
export function addInstanceId(msg: StunMessage, id: Uint8Array): StunMessage {
  checkBytes(id, 'instance ID');
  if (id.length !== INSTANCE_ID_LENGTH) throw invalidArgument(`instance ID must be ${INSTANCE_ID_LENGTH} bytes, got ${id.length}`);
  return msg.add(AttrType.InstanceId, Uint8Array.from(id));
}

/** INSTANCE-ID: exactly {@link INSTANCE_ID_LENGTH} bytes (returned as a copy). */
export function getInstanceId(msg: StunMessage): Uint8Array | undefined {
  const v = msg.get(AttrType.InstanceId);
  if (v === undefined) return undefined;
  if (v.length !== INSTANCE_ID_LENGTH) throw malformed(`INSTANCE-ID is ${v.length} bytes, not ${INSTANCE_ID_LENGTH}`);
  return Uint8Array.from(v);
}

/** Adds TAKEOVER (u32 1). */
export function addTakeover(msg: StunMessage): StunMessage {
  return msg.add(AttrType.Takeover, encodeU32(TAKEOVER_ON));
}

/** Whether TAKEOVER asks to take over (u32 1); another value is malformed. */
export function hasTakeover(msg: StunMessage): boolean {
  const v = msg.get(AttrType.Takeover);
  if (v === undefined) return false;
  if (decodeU32(v, 'TAKEOVER') !== TAKEOVER_ON) throw malformed(`TAKEOVER is ${decodeU32(v, 'TAKEOVER')}, not ${TAKEOVER_ON}`);
  return true;
}

/** Adds INSTANCE-CHECK asking `kind`. */
export function addInstanceCheck(msg: StunMessage, kind: InstanceCheckKind): StunMessage {
  return msg.add(AttrType.InstanceCheck, encodeU32(InstanceCheckCode[kind]));
}

/** INSTANCE-CHECK: what it asks; a code other than an {@link InstanceCheckCode} is malformed. */
export function getInstanceCheck(msg: StunMessage): InstanceCheckKind | undefined {
  const v = msg.get(AttrType.InstanceCheck);
  if (v === undefined) return undefined;
  const code = decodeU32(v, 'INSTANCE-CHECK');
  const kind = (Object.keys(InstanceCheckCode) as InstanceCheckKind[]).find((k) => InstanceCheckCode[k] === code);
  if (kind === undefined) throw malformed(`INSTANCE-CHECK ${code} is not a known check`);
  return kind;
}

/** PREVIOUS-SESSION: the earlier session's ID and a MAC under its key (security/previous-session.ts). */
export interface PreviousSession {
  readonly sessionId: Uint8Array;
  readonly mac: Uint8Array;
}

/** Adds PREVIOUS-SESSION (`sessionId` then `mac`); throws InvalidArgument unless the MAC is {@link PREVIOUS_SESSION_MAC_BYTES} bytes. */
export function addPreviousSession(msg: StunMessage, previous: PreviousSession): StunMessage {
  checkBytes(previous.sessionId, 'previous session ID');
  checkBytes(previous.mac, 'previous session MAC');
  if (previous.mac.length !== PREVIOUS_SESSION_MAC_BYTES || previous.sessionId.length === 0) {
    throw invalidArgument(`PREVIOUS-SESSION needs a session ID and a ${PREVIOUS_SESSION_MAC_BYTES}-byte MAC`);
  }
  return msg.add(AttrType.PreviousSession, Buffer.concat([previous.sessionId, previous.mac]));
}

/** PREVIOUS-SESSION: a session ID of at least one byte, then the MAC. */
export function getPreviousSession(msg: StunMessage): PreviousSession | undefined {
  const v = msg.get(AttrType.PreviousSession);
  if (v === undefined) return undefined;
  if (v.length <= PREVIOUS_SESSION_MAC_BYTES) throw malformed(`PREVIOUS-SESSION is ${v.length} bytes: too short for a session ID and a ${PREVIOUS_SESSION_MAC_BYTES}-byte MAC`);
  const split = v.length - PREVIOUS_SESSION_MAC_BYTES;
  return { sessionId: Uint8Array.from(v.subarray(0, split)), mac: Uint8Array.from(v.subarray(split)) };
}
