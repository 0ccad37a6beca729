/**
 * Anti-amplification for UDP answers (the source of a UDP request is not
 * verified, so an answer larger than its request would let anyone aim the
 * broker at a victim and multiply their traffic). Pure: it decides what to
 * send; the byte budgets live in guard.ts (with limits.ts's token buckets).
 *
 * The strict rule: an answer is at most as large as its request. To get there
 * the broker sheds what the requester can live without, in this order:
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
 * But RFC 8489 lets a Binding request be a bare 20-byte header (coturn's
 * `turnutils_stunclient` and `turnutils_natdiscovery`, browsers' ICE agents),
 * and no answer fits in 20 bytes. So by default ({@link AmplificationMode}
 * 'minimal') an answer to a Binding request may be up to
 * {@link MAX_AMPLIFICATION} times its request, the bytes beyond the request
 * being charged to byte budgets per source and for the whole broker (limits.ts
 * `amplificationAllowance*`); when either is spent, the strict rule applies.
 * Such an answer is the minimal one: no SOFTWARE, FINGERPRINT only when the
 * request had one, PADDING no larger than under the strict rule, RFC 5780
 * extras only as far as they fit in the ratio (same order as above).
 * Worst cases (the unit test measures them):
 *
 * | request                                  | answer                                  | ratio |
 * | ---------------------------------------- | --------------------------------------- | ----- |
 * | bare Binding, 20 B, IPv4                 | XOR-MAPPED + OTHER (or MAPPED), 44 B    | 2.2   |
 * | bare Binding, 20 B, IPv6                 | XOR-MAPPED, 44 B                        | 2.2   |
 * | Binding + FINGERPRINT, 28 B, IPv4        | XOR-MAPPED + MAPPED + OTHER + FP, 64 B  | 2.29  |
 * | Binding + CHANGE-REQUEST, 28 B, IPv4     | XOR-MAPPED + 3 RFC 5780 extras, 68 B    | 2.43  |
 * | any request of n bytes                   | at most floor(2.5 n)                    | <= 2.5 |
 *
 * Answers to nattrav's own methods never draw on the budgets: nattrav's clients
 * make their requests large enough with REQUEST-PADDING (wire/request-padding.ts).
 * Answers under integrity (to a peer that proved its key) are not limited.
 *
 * 'strict' (`strictAmplification`) never draws: factor <= 1. 'stun-compat'
 * (`stunCompat`) lets a Binding answer reach {@link STUN_COMPAT_ANSWER_BYTES}
 * (every RFC 5780 extra, as coturn's natdiscovery expects of coturn's server),
 * from the same budgets: factor up to 124 / 20 = 6.2, bytes per second as bounded.
 */
import { ATTRIBUTE_HEADER_LENGTH, AttrType, FINGERPRINT_LENGTH, HEADER_LENGTH, MAX_SOFTWARE_BYTES, Method } from '../wire/constants.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import { StunMessage } from '../wire/message.js';
import { encodeText } from '../wire/text.js';
import type { StunAttribute } from '../wire/types.js';

/**
 * How large an unauthenticated UDP answer may be:
 * - 'minimal': up to {@link MAX_AMPLIFICATION} x the request for Binding, from the byte budgets;
 * - 'strict': never larger than the request;
 * - 'stun-compat': like 'minimal', but at least {@link STUN_COMPAT_ANSWER_BYTES} for Binding.
 */
export type AmplificationMode = 'minimal' | 'strict' | 'stun-compat';

/**
 * The largest ratio of an unauthenticated answer to its request in 'minimal'
 * mode: room for an IPv6 XOR-MAPPED-ADDRESS (24 bytes) after a 20-byte header,
 * 44 / 20 = 2.2, with a little to spare for an RFC 5780 extra over IPv4.
 */
export const MAX_AMPLIFICATION = 2.5;

/**
 * The largest Binding answer in 'stun-compat' mode: RFC 5780 over IPv6 with every
 * extra and FINGERPRINT (20 + 4 x 24 address bytes + 8), never SOFTWARE.
 */
