/**
 * The initiator: ask the broker for a URI, learn the recipient's endpoints, and
 * open a direct TCP connection by simultaneous open. A failed attempt is retried
 * from a fresh local port (a new exchange), as the NatTrav paper does.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { toHostPort, toTransportAddress, type HostPort } from '../common/endpoint.js';
import { startPhase, throwIfAborted } from '../common/signal.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addUri } from '../wire/nattrav.js';
import { runExchange } from './exchange.js';
import { attachInfo, type NattravSocket } from './info.js';
import { DEFAULT_BROKER_PORT, PEER_DEFAULTS, type ConnectOptions } from './options.js';
import { helloAsInitiator, simultaneousOpen } from './punch.js';
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
        const socket = await attemptOnce(broker, uri, whole.signal, exchangeTimeoutMs, punchTimeoutMs);
        return finish(socket, uri, attempt, started);
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

interface Established {
  socket: Socket;
  attemptId: Uint8Array;
  publicEndpoint: import('../wire/types.js').TransportAddress;
  peerPrivateEndpoints: import('../wire/types.js').TransportAddress[];
}

async function attemptOnce(broker: HostPort, uri: string, signal: AbortSignal, exchangeTimeoutMs: number, punchTimeoutMs: number): Promise<Established> {
  const request = StunMessage.request(Method.Connect);
  addUri(request, uri);
  const exchange = startPhase(signal, exchangeTimeoutMs, `asking the broker for ${uri}`);
  let result;
  try {
    result = await runExchange(broker, request, exchange.signal).catch((err: unknown) => {
      throw exchange.signal.aborted && !signal.aborted ? exchange.error() : err;
    });
  } finally {
    exchange.dispose();
  }
  const punch = startPhase(signal, punchTimeoutMs, `opening the direct connection to ${uri}`);
  let socket: Socket | undefined;
  try {
    socket = await simultaneousOpen({
      localAddress: result.localAddress,
      localPort: result.localPort,
      remote: result.peerPublicEndpoint,
      startDelayMs: result.startDelayMs,
      signal: punch.signal,
    });
    await helloAsInitiator(socket, result.attemptId, punch.signal);
    return { socket, attemptId: result.attemptId, publicEndpoint: result.publicEndpoint, peerPrivateEndpoints: result.peerPrivateEndpoints };
  } catch (err) {
    socket?.destroy();
    throw err;
  } finally {
    punch.dispose();
  }
}

function finish(established: Established, uri: string, attempts: number, started: number): NattravSocket {
  const { socket } = established;
  return attachInfo(socket, {
    path: 'direct',
    role: 'initiator',
    uri,
    local: toTransportAddress(socket.localAddress ?? '0.0.0.0', socket.localPort ?? 0),
    remote: toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0),
    publicEndpoint: established.publicEndpoint,
    peerPrivateEndpoints: established.peerPrivateEndpoints,
    setupMs: Math.round(performance.now() - started),
    attempts,
    attemptId: Buffer.from(established.attemptId).toString('hex'),
  });
}
