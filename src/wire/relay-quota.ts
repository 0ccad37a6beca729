/**
 * RELAY-QUOTA (nattrav): the quotas the broker's relay applies to one relayed
 * connection, sent in its Relay success response so that a peer whose relayed
 * connection is cut can say why.
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                    max bytes (u64, high word)                 |
 * |                    max bytes (u64, low word)                  |
 * |                    max duration, ms (u32)                     |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * 0 means unlimited.
 */
import { RELAY_QUOTA_LENGTH } from './constants.js';
import { invalidArgument, malformed } from './fail.js';

/** The quotas of one relayed connection (0 = unlimited). */
export interface RelayQuotaAttribute {
  /** Bytes, both directions together, after which the relay cuts the connection. */
  readonly maxBytes: number;
  /** Milliseconds after which the relay cuts the connection. */
  readonly maxDurationMs: number;
}

const U32_MAX = 0xffff_ffff;

/** Encodes RELAY-QUOTA; throws InvalidArgument for a negative or non-integer value. */
export function encodeRelayQuota(quota: RelayQuotaAttribute): Uint8Array {
  for (const [name, value] of [['maxBytes', quota.maxBytes], ['maxDurationMs', quota.maxDurationMs]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw invalidArgument(`RELAY-QUOTA ${name} must be a non-negative safe integer, got ${value}`);
  }
  const out = new Uint8Array(RELAY_QUOTA_LENGTH);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(quota.maxBytes));
  view.setUint32(8, Math.min(quota.maxDurationMs, U32_MAX));
  return out;
}

/** Decodes RELAY-QUOTA; throws StunMalformed for a wrong length or a byte count past 2^53. */
export function decodeRelayQuota(value: Uint8Array): RelayQuotaAttribute {
  if (value.length !== RELAY_QUOTA_LENGTH) throw malformed(`RELAY-QUOTA must be ${RELAY_QUOTA_LENGTH} bytes, got ${value.length}`);
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const bytes = view.getBigUint64(0);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed('RELAY-QUOTA max bytes is past 2^53');
  return { maxBytes: Number(bytes), maxDurationMs: view.getUint32(8) };
}
