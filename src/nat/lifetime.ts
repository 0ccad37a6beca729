/**
 * `measureMappingLifetime()`: how long the NAT keeps an idle UDP mapping, RFC 5780
 * §4.6 style. Sans-IO: sockets come from an injected {@link LifetimeIo} and time from
 * an injected {@link Clock}, so the whole search runs in unit tests on a fake clock;
 * lifetime-io.ts gives the dgram sockets.
 *
 * One probe of silence T:
 *
 * 1. A fresh socket X sends a Binding request to the server and learns its mapped
 *    port from the answer. That answer is the last packet X's mapping sees.
 * 2. X stays silent for T: it sends nothing more, ever (a send would refresh its
 *    mapping and spoil the test). Keepalives of a registration run on their own socket.
 * 3. The shared socket Y asks the same server address for a Binding answer sent to X's
 *    mapped port (RESPONSE-PORT, RFC 5780 §7.5; the server sends to the port given, on
 *    the address the request came from). X hearing it means its mapping lived T; nothing
 *    after Y's retransmissions means it did not. Y hearing the answer itself (or an
 *    error) means the server does not support RESPONSE-PORT: ERR_PROTOCOL.
 *
 * Probes of a round run at once, one socket each; lifetime-search.ts decides their T and
 * when to stop, so sockets (at most `maxProbes` + 1) and packets (at most
 * `transmissions` per request, two requests per probe) are bounded.
 */
