/**
 * The initiator: ask the broker for a URI, learn the recipient's endpoints, and
 * open a direct TCP connection by simultaneous open. A failed attempt is retried
 * from a fresh local port (a new exchange), as the NatTrav paper does.
 */
import { performance } from 'node:perf_hooks';
import { toHostPort } from '../common/endpoint.js';
import { startPhase, throwIfAborted } from '../common/signal.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addUri } from '../wire/nattrav.js';
import { runAttempt } from './attempt.js';
import type { NattravSocket } from './info.js';
import { DEFAULT_BROKER_PORT, PEER_DEFAULTS, type ConnectOptions } from './options.js';
import { checkUri, positiveInt } from './validate.js';

/** Errors after which another attempt cannot help. */
const FINAL_CODES: ReadonlySet<string> = new Set([
  ErrorCode.UnknownUri,
  ErrorCode.BrokerUnreachable,
  ErrorCode.RecipientUnreachable,
  ErrorCode.Aborted,
  ErrorCode.InvalidArgument,
]);

/**
 * Connects to the peer registered as `options.uri`. Resolves with a connected
 * `net.Socket` whose other end is the recipient's socket; its `nattrav`
 * property says how it was made. Rejects with a {@link NattravError}.
 */
export async function connect(options: ConnectOptions): Promise<NattravSocket> {
  throwIfAborted(options.signal);
  const broker = toHostPort(options.broker, 'broker', DEFAULT_BROKER_PORT);
  const uri = checkUri(options.uri);
  const timeoutMs = positiveInt(options.timeoutMs, PEER_DEFAULTS.timeoutMs, 'timeoutMs');
  const maxAttempts = positiveInt(options.maxAttempts, PEER_DEFAULTS.maxAttempts, 'maxAttempts');
  const exchangeTimeoutMs = positiveInt(options.exchangeTimeoutMs, PEER_DEFAULTS.exchangeTimeoutMs, 'exchangeTimeoutMs');
  const punchTimeoutMs = positiveInt(options.punchTimeoutMs, PEER_DEFAULTS.punchTimeoutMs, 'punchTimeoutMs');
  const started = performance.now();
  const whole = startPhase(options.signal, timeoutMs, `connecting to ${uri}`);
  let lastError: NattravError | undefined;
  try {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      try {
        const request = StunMessage.request(Method.Connect);
        addUri(request, uri);
        return await runAttempt({ broker, request, role: 'initiator', uri, signal: whole.signal, exchangeTimeoutMs, punchTimeoutMs, started, attempt });
      } catch (err) {
        if (whole.signal.aborted) throw whole.error();
        const error = isNattravError(err) ? err : new NattravError(ErrorCode.ConnectFailed, String(err), { cause: err });
        if (FINAL_CODES.has(error.code)) throw error;
        lastError = error;
      }
    }
    throw new NattravError(
      ErrorCode.ConnectFailed,
      `could not connect to ${uri}: ${maxAttempts} attempt(s) failed; last: ${lastError?.message ?? 'unknown'}`,
      { cause: lastError },
    );
  } finally {
    whole.dispose();
  }
}
