/**
 * `nattrav/wire`: the STUN codec (RFC 8489, RFC 5780) and nattrav's methods and attributes.
 * Pure: no sockets, no timers. Every message nattrav sends, over UDP and TCP, is framed by it.
 *
 * ```ts
 * import { StunMessage, encodeMessage, decodeMessage } from 'nattrav/wire';
 * ```
 *
 * @module
 */
export * from './constants.js';
export type { AddressFamilyName, TransportAddress, StunAttribute } from './types.js';
export {
  StunMessage,
  newTransactionId,
  encodeMessageType,
  decodeMessageType,
  isComprehensionRequired,
  type StunMessageInit,
  type MessageTypeParts,
} from './message.js';
export {
  encodeMessage,
  decodeMessage,
  isStunMessage,
  decodeDatagram,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
  longTermKey,
  unknownComprehensionRequired,
  type EncodeOptions,
} from './codec.js';
export { StunStreamDecoder } from './framing.js';
export { encodeAddress, decodeAddress, encodeXorAddress, decodeXorAddress, formatIPv6 } from './address.js';
export { encodeErrorCode, decodeErrorCode, type ErrorCodeAttribute } from './error-code.js';
export { encodeText, decodeText } from './text.js';
export { encodeUnknownAttributes, decodeUnknownAttributes } from './unknown-attributes.js';
export { encodeChangeRequest, decodeChangeRequest, type ChangeRequest } from './change-request.js';
export { encodeResponsePort, decodeResponsePort } from './response-port.js';
export { encodePadding, decodePadding } from './padding.js';
export { encodeU32, decodeU32 } from './uint.js';
export { attributeName } from './names.js';
export * from './nattrav.js';
export * from './family.js';