import { systemClock, type Clock, type TimerHandle } from '../common/clock.js';
import { abortError, throwIfAborted } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import { decodeDatagram, encodeMessage } from '../wire/codec.js';
import { AttrType, MessageClass, Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { getErrorCode, getXorMappedAddress } from '../wire/nattrav.js';
import { addRequestPadding } from '../wire/request-padding.js';
import { encodeResponsePort } from '../wire/response-port.js';
import {
  EMPTY_BRACKET,
  nextRound,
  pointless,
  recordProbe,
  searchEnd,
  searchSettings,
  type LifetimeBracket,
  type LifetimeSearchOptions,
  type SearchEnd,
} from './lifetime-search.js';
import type { UdpTiming } from './udp-prober.js';

/** A socket of the measurement: it sends to the server, and is closed when its probe ends. */
export interface LifetimeSocket {
  /** Sends one datagram to the server. */
  send(data: Uint8Array): void;
  /** Closes the socket. Idempotent. */
  close(): void;
}

/** Where the measurement's sockets come from. */
export interface LifetimeIo {
  /** Opens a fresh socket towards the server; `onMessage` gets every datagram that comes from the server's address and port. */
  open(onMessage: (data: Uint8Array) => void): Promise<LifetimeSocket>;
}

/** One probe's outcome, as it ends. */
export interface LifetimeProbeEvent {
  /** The silence tested, in ms. */
  readonly silenceMs: number;
  /** True: the mapping survived it. */
  readonly alive: boolean;
}

/** Options of {@link measureMappingLifetime}. */
export interface MeasureLifetimeOptions extends LifetimeSearchOptions {
  /** The sockets (lifetime-io.ts `dgramLifetimeIo` for real ones). */
  readonly io: LifetimeIo;
  /** @default systemClock */
  readonly clock?: Clock;
  /** Aborts the measurement; it rejects with ERR_ABORTED (or the signal's NattravError) and closes every socket. */
  readonly signal?: AbortSignal;
  /** Retransmissions of each request. @default {@link LIFETIME_TIMING} */
  readonly timing?: UdpTiming;
  /** Called as each probe ends (for logs and tests). */
  readonly onProbe?: (event: LifetimeProbeEvent) => void;
}

/** What the measurement found. */
export interface MappingLifetime {
  /**
   * The measured lifetime, in ms: the longest silence a mapping survived (the bracket's
   * safe lower end). 0 when even the shortest silence tested killed the mapping.
   */
  readonly lifetimeMs: number;
  /** The shortest silence a mapping did not survive, in ms; absent when every mapping survived (the lifetime is at least lifetimeMs). */
  readonly upperMs?: number;
  /**
   * Why the search stopped: 'precise' (the bracket is narrow), 'at-least' (every mapping
   * survived the longest silence tested), 'below' (none survived the shortest), 'rounds'
   * (the round budget ran out first), 'inconsistent' (a mapping died sooner than another lived).
   */
  readonly end: SearchEnd;
  /** Mappings made (one socket each). */
  readonly probes: number;
  /** Requests sent, retransmissions included. */
  readonly packets: number;
  /** How long the measurement took, in ms. */
  readonly elapsedMs: number;
}

/**
 * Retransmissions of one request: sends at 0, 250 and 750 ms, then 1 s of waiting.
 * A dead mapping costs 1.75 s at the end of its silence; two losses in a row are survived.
 */
export const LIFETIME_TIMING: UdpTiming = { rtoMs: 250, transmissions: 3, lastWaitMs: 1_000 };

/** Which socket a datagram arrived on. */
type Via = 'x' | 'y';

/** Waits `ms` on `clock`; rejects when `signal` aborts. */
function clockSleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = (): void => {
      clock.clearTimeout(handle);
      reject(abortError(signal));
    };
    const handle = clock.setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The requests of one measurement in flight, by transaction ID, and their retransmissions on the clock. */
class Transactions {
  readonly #waiting = new Map<string, (message: StunMessage, via: Via) => void>();
  packets = 0;

  constructor(
    readonly clock: Clock,
    readonly timing: UdpTiming,
  ) {}

  /** A datagram from the server arrived on `via`: hand it to its transaction. */
  deliver(data: Uint8Array, via: Via): void {
    const message = decodeDatagram(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    if (message === undefined || (message.cls !== MessageClass.SuccessResponse && message.cls !== MessageClass.ErrorResponse)) return;
    this.#waiting.get(Buffer.from(message.transactionId).toString('hex'))?.(message, via);
  }

  /**
   * Sends `request` on `socket` on the retransmission schedule until `settle` returns a
   * value for an arriving answer (undefined: keep waiting); resolves undefined when the
   * schedule runs out. `settle` may throw to fail the transaction.
   */
  run<T>(socket: LifetimeSocket, request: StunMessage, signal: AbortSignal, settle: (message: StunMessage, via: Via) => T | undefined): Promise<T | undefined> {
    const bytes = encodeMessage(request, { fingerprint: true });
    const key = Buffer.from(request.transactionId).toString('hex');
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(abortError(signal));
        return;
      }
      let timer: TimerHandle | undefined;
      let sent = 0;
      let rto = this.timing.rtoMs;
      const finish = (): void => {
        this.clock.clearTimeout(timer);
        this.#waiting.delete(key);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        finish();
        reject(abortError(signal));
      };
      this.#waiting.set(key, (message, via) => {
        let value: T | undefined;
        try {
          value = settle(message, via);
        } catch (err) {
          finish();
          reject(err);
          return;
        }
        if (value === undefined) return;
        finish();
        resolve(value);
      });
      const send = (): void => {
        sent++;
        this.packets++;
        socket.send(bytes);
        if (sent < this.timing.transmissions) {
          timer = this.clock.setTimeout(send, rto);
          rto *= 2;
        } else {
          timer = this.clock.setTimeout(() => {
            finish();
            resolve(undefined);
          }, this.timing.lastWaitMs);
        }
      };
      signal.addEventListener('abort', onAbort, { once: true });
      send();
    });
  }
}

/** An error response's code and reason, for messages. */
function describeError(message: StunMessage): string {
  const error = getErrorCode(message);
  return error === undefined ? 'an error without ERROR-CODE' : `${error.code} ${error.reason}`;
}

/** One measurement: its sockets, its transactions and what it learnt. */
class Measurement {
  readonly #io: LifetimeIo;
  readonly #book: Transactions;
  readonly #onProbe: ((event: LifetimeProbeEvent) => void) | undefined;
  probes = 0;

  constructor(options: MeasureLifetimeOptions, book: Transactions) {
    this.#io = options.io;
    this.#book = book;
    this.#onProbe = options.onProbe;
  }

