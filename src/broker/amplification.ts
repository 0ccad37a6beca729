/**
 * Anti-amplification for UDP answers (the source of a UDP request is not
 * verified, so an answer larger than its request would let anyone aim the
 * broker at a victim and multiply their traffic).
 *
 * The rule: an answer to an unauthenticated UDP request is at most as large as
 * the request. To get there the broker sheds what the requester can live
 * without, in this order:
 *
 * 1. RFC 5780 PADDING in a response shrinks to what fits (so a full MTU-sized
 *    padded answer goes only to a request at least as large);
 * 2. SOFTWARE;
 * 3. RESPONSE-ORIGIN, MAPPED-ADDRESS, OTHER-ADDRESS (RFC 5780 extras);
 * 4. the reason phrase of ERROR-CODE (the code stays);
 * 5. FINGERPRINT.
 *
 * What remains is the answer's core (XOR-MAPPED-ADDRESS, LIFETIME, ERROR-CODE,
 * UNKNOWN-ATTRIBUTES, ...); if even that does not fit, there is no answer.
 *
 * One exception keeps standard STUN clients working: RFC 8489 lets a Binding
 * request be a bare 20-byte header (coturn's `turnutils_stunclient` and
 * `turnutils_natdiscovery` send exactly that), and no answer fits in 20 bytes.
 * Such requests may be answered up to {@link RESPONSE_FLOOR_BYTES}, with the
 * excess charged to a small allowance per source and for the whole broker
 * (limits.ts `amplificationAllowance*`); when the allowance is spent the strict
 * rule applies. nattrav's own clients make their requests large enough with
 * REQUEST-PADDING (wire/request-padding.ts) and never draw on it.
 */
import { ATTRIBUTE_HEADER_LENGTH, AttrType, FINGERPRINT_LENGTH, HEADER_LENGTH, MAX_SOFTWARE_BYTES } from '../wire/constants.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import { StunMessage } from '../wire/message.js';
import { encodeText } from '../wire/text.js';
import type { StunAttribute } from '../wire/types.js';

/**
 * The largest answer a minimal request may get from the allowance: an RFC 5780
 * Binding answer over IPv6 with every extra (20 + 4 x 24 address bytes + SOFTWARE
 * + FINGERPRINT rounds to 148).
 */
export const RESPONSE_FLOOR_BYTES = 148;

/** RFC 5780 extras, dropped in this order when an answer is too large. */
const OPTIONAL_ATTRIBUTES: readonly number[] = [AttrType.ResponseOrigin, AttrType.MappedAddress, AttrType.OtherAddress];
/** ERROR-CODE's class and number, without the reason phrase (RFC 8489 §14.8). */
const ERROR_CODE_HEADER_LENGTH = 4;

const attributeBytes = (length: number): number => ATTRIBUTE_HEADER_LENGTH + Math.ceil(length / 4) * 4;

/**
 * Encodes `message` with `options` (SOFTWARE and FINGERPRINT only; integrity is
 * never shed) in at most `budget` bytes, shedding as the module comment says;
 * undefined when even the core does not fit.
 */
export function fitResponse(message: StunMessage, options: EncodeOptions, budget: number): Buffer | undefined {
  const padding = message.attributes.find((a) => a.type === AttrType.Padding);
  let attributes: StunAttribute[] = message.attributes.filter((a) => a.type !== AttrType.Padding);
  let software = options.software;
  let fingerprint = options.fingerprint === true;
  const size = (): number =>
    HEADER_LENGTH +
    attributes.reduce((sum, a) => sum + attributeBytes(a.value.length), 0) +
    (software === undefined ? 0 : attributeBytes(encodeText(software, MAX_SOFTWARE_BYTES, 'SOFTWARE').length)) +
    (fingerprint ? ATTRIBUTE_HEADER_LENGTH + FINGERPRINT_LENGTH : 0);
  const steps: Array<() => void> = [
    () => {
      software = undefined;
    },
    ...OPTIONAL_ATTRIBUTES.map((type) => () => {
      attributes = attributes.filter((a) => a.type !== type);
    }),
    () => {
      attributes = attributes.map((a) =>
        a.type === AttrType.ErrorCode && a.value.length > ERROR_CODE_HEADER_LENGTH ? { type: a.type, value: a.value.subarray(0, ERROR_CODE_HEADER_LENGTH) } : a,
      );
    },
    () => {
      fingerprint = false;
    },
  ];
  for (let i = 0; size() > budget; i++) {
    if (i >= steps.length) return undefined;
    steps[i]();
  }
  if (padding !== undefined) {
    const room = Math.floor((budget - size() - ATTRIBUTE_HEADER_LENGTH) / 4) * 4;
    if (room >= 0) attributes.push({ type: AttrType.Padding, value: padding.value.subarray(0, Math.min(padding.value.length, room)) });
  }
  const fitted = new StunMessage({ method: message.method, cls: message.cls, transactionId: message.transactionId, attributes });
  const { software: _dropped, ...rest } = options;
  return encodeMessage(fitted, { ...rest, fingerprint, ...(software === undefined ? {} : { software }) });
}