export const STUN_COMPAT_ANSWER_BYTES = 124;

/** What the fitting needs to know about the request being answered. */
export interface UdpRequestInfo {
  /** Its size on the wire, in bytes. */
  readonly bytes: number;
  /** Whether it carried FINGERPRINT (RFC 8489 §14.7): only then does an answer beyond its size carry one. */
  readonly fingerprint: boolean;
}

/** What {@link fitUnauthenticated} needs to know of `request`, which arrived as `datagram`. */
export function udpRequestInfo(request: StunMessage, datagram: Uint8Array): UdpRequestInfo {
  return { bytes: datagram.length, fingerprint: request.has(AttrType.Fingerprint) };
}

/** The most bytes an answer to a request of `requestBytes` may have in `mode` (for a Binding request; others: the request's size). */
export function answerCap(mode: AmplificationMode, requestBytes: number): number {
  switch (mode) {
    case 'strict':
      return requestBytes;
    case 'minimal':
      return Math.floor(MAX_AMPLIFICATION * requestBytes);
    case 'stun-compat':
      return Math.max(Math.floor(MAX_AMPLIFICATION * requestBytes), STUN_COMPAT_ANSWER_BYTES);
  }
}

/**
 * Encodes an unauthenticated UDP answer under `mode`'s rule (see the module
 * comment): the strict answer, unless a larger minimal one fits the cap and
 * `draw` grants its bytes beyond the request. `draw(excess)` must take `excess`
 * bytes from the budgets and say whether it could (it is called at most once,
 * and only when the answer would exceed the request). Undefined means no answer.
 */
export function fitUnauthenticated(
  message: StunMessage,
  options: EncodeOptions,
  request: UdpRequestInfo,
  mode: AmplificationMode,
  draw: (excessBytes: number) => boolean,
): Buffer | undefined {
  const strict = fitResponse(message, options, request.bytes);
  if (mode === 'strict' || message.method !== Method.Binding) return strict;
  const { software: _software, ...rest } = options;
  const minimal = fitResponse(message, { ...rest, fingerprint: options.fingerprint === true && request.fingerprint }, answerCap(mode, request.bytes), request.bytes);
  if (minimal === undefined || (strict !== undefined && strict.length >= minimal.length)) return strict;
  if (minimal.length <= request.bytes) return minimal;
  return draw(minimal.length - request.bytes) ? minimal : strict;
}

/** RFC 5780 extras, dropped in this order when an answer is too large. */
const OPTIONAL_ATTRIBUTES: readonly number[] = [AttrType.ResponseOrigin, AttrType.MappedAddress, AttrType.OtherAddress];
/** ERROR-CODE's class and number, without the reason phrase (RFC 8489 §14.8). */
const ERROR_CODE_HEADER_LENGTH = 4;

const attributeBytes = (length: number): number => ATTRIBUTE_HEADER_LENGTH + Math.ceil(length / 4) * 4;

/**
 * Encodes `message` with `options` (SOFTWARE and FINGERPRINT only; integrity is
 * never shed) in at most `budget` bytes, shedding as the module comment says;
 * undefined when even the core does not fit. PADDING fills at most
 * `paddingBudget` bytes of answer (at most `budget`).
 */
export function fitResponse(message: StunMessage, options: EncodeOptions, budget: number, paddingBudget: number = budget): Buffer | undefined {
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
    const room = Math.floor((Math.min(budget, paddingBudget) - size() - ATTRIBUTE_HEADER_LENGTH) / 4) * 4;
    if (room >= 0) attributes.push({ type: AttrType.Padding, value: padding.value.subarray(0, Math.min(padding.value.length, room)) });
  }
  const fitted = new StunMessage({ method: message.method, cls: message.cls, transactionId: message.transactionId, attributes });
  const { software: _dropped, ...rest } = options;
  return encodeMessage(fitted, { ...rest, fingerprint, ...(software === undefined ? {} : { software }) });
}