  /** Steps 1-3 for one silence: resolves whether the mapping survived it. */
  async probe(y: LifetimeSocket, silenceMs: number, signal: AbortSignal): Promise<boolean> {
    throwIfAborted(signal);
    const x = await this.#io.open((data) => this.#book.deliver(data, 'x'));
    this.probes++;
    try {
      // 1. The mapping is made, and X learns its public port.
      const mapped = await this.#book.run(x, addRequestPadding(StunMessage.request(Method.Binding)), signal, (message, via) => {
        if (via !== 'x') return undefined;
        if (message.cls === MessageClass.ErrorResponse) throw new NattravError(ErrorCode.BrokerError, `the server refused a Binding request: ${describeError(message)}`);
        const address = getXorMappedAddress(message);
        if (address === undefined) throw new NattravError(ErrorCode.Protocol, 'the server answered a Binding request without XOR-MAPPED-ADDRESS');
        return address;
      });
      if (mapped === undefined) throw new NattravError(ErrorCode.BrokerUnreachable, 'broker unreachable: no answer to a Binding request while measuring the mapping lifetime');
      // 2. Silence.
      await clockSleep(this.#book.clock, silenceMs, signal);
      // 3. Y asks for an answer to X's mapping.
      const ask = StunMessage.request(Method.Binding).add(AttrType.ResponsePort, encodeResponsePort(mapped.port));
      const heard = await this.#book.run(y, addRequestPadding(ask), signal, (message, via) => {
        if (via === 'x') return true;
        const what = message.cls === MessageClass.ErrorResponse ? `answered ${describeError(message)}` : 'answered the asking socket';
        throw new NattravError(ErrorCode.Protocol, `the server does not support RESPONSE-PORT (RFC 5780 §7.5): it ${what}; the mapping lifetime cannot be measured against it`);
      });
      const alive = heard === true;
      this.#onProbe?.({ silenceMs, alive });
      return alive;
    } finally {
      x.close();
    }
  }

  /** Runs one round's probes at once; a probe made pointless by another's death is cancelled (lifetime-search.ts step 2). */
  async round(y: LifetimeSocket, silences: readonly number[], before: LifetimeBracket, outer: AbortSignal): Promise<LifetimeBracket> {
    let bracket: LifetimeBracket = { ...before, rounds: before.rounds + 1 };
    const failed = new AbortController();
    const cancels = silences.map(() => new AbortController());
    const results = await Promise.allSettled(
      silences.map(async (silenceMs, i) => {
        const own = (cancels[i] as AbortController).signal;
        try {
          const alive = await this.probe(y, silenceMs, AbortSignal.any([outer, failed.signal, own]));
          bracket = recordProbe(bracket, silenceMs, alive);
          silences.forEach((other, j) => {
            if (j !== i && pointless(bracket, other)) (cancels[j] as AbortController).abort();
          });
        } catch (err) {
          if (own.aborted && !outer.aborted && !failed.signal.aborted) return; // cancelled: nothing to learn from it
          failed.abort(err);
          throw err;
        }
      }),
    );
    if (outer.aborted) throw abortError(outer);
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof NattravError && r.reason.code === ErrorCode.Aborted));
    if (rejected !== undefined) throw rejected.reason;
    if (failed.signal.aborted) throw failed.signal.reason;
    return bracket;
  }
}

/**
 * Measures how long the NAT between here and the server keeps an idle UDP mapping
 * (see the module comment and lifetime-search.ts). Needs a server that honours
 * RESPONSE-PORT (a nattrav broker, coturn); ERR_PROTOCOL otherwise, ERR_BROKER_UNREACHABLE
 * when it does not answer. Every socket is closed when it settles.
 */
export async function measureMappingLifetime(options: MeasureLifetimeOptions): Promise<MappingLifetime> {
  if (options === null || typeof options !== 'object' || typeof options.io?.open !== 'function') {
    throw new NattravError(ErrorCode.InvalidArgument, 'measureMappingLifetime needs options with io (the sockets to measure with)');
  }
  const settings = searchSettings(options);
  const clock = options.clock ?? systemClock;
  const outer = options.signal ?? new AbortController().signal;
  throwIfAborted(outer);
  const started = clock.now();
  const book = new Transactions(clock, options.timing ?? LIFETIME_TIMING);
  const measurement = new Measurement(options, book);
  const y = await options.io.open((data) => book.deliver(data, 'y'));
  try {
    let bracket = EMPTY_BRACKET;
    for (;;) {
      const stop = searchEnd(bracket, settings);
      const silences = stop === undefined ? nextRound(bracket, settings) : [];
      const end = stop ?? (silences.length === 0 ? 'precise' : undefined);
      if (end !== undefined) {
        return {
          lifetimeMs: bracket.aliveMs,
          ...(bracket.deadMs === undefined ? {} : { upperMs: bracket.deadMs }),
          end,
          probes: measurement.probes,
          packets: book.packets,
          elapsedMs: clock.now() - started,
        };
      }
      bracket = await measurement.round(y, silences, bracket, outer);
    }
  } finally {
    y.close();
  }
}
