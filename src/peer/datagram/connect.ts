/**
 * The initiator of a datagram channel: `connectDatagram({ broker, uri })` asks the broker
 * for a UDP channel to the peer registered as `uri` and retries failed strategies from a
 * fresh UDP socket (a new attempt), as `connect()` does for TCP.
 */
import { performance } from 'node:perf_hooks';
import { brokerFailed, describeTarget, dialTo, resolveBrokers, type BrokerTarget } from '../brokers.js';
import { startPhase } from '../../common/signal.js';
import { ErrorCode, NattravError, isNattravError } from '../../errors.js';
import type { StrategyName } from '../../nat/strategy.js';
import { checkConnectOptions, connectRequest, FINAL_CODES } from '../connect.js';
import type { StrategyTrace } from '../info.js';
import type { BrokerAddress, CommonConnectOptions } from '../options.js';
import { positiveInt } from '../validate.js';
import type { Dialer } from '../dialer.js';
import { dialerFromOptions, type Socks5Proxy } from '../socks5.js';
import { runDatagramAttempt } from './attempt.js';
import { DATAGRAM_KEEPALIVE_MS, DATAGRAM_PEER_TIMEOUT_MS, type DatagramChannel } from './channel.js';

/** Options of {@link connectDatagram}. */
export interface ConnectDatagramOptions extends CommonConnectOptions {
  /** The broker to ask; with a list, the next is asked while one does not answer (as `connect()` does). */
  broker: BrokerAddress | readonly BrokerAddress[];
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
  /** Called when a broker of several did not answer and the next one is tried (`broker`: which, for logs). */
  onBrokerFailed?: (event: { readonly broker: string; readonly error: NattravError }) => void;
}

/**
 * Opens a datagram channel to the peer registered as `options.uri` (its server must
 * listen: it gets the channel in a `'datagram'` event). Resolves with the open
 * {@link DatagramChannel}; rejects with a {@link NattravError}.
 */
export async function connectDatagram(options: ConnectDatagramOptions): Promise<DatagramChannel> {
  const { brokers, uri, timeoutMs, maxAttempts, exchangeTimeoutMs, punchTimeoutMs } = checkConnectOptions(options);
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
    let current = 0;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const { attemptId, request } = connectRequest(uri, failed);
      try {
        return await runDatagramAttempt({
          broker: dialTo(targets, current), request, attemptId, role: 'initiator', uri, signal: whole.signal, exchangeTimeoutMs, punchTimeoutMs, started, attempt,
          ...(options.brokerCa === undefined ? {} : { brokerCa: options.brokerCa }),
          ...(keepaliveMs === undefined ? {} : { keepaliveMs }),
          ...(dialer === undefined ? {} : { dialer }),
          ...(options.onTrace === undefined ? {} : { onTrace: options.onTrace }),
        });
      } catch (err) {
        if (whole.signal.aborted) throw whole.error();
        const error = isNattravError(err) ? err : new NattravError(ErrorCode.ConnectFailed, String(err), { cause: err });
        const strategy = (err as { strategy?: StrategyName }).strategy;
        if (brokerFailed(error, strategy) && current + 1 < targets.length) {
          // This broker does not answer: the next one of the list gets the same attempt.
          options.onBrokerFailed?.({ broker: describeTarget(targets[current] as BrokerTarget), error });
          current++;
          attempt--;
          continue;
        }
        if (FINAL_CODES.has(error.code) || error.code === ErrorCode.BrokerError) throw error;
        if (strategy !== undefined) failed.add(strategy);
        lastError = error;
      }
    }
    throw new NattravError(ErrorCode.ConnectFailed, `could not open a datagram channel to ${uri}: ${maxAttempts} attempt(s) failed; last: ${lastError?.message ?? 'unknown'}`, { cause: lastError });
  } finally {
    whole.dispose();
  }
}
