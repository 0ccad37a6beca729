/**
 * REQUEST-PADDING (nattrav, comprehension-optional): makes a UDP request at
 * least as large as the answer it asks for, so that a broker that never sends
 * an unverified source more bytes than it received (anti-amplification) can
 * answer in full. Pure: it only computes sizes.
 */
import { ATTRIBUTE_HEADER_LENGTH, AttrType, FINGERPRINT_LENGTH, HEADER_LENGTH } from './constants.js';
import type { StunMessage } from './message.js';
import { padded } from './scan.js';

/**
 * The size nattrav's UDP requests are padded to: the largest answer the broker
 * gives to a Binding or Register request (an RFC 5780 Binding answer over IPv6 with
 * every extra, SOFTWARE and FINGERPRINT: 148 bytes).
 */
export const REQUEST_PADDED_BYTES = 148;

/**
 * Adds REQUEST-PADDING to `request` so that, encoded with FINGERPRINT when
 * `fingerprint` is true (and nothing else appended), it is at least `targetBytes`
 * long. Adds nothing when it is already that long. Returns `request`.
 */
export function addRequestPadding(request: StunMessage, targetBytes: number = REQUEST_PADDED_BYTES, fingerprint = true): StunMessage {
  let size = HEADER_LENGTH + (fingerprint ? ATTRIBUTE_HEADER_LENGTH + FINGERPRINT_LENGTH : 0);
  for (const a of request.attributes) size += ATTRIBUTE_HEADER_LENGTH + padded(a.value.length);
  if (size >= targetBytes) return request;
  const fill = Math.max(0, padded(targetBytes - size - ATTRIBUTE_HEADER_LENGTH));
  return request.add(AttrType.RequestPadding, new Uint8Array(fill));
}
