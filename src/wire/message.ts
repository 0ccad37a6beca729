/**
 * The STUN message model (RFC 8489 §5, §6): method, class, transaction ID and
 * an ordered attribute list. Bytes are produced and parsed by `codec.ts`.
 */
import { randomBytes } from 'node:crypto';
import {
  AttrType,
  COMPREHENSION_OPTIONAL_MIN,
  MAX_METHOD,
  MessageClass,
  TRANSACTION_ID_LENGTH,
  type MessageClassValue,
} from './constants.js';
import { encodeErrorCode } from './error-code.js';
import { checkBytes, checkInteger, invalidArgument, malformed } from './fail.js';
import type { StunAttribute } from './types.js';

/**
 * RFC 8489 §5: the message type is 14 bits with the class bits C1 C0 interleaved
 * into the method bits M11..M0:  M11-M7 | C1 | M6-M4 | C0 | M3-M0.
 */
const METHOD_LOW_MASK = 0x000f; // M3-M0, stays at bits 0-3
const METHOD_MID_MASK = 0x0070; // M6-M4, moves up 1 to bits 5-7
const METHOD_HIGH_MASK = 0x0f80; // M11-M7, moves up 2 to bits 9-13
const CLASS_C0_BIT = 0x0010; // C0 at bit 4
const CLASS_C1_BIT = 0x0100; // C1 at bit 8
/** RFC 8489 §5: the two most significant bits of every STUN message are zero. */
const MESSAGE_TYPE_MAX = 0x3fff;

/** A method and class, as split out of a 14-bit message type. */
export interface MessageTypeParts {
  /** The 12-bit method. */
  method: number;
  /** The class (see `MessageClass`). */
  cls: MessageClassValue;
}

/** RFC 8489 §5: interleaves a 12-bit method and a 2-bit class into the 14-bit message type. */
export function encodeMessageType(method: number, cls: MessageClassValue): number {
  checkInteger(method, 0, MAX_METHOD, 'STUN method');
  checkInteger(cls, 0, MessageClass.ErrorResponse, 'STUN class');
  return (
    (method & METHOD_LOW_MASK) |
    ((method & METHOD_MID_MASK) << 1) |
    ((method & METHOD_HIGH_MASK) << 2) |
    ((cls & 0b01) === 0 ? 0 : CLASS_C0_BIT) |
    ((cls & 0b10) === 0 ? 0 : CLASS_C1_BIT)
  );
}

/** RFC 8489 §5: splits a 14-bit message type into method and class; throws StunMalformed if a top bit is set. */
export function decodeMessageType(type: number): MessageTypeParts {
  if (!Number.isInteger(type) || type < 0 || type > MESSAGE_TYPE_MAX) {
    throw malformed(`message type 0x${type.toString(16)} is not a STUN type: the two most significant bits must be zero`);
  }
  const method = (type & METHOD_LOW_MASK) | ((type >> 1) & METHOD_MID_MASK) | ((type >> 2) & METHOD_HIGH_MASK);
  const cls = (((type & CLASS_C0_BIT) === 0 ? 0 : 0b01) | ((type & CLASS_C1_BIT) === 0 ? 0 : 0b10)) as MessageClassValue;
  return { method, cls };
}

/** 12 random bytes from node:crypto (RFC 8489 §6: "uniformly and randomly chosen"). */
export function newTransactionId(): Uint8Array {
  return randomBytes(TRANSACTION_ID_LENGTH);
}

/** What a {@link StunMessage} is built from. */
export interface StunMessageInit {
  /** The 12-bit method (see `Method`). */
  method: number;
  /** The class (see `MessageClass`). */
  cls: MessageClassValue;
  /** 12 bytes. @default a fresh {@link newTransactionId} */
  transactionId?: Uint8Array;
  /** Attributes in wire order (the array is copied). @default [] */
  attributes?: StunAttribute[];
}

function checkAttribute(type: number, value: Uint8Array): void {
  checkInteger(type, 0, 0xffff, 'attribute type');
  checkBytes(value, 'attribute value');
  if (value.length > 0xffff) throw invalidArgument(`attribute value of ${value.length} bytes exceeds the 65535-byte STUN limit`);
}

