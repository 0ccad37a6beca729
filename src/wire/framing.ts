/**
 * STUN over TCP (RFC 8489 §6.2.2): messages are sent back to back and
 * delimited by the length field of their own header; there is no extra
 * framing. After a STUN exchange the same stream may carry application bytes,
 * so the decoder can stop after one message and hand back what follows.
 */
import { HEADER_LENGTH, MAX_MESSAGE_LENGTH } from './constants.js';
import { decodeMessage } from './codec.js';
import { checkBytes, checkInteger } from './fail.js';
import type { StunMessage } from './message.js';
import { checkHeaderPrefix } from './scan.js';

const EMPTY = Buffer.alloc(0);

/**
 * Splits a byte stream into STUN messages. Throws StunMalformed as soon as
 * the buffered bytes cannot be the start of a STUN message; after that the
 * stream should be closed (the bad bytes stay buffered, see {@link takeRemainder}).
 */
export class StunStreamDecoder {
  private buf: Buffer = EMPTY;
  private readonly maxMessageLength: number;

  /** `maxMessageLength` bounds a whole message, header included. @default MAX_MESSAGE_LENGTH */
  constructor(maxMessageLength: number = MAX_MESSAGE_LENGTH) {
    checkInteger(maxMessageLength, HEADER_LENGTH, HEADER_LENGTH + 0xffff, 'maxMessageLength');
    this.maxMessageLength = maxMessageLength;
  }

  /**
   * Appends bytes, returns every complete message now available (decoded).
   * Throws StunMalformed as soon as the buffered bytes cannot be the start of
   * a STUN message (bad first bits, cookie, or length too large), checking
   * each header byte as it arrives. Messages completed earlier in the same
   * call are lost when it throws: the stream is unusable anyway.
   */
  push(chunk: Uint8Array): StunMessage[] {
    this.append(chunk);
    const messages: StunMessage[] = [];
    for (let m = this.next(); m !== undefined; m = this.next()) messages.push(m);
    return messages;
  }

  /**
   * Appends bytes and returns the first complete message, if any, leaving
   * every byte after it buffered and unparsed (for a stream that switches
   * from STUN to application data; see {@link takeRemainder}).
   */
  pushUntilOne(chunk: Uint8Array): StunMessage | undefined {
    this.append(chunk);
    return this.next();
  }

  /** Number of bytes buffered that are not yet a whole message. */
  get buffered(): number {
    return this.buf.length;
  }

  /** Removes and returns the buffered bytes (used when a stream switches from STUN to application data). */
  takeRemainder(): Buffer {
    const rest = this.buf;
    this.buf = EMPTY;
    return rest;
  }

  private append(chunk: Uint8Array): void {
    checkBytes(chunk, 'chunk');
    if (chunk.length === 0) return;
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
  }

  /** Takes and decodes the first message if it is complete; validates the header bytes present so far. */
  private next(): StunMessage | undefined {
    if (this.buf.length === 0) return undefined;
    const length = checkHeaderPrefix(this.buf.subarray(0, HEADER_LENGTH), this.maxMessageLength);
    if (length === undefined || this.buf.length < HEADER_LENGTH + length) return undefined;
    const end = HEADER_LENGTH + length;
    const message = decodeMessage(this.buf.subarray(0, end), this.maxMessageLength);
    this.buf = this.buf.subarray(end);
    return message;
  }
}
