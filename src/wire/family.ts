/**
 * nattrav's address-family attributes (see constants.ts): SECOND-FAMILY (a refresh that
 * registers the session's second family), FAMILY-ONLY (a Connect that must stay in its
 * exchange's family) and OTHER-FAMILY-BROKER (the broker's address in the other family,
 * announced in registration answers). Each encoder sits beside its decoder; decoders throw
 * StunMalformed naming the attribute.
 */
import { AttrType } from './constants.js';
import { malformed } from './fail.js';
import type { StunMessage } from './message.js';
import { addXorAddress, getXorAddressAttr } from './nattrav.js';
import type { TransportAddress } from './types.js';
import { decodeU32, encodeU32 } from './uint.js';

/** The only value of the flag attributes SECOND-FAMILY and FAMILY-ONLY. */
const FLAG_ON = 1;

/** Adds SECOND-FAMILY (u32 1). */
export function addSecondFamily(msg: StunMessage): StunMessage {
  return msg.add(AttrType.SecondFamily, encodeU32(FLAG_ON));
}

/** Whether `msg` carries SECOND-FAMILY; throws StunMalformed for a value other than u32 1. */
export function hasSecondFamily(msg: StunMessage): boolean {
  return flag(msg, AttrType.SecondFamily, 'SECOND-FAMILY');
}

/** Adds FAMILY-ONLY (u32 1). */
export function addFamilyOnly(msg: StunMessage): StunMessage {
  return msg.add(AttrType.FamilyOnly, encodeU32(FLAG_ON));
}

/** Whether `msg` carries FAMILY-ONLY; throws StunMalformed for a value other than u32 1. */
export function hasFamilyOnly(msg: StunMessage): boolean {
  return flag(msg, AttrType.FamilyOnly, 'FAMILY-ONLY');
}

/** Adds OTHER-FAMILY-BROKER. */
export function addOtherFamilyBroker(msg: StunMessage, broker: TransportAddress): StunMessage {
  return addXorAddress(msg, AttrType.OtherFamilyBroker, broker);
}

/** OTHER-FAMILY-BROKER, if present (throws StunMalformed for a malformed address). */
export function getOtherFamilyBroker(msg: StunMessage): TransportAddress | undefined {
  return getXorAddressAttr(msg, AttrType.OtherFamilyBroker);
}

function flag(msg: StunMessage, type: number, name: string): boolean {
  const value = msg.get(type);
  if (value === undefined) return false;
  if (decodeU32(value, name) !== FLAG_ON) throw malformed(`${name} must be u32 ${FLAG_ON}`);
  return true;
}
