/**
 * The recipient's book of the broker's ConnectionRequests: which to act on, which
 * are copies to answer again, which to ignore. Pure (no sockets, no timers).
 *
 * Under a session every request carries a SEQUENCE (rising per session, one counter for
 * every broker of a cluster) covered by
 * its integrity. Each number is acted on once; numbers up to {@link REQUEST_WINDOW}
 * below the highest seen are still accepted the first time (requests sent close
 * together may arrive out of order), older ones never, so a captured request
 * cannot be replayed. The broker retransmits a request until it hears from us:
 * a copy (same sequence, same attempt) gets the same answer again and nothing more.
 * Under a session a request without SEQUENCE is ignored. In open
 * mode (no session: a SEQUENCE without integrity proves nothing) requests are told
 * apart by attempt ID only.
 */
import { verifyMessageIntegritySha256, type EncodeOptions } from '../wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode, TransportCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { getAttemptId, getJoinAt, getU32Attr } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import type { RegistrationSession } from './register-proof.js';

/** Requests remembered (and the width of the sequence window). */
export const REQUEST_WINDOW = 1024;

/** Our answer to one request: accepted, or refused with a reason. */
export type RequestAnswer = { readonly accepted: true } | { readonly accepted: false; readonly reason: string };

/** What to do with a request. */
export type RequestVerdict =
  | { readonly kind: 'new' }
  | { readonly kind: 'copy'; readonly answer: RequestAnswer }
  | { readonly kind: 'ignore'; readonly why: 'replayed' | 'too old' };

interface Entry {
  readonly sequence: number | undefined;
  readonly answer: RequestAnswer;
}

/** The requests of one session (a new session starts a new book). */
export class ConnectionRequestBook {
  /** Attempt ID (hex) -> what we answered, oldest first. */
  readonly #byAttempt = new Map<string, Entry>();
  readonly #sequences = new Set<number>();
  /** Sequences at or below this are no longer remembered, so never accepted. */
  #floor = 0;
  #highest = 0;

  /** What to do with a request for `attempt` carrying `sequence` (undefined: none). */
  check(attempt: string, sequence: number | undefined): RequestVerdict {
    const entry = this.#byAttempt.get(attempt);
    if (entry !== undefined) return entry.sequence === sequence ? { kind: 'copy', answer: entry.answer } : { kind: 'ignore', why: 'replayed' };
    if (sequence === undefined) return { kind: 'new' };
    if (sequence <= this.#floor || sequence <= this.#highest - REQUEST_WINDOW) return { kind: 'ignore', why: 'too old' };
    if (this.#sequences.has(sequence)) return { kind: 'ignore', why: 'replayed' };
    return { kind: 'new' };
  }

  /** Records the answer to a request {@link check} called new. */
  record(attempt: string, sequence: number | undefined, answer: RequestAnswer): void {
    this.#byAttempt.set(attempt, { sequence, answer });
    if (sequence !== undefined) {
      this.#sequences.add(sequence);
      this.#highest = Math.max(this.#highest, sequence);
    }
    while (this.#byAttempt.size > REQUEST_WINDOW) {
      const [oldest, evicted] = this.#byAttempt.entries().next().value as [string, Entry];
      this.#byAttempt.delete(oldest);
      if (evicted.sequence !== undefined) {
        this.#sequences.delete(evicted.sequence);
        this.#floor = Math.max(this.#floor, evicted.sequence);
      }
    }
  }
}

/** A request acted on: accepted (reason undefined) or refused with the reason. */
export interface RequestDecision {
  readonly attemptId: Uint8Array;
  readonly reason: string | undefined;
  /** JOIN-AT: the broker of a cluster that runs the attempt (the request was relayed by ours). */
  readonly joinAt: TransportAddress | undefined;
  /** TRANSPORT = datagram: the initiator asks for a datagram channel (peer/datagram/). */
  readonly datagram: boolean;
}

/** Sends an answer back the way the request came, encoded with `options`. */
export type AnswerRequest = (response: StunMessage, options: EncodeOptions) => void;

/**
 * The recipient's handling of ConnectionRequests from the broker, by UDP or on the
 * control connection: answer every copy alike (the broker retransmits until it hears
 * from us), act once. With a session only requests under its key count, each SEQUENCE
 * once (the book above), and our answer carries integrity under the key too, so the
 * broker can tell it from a forgery. A new session starts a new book.
 */
export class ConnectionRequests {
  #book = new ConnectionRequestBook();
  #bookSession: RegistrationSession | undefined;

  /**
   * Handles `message` under `session` (undefined: open mode): answers it, and returns the
   * decision when it is a new request (`admit` says undefined to accept, or the reason to
   * refuse, given the request's JOIN-AT if any and whether it asks for a datagram channel);
   * undefined for anything else (not a request, a copy, a forgery, a replay, a malformed
   * attribute).
   */
  handle(
    message: StunMessage,
    session: RegistrationSession | undefined,
    admit: (attemptId: Uint8Array, joinAt: TransportAddress | undefined, datagram: boolean) => string | undefined,
    answer: AnswerRequest,
  ): RequestDecision | undefined {
    if (message.cls !== MessageClass.Request || message.method !== Method.ConnectionRequest) return undefined;
    // With a session, only requests under its key come from our broker; others are ignored.
    if (session !== undefined && !verifyMessageIntegritySha256(message, session.key)) return undefined;
    let attemptId: Uint8Array | undefined;
    let sequence: number | undefined;
    let joinAt: TransportAddress | undefined;
    try {
      attemptId = getAttemptId(message);
      joinAt = getJoinAt(message);
      // Only integrity makes a SEQUENCE trustworthy: without a session (open mode) a forged high one would silence the real ones.
      sequence = session === undefined ? undefined : getU32Attr(message, AttrType.Sequence);
    } catch {
      return undefined;
    }
    if (attemptId === undefined) return undefined;
    // Our broker numbers every request of a session; one without a number could be replayed at will.
    if (session !== undefined && sequence === undefined) return undefined;
    if (this.#bookSession !== session) {
      this.#book = new ConnectionRequestBook();
      this.#bookSession = session;
    }
    const key = Buffer.from(attemptId).toString('hex');
    const verdict = this.#book.check(key, sequence);
    if (verdict.kind === 'ignore') return undefined;
    const options: EncodeOptions = { fingerprint: true, ...(session === undefined ? {} : { integritySha256Key: session.key }) };
    if (verdict.kind === 'copy') {
      answer(answerTo(message, verdict.answer), options);
      return undefined;
    }
    const datagram = getU32Attr(message, AttrType.Transport) === TransportCode.datagram;
    const reason = admit(attemptId, joinAt, datagram);
    const decision: RequestAnswer = reason === undefined ? { accepted: true } : { accepted: false, reason };
    this.#book.record(key, sequence, decision);
    answer(answerTo(message, decision), options);
    return { attemptId, reason, joinAt, datagram };
  }
}

/** Our answer to a ConnectionRequest: success, or 429 with the reason of a refusal. */
function answerTo(request: StunMessage, answer: RequestAnswer): StunMessage {
  return answer.accepted ? request.successResponse() : request.errorResponse(StunErrorCode.TooManyRequests, answer.reason);
}
