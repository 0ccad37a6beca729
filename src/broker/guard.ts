/**
 * The broker's gatekeeper: applies limits.ts to every datagram, connection and
 * request before the broker does any work for it, and fits UDP answers to the
 * anti-amplification rule (amplification.ts). A refusal is an error response
 * with a stable wire code (429 Too Many Requests) where the peer can use one,
 * silence where answering would itself be the problem (UDP floods), and always
 * a throttled 'limited' report; never an exception.
 */
import type { Socket } from 'node:net';
import type { EncodeOptions } from '../wire/codec.js';
import { HEADER_LENGTH, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import { encodeMessageType, type StunMessage } from '../wire/message.js';
import { getUri } from '../wire/nattrav.js';
import { RegistrationCap } from './registration-cap.js';
import { fitResponse, fitUnauthenticated, type AmplificationMode, type UdpRequestInfo } from './amplification.js';
import { LimitReporter, RateLimiter, TokenBucket, type BrokerLimits, type LimitedReport, type RateKind } from './limits.js';

/** What a TCP request may do after the guard looked at it. */
export type TcpVerdict = { readonly action: 'serve' } | { readonly action: 'refuse'; readonly response: StunMessage } | { readonly action: 'close' };

const SERVE: TcpVerdict = { action: 'serve' };
/** Message types (RFC 8489 §5) whose datagrams have their own rates. */
const BINDING_REQUEST = encodeMessageType(Method.Binding, MessageClass.Request);
const REGISTER_REQUEST = encodeMessageType(Method.Register, MessageClass.Request);

/** Applies the broker's limits; one per broker. */
export class BrokerGuard {
  readonly limits: BrokerLimits;
  readonly #rates: RateLimiter;
  readonly #reporter: LimitReporter;
  readonly #registrations: RegistrationCap;
  /** Open initiator exchanges per recipient URI (entries exist only while positive; bounded by maxConnections). */
  readonly #pendingPerUri = new Map<string, number>();
  readonly #allowance: TokenBucket;
  readonly #amplification: AmplificationMode;
  readonly #now: () => number;

  /** `amplification`: how large unauthenticated UDP answers may be (amplification.ts). `now`: the clock. */
  constructor(
    limits: BrokerLimits,
    report: (report: LimitedReport) => void,
    { amplification = 'minimal', now = Date.now }: { amplification?: AmplificationMode; now?: () => number } = {},
  ) {
    this.limits = limits;
    this.#amplification = amplification;
    this.#now = now;
    this.#rates = new RateLimiter(limits, now);
    this.#reporter = new LimitReporter(limits.limitedEventsPerSecond, report, now);
    this.#registrations = new RegistrationCap(limits.maxRegistrationsPerSource, limits.maxRegistrations);
    this.#allowance = new TokenBucket(limits.amplificationAllowance, now());
  }

  /** How many times each limit bit since start (reported or not). */
  get counts(): ReadonlyMap<string, number> {
    return this.#reporter.counts;
  }

  /** Sizes of every table the guard keeps (for tests and metrics). */
  get tables(): { buckets: number; registrations: number; pendingUris: number } {
    return { buckets: this.#rates.size, registrations: this.#registrations.size, pendingUris: this.#pendingPerUri.size };
  }

  /** Reports a limit (throttled). */
  limited(report: LimitedReport): void {
    this.#reporter.report(report);
  }

  /** A UDP datagram from `source`: false drops it unanswered (its kind's rate was exceeded). Peeks at the header only. */
  admitDatagram(data: Buffer, source: string): boolean {
    let kind: RateKind = 'udp-other';
    if (data.length >= HEADER_LENGTH) {
      const type = ((data[0] << 8) | data[1]) & 0x3fff;
      if (type === BINDING_REQUEST) kind = 'udp-binding';
      else if (type === REGISTER_REQUEST) kind = 'udp-register';
    }
    return this.#take(kind, source);
  }

  /**
   * Encodes a UDP answer to `request` from `source` under the anti-amplification
   * rule (amplification.ts); undefined means no answer. Only answers to a `verified`
   * source (one that echoed a nonce or routability token from its address: register.ts)
   * are not shrunk; an answer under integrity to any other source is never larger than
   * its request (a peer with a session could otherwise spoof a victim's address).
   * Bytes beyond the request of unauthenticated Binding answers come from the
   * per-source and broker-wide budgets (`amplificationAllowance*`); `onDraw` is called when
   * the answer's size depended on them (they were asked, whether they granted or not).
   */
  fitUdp(message: StunMessage, options: EncodeOptions, request: UdpRequestInfo, source: string, verified = false, onDraw?: () => void): Buffer | undefined {
    if (options.integrityKey !== undefined || options.integritySha256Key !== undefined) {
      const answer = fitResponse(message, options, verified ? Number.MAX_SAFE_INTEGER : request.bytes);
      if (answer === undefined) this.limited({ kind: 'amplification', source });
      return answer;
    }
    const answer = fitUnauthenticated(message, options, request, this.#amplification, (excess) => {
      onDraw?.();
      const now = this.#now();
      const perSource = this.#rates.bucket('amplification', source);
      if (perSource.available(now) < excess || !this.#allowance.take(excess, now)) return false;
      perSource.take(excess, now);
      return true;
    });
    if (answer === undefined) this.limited({ kind: 'amplification', source });
    return answer;
  }

  /** A Register request from `source` (UDP or TCP): a 429 response when a registration cap refuses it. */
  admitRegister(request: StunMessage, source: string): StunMessage | undefined {
    let uri: string | undefined;
    try {
      uri = getUri(request);
    } catch {
      return undefined; // malformed: handleRegister answers 400
    }
    if (uri === undefined) return undefined;
    const verdict = this.#registrations.admit(uri, source, this.#now());
    if (verdict === 'ok') return undefined;
    const kind = verdict === 'per-source' ? 'registrations-per-source' : 'registrations';
    this.limited({ kind, source });
    return request.errorResponse(StunErrorCode.TooManyRequests, verdict === 'per-source' ? 'too many registrations from this address' : 'registry full');
  }

  /** A registration was granted (or refreshed). */
  registered(uri: string, source: string, lifetimeMs: number): void {
    this.#registrations.record(uri, source, this.#now() + lifetimeMs);
  }

  /** A registration was dropped. */
  unregistered(uri: string): void {
    this.#registrations.forget(uri);
  }

  /**
   * A new TCP connection from `source`: false when the accept rate refuses it (the
   * caller destroys the socket). The connection caps and deadlines are tcp-deadlines.ts's.
   */
  acceptTcp(source: string): boolean {
    return this.#take('tcp-accept', source);
  }

  /**
   * A request arrived on TCP connection `socket`: serve it, refuse it with a
   * 429 (the caller answers and ends the connection), or close the connection
   * (the per-source request rate of a stream that does nothing but ask).
   */
  tcpRequest(socket: Socket, request: StunMessage): TcpVerdict {
    const source = socket.remoteAddress ?? '?';
    if (!this.#take('tcp-request', source)) return { action: 'close' };
    const refuse = (reason: string): TcpVerdict => ({ action: 'refuse', response: request.errorResponse(StunErrorCode.TooManyRequests, reason) });
    switch (request.method) {
      case Method.Connect: {
        if (!this.#take('connect', source)) return refuse('too many lookups from this address');
        let uri: string | undefined;
        try {
          uri = getUri(request);
        } catch {
          return SERVE; // malformed: the rendezvous answers 400
        }
        if (uri === undefined) return SERVE;
        if (!this.#rates.take('connect-per-uri', uri)) {
          this.limited({ kind: 'connect-per-uri', source, uri });
          return refuse('too many connection requests for this URI');
        }
        const pending = this.#pendingPerUri.get(uri) ?? 0;
        if (pending >= this.limits.maxPendingPerUri) {
          this.limited({ kind: 'pending-per-uri', source, uri });
          return refuse('too many pending connection requests for this URI');
        }
        this.#pendingPerUri.set(uri, pending + 1);
        socket.once('close', () => {
          const left = (this.#pendingPerUri.get(uri) ?? 1) - 1;
          if (left <= 0) this.#pendingPerUri.delete(uri);
          else this.#pendingPerUri.set(uri, left);
        });
        return SERVE;
      }
      case Method.Join:
        return this.#take('connect', source) ? SERVE : refuse('too many lookups from this address');
      case Method.Relay:
        return this.#take('relay', source) ? SERVE : refuse('too many relay requests from this address');
      case Method.MappingProbe:
        return this.#take('mapping-probe', source) ? SERVE : refuse('too many mapping probes from this address');
      case Method.Register: {
        const refused = this.admitRegister(request, source);
        return refused === undefined ? SERVE : { action: 'refuse', response: refused };
      }
      default:
        return SERVE;
    }
  }

  /** False (and the socket destroyed) when a peer lets more than `maxWriteBufferBytes` pile up unread. */
  writable(socket: Socket): boolean {
    if (socket.writableLength <= this.limits.maxWriteBufferBytes) return true;
    this.limited({ kind: 'write-buffer', source: socket.remoteAddress ?? '?' });
    socket.destroy();
    return false;
  }

  #take(kind: RateKind, source: string): boolean {
    if (this.#rates.take(kind, source)) return true;
    this.limited({ kind, source });
    return false;
  }
}