/**
 * One STUN message. Built locally (then encoded with `encodeMessage`) or
 * returned by `decodeMessage`, in which case {@link StunMessage.raw} holds the
 * bytes it came from so that MESSAGE-INTEGRITY can be checked.
 */
export class StunMessage {
  /** The 12-bit method (see `Method`). */
  readonly method: number;
  /** The class (see `MessageClass`). */
  readonly cls: MessageClassValue;
  /** The 12-byte transaction ID. */
  readonly transactionId: Uint8Array;
  /** Attributes in wire order, including MESSAGE-INTEGRITY and FINGERPRINT when decoded. */
  readonly attributes: StunAttribute[];
  /** The exact bytes this message was decoded from (undefined for a message built locally). Needed for integrity/fingerprint checks. */
  readonly raw: Uint8Array | undefined;

  /** Builds a message; throws InvalidArgument for a bad method, class, transaction ID or attribute. */
  constructor(init: StunMessageInit, raw?: Uint8Array) {
    checkInteger(init.method, 0, MAX_METHOD, 'STUN method');
    checkInteger(init.cls, 0, MessageClass.ErrorResponse, 'STUN class');
    const transactionId = init.transactionId ?? newTransactionId();
    checkBytes(transactionId, 'transactionId');
    if (transactionId.length !== TRANSACTION_ID_LENGTH) {
      throw invalidArgument(`transactionId must be ${TRANSACTION_ID_LENGTH} bytes, got ${transactionId.length}`);
    }
    const attributes = init.attributes ?? [];
    for (const a of attributes) checkAttribute(a.type, a.value);
    if (raw !== undefined) checkBytes(raw, 'raw');
    this.method = init.method;
    this.cls = init.cls;
    this.transactionId = transactionId;
    this.attributes = attributes.map((a) => ({ type: a.type, value: a.value }));
    this.raw = raw;
  }

  /** A request with a fresh (or the given) transaction ID and no attributes. */
  static request(method: number, transactionId?: Uint8Array): StunMessage {
    return new StunMessage({ method, cls: MessageClass.Request, transactionId });
  }

  /** An indication with a fresh (or the given) transaction ID and no attributes. */
  static indication(method: number, transactionId?: Uint8Array): StunMessage {
    return new StunMessage({ method, cls: MessageClass.Indication, transactionId });
  }

  /** A success response to this request: same method and transaction ID. Throws InvalidArgument if this is not a request. */
  successResponse(): StunMessage {
    this.checkIsRequest('successResponse');
    return new StunMessage({ method: this.method, cls: MessageClass.SuccessResponse, transactionId: this.transactionId });
  }

  /** An error response with ERROR-CODE already added (RFC 8489 §14.8; code 300-699). Throws InvalidArgument if this is not a request. */
  errorResponse(code: number, reason: string): StunMessage {
    this.checkIsRequest('errorResponse');
    const response = new StunMessage({ method: this.method, cls: MessageClass.ErrorResponse, transactionId: this.transactionId });
    return response.add(AttrType.ErrorCode, encodeErrorCode({ code, reason }));
  }

  /** Appends an attribute (the value is not copied). Does not update {@link StunMessage.raw}. */
  add(type: number, value: Uint8Array): this {
    checkAttribute(type, value);
    this.attributes.push({ type, value });
    return this;
  }

  /** The value of the first attribute of this type, or undefined. */
  get(type: number): Uint8Array | undefined {
    for (const a of this.attributes) if (a.type === type) return a.value;
    return undefined;
  }

  /** The values of every attribute of this type, in wire order. */
  getAll(type: number): Uint8Array[] {
    const values: Uint8Array[] = [];
    for (const a of this.attributes) if (a.type === type) values.push(a.value);
    return values;
  }

  /** True when an attribute of this type is present. */
  has(type: number): boolean {
    return this.attributes.some((a) => a.type === type);
  }

  private checkIsRequest(what: string): void {
    if (this.cls !== MessageClass.Request) {
      throw invalidArgument(`${what}() answers a request, but this message has class ${this.cls}; only requests get responses (RFC 8489 §6.3)`);
    }
  }
}

/** True when `type` is comprehension-required (RFC 8489 §14: 0x0000-0x7FFF). */
export function isComprehensionRequired(type: number): boolean {
  return type < COMPREHENSION_OPTIONAL_MIN;
}
