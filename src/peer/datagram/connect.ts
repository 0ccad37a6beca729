/**
 * The initiator of a datagram channel: `connectDatagram({ broker, uri })` asks the broker
 * for a UDP channel to the peer registered as `uri` and retries failed strategies from a
 * fresh UDP socket (a new attempt), as `connect()` does for TCP.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { dialTo, resolveBrokers, toBrokerList } from '../brokers.js';
import { startPhase, throwIfAborted } from '../../common/signal.js';
import { ErrorCode, NattravError, isNattravError } from '../../errors.js';
import { strategyMask, type StrategyName } from '../../nat/strategy.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method } from '../../wire/constants.js';
import { StunMessage } from '../../wire/message.js';
import { addAttemptId, addU32, addUri } from '../../wire/nattrav.js';
import { FINAL_CODES } from '../connect.js';
import type { StrategyTrace } from '../info.js';
import { PEER_DEFAULTS, type BrokerAddress } from '../options.js';
import { checkUri, positiveInt } from '../validate.js';
import type { Dialer } from '../dialer.js';
import { dialerFromOptions, type Socks5Proxy } from '../socks5.js';
import { runDatagramAttempt } from './attempt.js';
import { DATAGRAM_KEEPALIVE_MS, DATAGRAM_PEER_TIMEOUT_MS, type DatagramChannel } from './channel.js';

/** Options of {@link connectDatagram}. */
export interface ConnectDatagramOptions {
  /** The broker to ask (the first of a list is used). */
  broker: BrokerAddress | readonly BrokerAddress[];
  /** The URI the recipient registered. */
  uri: string;
  /** Aborts the whole connect at once; nothing stays open. */
  signal?: AbortSignal;
  /** Limit on the whole connect, all attempts included, in ms. @default 30000 */
  timeoutMs?: number;
  /** Attempts (each from a fresh UDP socket) before giving up. @default 4 */
  maxAttempts?: number;
  /** Limit on the broker exchange of one attempt, in ms. @default 12000 */
  exchangeTimeoutMs?: number;
  /** Limit on the punching of one attempt, in ms. @default 5000 */
  punchTimeoutMs?: number;
  /** The CA (PEM) that issued the broker's certificate: exchanges then run over TLS and a fake broker is refused. */
  brokerCa?: string;
  /**
   * Keepalive interval of the channel, in ms: keep it below the NAT's UDP mapping
   * lifetime. At most 15000: the recipient keeps alive every 15 s, and both sides give up
   * after 60 s of silence. @default 15000
   */
  keepaliveMs?: number;
  /**
   * How TCP connections to the broker are opened; only a direct one (kind 'direct') is
   * taken. A proxy or tunnel is refused with ERR_INVALID_ARGUMENT: the channel's UDP
   * would go around it and reveal the address it hides. @default direct
   */
  dialer?: Dialer;
  /** A SOCKS5 proxy (as for `connect()`): refused with ERR_INVALID_ARGUMENT, for the same reason as a non-direct `dialer`. */
  socks5?: string | Socks5Proxy;
  /** Told when each strategy starts, succeeds or fails. */
  onTrace?: (event: StrategyTrace) => void;
}

/**
 * Opens a datagram channel to the peer registered as `options.uri` (its server must
 * listen: it gets the channel in a `'datagram'` event). Resolves with the open
 * {@link DatagramChannel}; rejects with a {@link NattravError}.
 */
export async function connectDatagram(options: ConnectDatagramOptions): Promise<DatagramChannel> {
  throwIfAborted(options.signal);
  const brokers = toBrokerList(options.broker);
  const uri = checkUri(options.uri);
  const timeoutMs = positiveInt(options.timeoutMs, PEER_DEFAULTS.timeoutMs, 'timeoutMs');
  const maxAttempts = positiveInt(options.maxAttempts, PEER_DEFAULTS.maxAttempts, 'maxAttempts');
  const exchangeTimeoutMs = positiveInt(options.exchangeTimeoutMs, PEER_DEFAULTS.exchangeTimeoutMs, 'exchangeTimeoutMs');
  const punchTimeoutMs = positiveInt(options.punchTimeoutMs, PEER_DEFAULTS.punchTimeoutMs, 'punchTimeoutMs');
  const keepaliveMs = options.keepaliveMs === undefined ? undefined : positiveInt(options.keepaliveMs, 0, 'keepaliveMs');
  if (keepaliveMs !== undefined && keepaliveMs > DATAGRAM_KEEPALIVE_MS) {
    throw new NattravError(ErrorCode.InvalidArgument, `keepaliveMs: at most ${DATAGRAM_KEEPALIVE_MS} (the recipient keeps alive every ${DATAGRAM_KEEPALIVE_MS} ms and both sides give up after ${DATAGRAM_PEER_TIMEOUT_MS} ms of silence), got ${keepaliveMs}`);
  }
  const dialer = dialerFromOptions(options);
  if (dialer !== undefined && dialer.kind !== 'direct') {
    throw new NattravError(ErrorCode.InvalidArgument, `connectDatagram: a datagram channel cannot go through ${dialer.kind}: its UDP would go around the proxy or tunnel and reveal the address it hides (use connect() for a stream)`);
  }
  const started = performance.now();
  const whole = startPhase(options.signal, timeoutMs, `opening a datagram channel to ${uri}`);
  const failed = new Set<StrategyName>();
  let lastError: NattravError | undefined;
  try {
    const targets = await resolveBrokers(brokers, whole.signal);
    const broker = dialTo(targets, 0);
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
      const request = StunMessage.request(Method.Connect);
      addUri(request, uri);
      addAttemptId(request, attemptId);
      if (failed.size > 0) addU32(request, AttrType.FailedStrategies, strategyMask(failed));
      try {
        return await runDatagramAttempt({
          broker, request, attemptId, role: 'initiator', uri, signal: whole.signal, exchangeTimeoutMs, punchTimeoutMs, started, attempt,
          ...(options.brokerCa === undefined ? {} : { brokerCa: options.brokerCa }),
          ...(keepaliveMs === undefined ? {} : { keepaliveMs }),
          ...(dialer === undefined ? {} : { dialer }),
          ...(options.onTrace === undefined ? {} : { onTrace: options.onTrace }),
        });
      } catch (err) {
        if (whole.signal.aborted) throw whole.error();
        const error = isNattravError(err) ? err : new NattravError(ErrorCode.ConnectFailed, String(err), { cause: err });
        if (FINAL_CODES.has(error.code) || error.code === ErrorCode.BrokerError) throw error;
        const strategy = (err as { strategy?: StrategyName }).strategy;
        if (strategy !== undefined) failed.add(strategy);
        lastError = error;
      }
    }
    throw new NattravError(ErrorCode.ConnectFailed, `could not open a datagram channel to ${uri}: ${maxAttempts} attempt(s) failed; last: ${lastError?.message ?? 'unknown'}`, { cause: lastError });
  } finally {
    whole.dispose();
  }
}
