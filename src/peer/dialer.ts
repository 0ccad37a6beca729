/**
 * The dialer seam: every TCP connection the peer opens to a broker (the exchange of
 * each attempt, the relay, the TCP control connection of a registration) goes through
 * one {@link Dialer}, chosen with the peer option `dialer` (ConnectOptions, ServerOptions). The default, {@link DIRECT_DIALER},
 * is a plain TCP connect from a socket bound with SO_REUSEADDR; a proxy (SOCKS5) or a
 * tunnel (WebSocket, HTTP CONNECT) is another Dialer, and the peer then knows that the
 * connection's local port is not its own: it sends no mapping probes from it.
 */
import { lookup } from 'node:dns/promises';
import { performance } from 'node:perf_hooks';
import { connect as netConnect, type Socket } from 'node:net';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { abortError } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import { STRATEGY_NAMES, strategyMask, type StrategyName } from '../nat/strategy.js';
import { AttrType } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { getU32Attr } from '../wire/nattrav.js';
import { encodeU32 } from '../wire/uint.js';

/** TCP connect to the broker is one handshake; no answer in 5 s means the SYN is dropped on the way. */
export const BROKER_CONNECT_TIMEOUT_MS = 5_000;

/** Opens TCP-like connections to a host and port: directly, or through a proxy or tunnel. */
export interface Dialer {
  /**
   * 'direct' when connections are our own TCP sockets, whose local port the NAT maps
   * like any other (mapping probes and punching from it make sense); any other value
   * names the proxy or tunnel (e.g. 'socks5'), for traces and messages.
   */
  readonly kind: string;
  /**
   * Connects to `target` (a name is resolved where the dialer decides: locally, or by
   * the proxy) and resolves with the connected socket, with `allowHalfOpen` set (a relayed
   * connection half-closes like TCP) and no delay. Rejects with a NattravError:
   * ERR_BROKER_UNREACHABLE when the target cannot be reached, the proxy's own code when
   * the proxy fails; with `signal`'s reason when it aborts, leaving nothing open.
   */
  dial(target: HostPort, signal: AbortSignal): Promise<Socket>;
  /**
   * What the last dial to `target` tried, one entry per step ("how: why it failed", a step
   * cut off by the signal included), for a dialer that tries several ways; undefined or
   * empty: the dial's own error says it all.
   */
  stepsTried?(target: HostPort): readonly string[];
}

/**
 * A plain TCP connect; failures become ERR_BROKER_UNREACHABLE. The socket is bound
 * explicitly (to the wildcard address, port 0) so that libuv sets SO_REUSEADDR on it:
 * an auto-bound socket lacks it, and the punch could then not reuse its port while the
 * exchange is still open.
 */
export const DIRECT_DIALER: Dialer = {
  kind: 'direct',
  dial: dialDirect,
};

/** How long each direct dial's TCP handshake took (SYN to SYN/ACK: one round trip), in ms. */
const handshakes = new WeakMap<Socket, number>();

/**
 * The TCP handshake time of a socket {@link DIRECT_DIALER} opened, in ms (one round trip to
 * the broker, measured by traffic that exists anyway); undefined for another dialer's socket.
 */
export function handshakeMsOf(socket: Socket): number | undefined {
  return handshakes.get(socket);
}

async function dialDirect(broker: HostPort, signal: AbortSignal): Promise<Socket> {
  let resolved: { address: string; family: number };
  try {
    resolved = await lookup(broker.host);
  } catch (err) {
    throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: cannot resolve ${broker.host}`, { cause: err, address: broker.host, port: broker.port });
  }
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const where = formatEndpoint({ address: resolved.address, port: broker.port });
    const handshakeStarted = performance.now();
    const socket = netConnect({
      host: resolved.address,
      port: broker.port,
      localAddress: resolved.family === 6 ? '::' : '0.0.0.0',
      // The relay strategy keeps this socket as the connection, which half-closes like TCP.
      allowHalfOpen: true,
    });
    socket.setNoDelay(true);
    const cleanup = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
    };
    const onAbort = (): void => {
      cleanup();
      socket.destroy();
      reject(abortError(signal));
    };
    // A refused connection answers at once; silence means a firewall drops the SYN.
    const timer = setTimeout(() => {
      cleanup();
      socket.destroy();
      reject(
        new NattravError(
          ErrorCode.BrokerUnreachable,
          `broker unreachable: no answer from ${where} over TCP within ${BROKER_CONNECT_TIMEOUT_MS} ms ` +
            `(outbound TCP to port ${broker.port} seems blocked; a network that lets only web traffic out (TCP 80/443) needs an HTTP tunnel)`,
          { address: resolved.address, port: broker.port },
        ),
      );
    }, BROKER_CONNECT_TIMEOUT_MS);
    const onError = (err: Error & { code?: string }): void => {
      cleanup();
      socket.destroy();
      reject(new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: ${where} (${err.code ?? err.message})`, { cause: err, address: resolved.address, port: broker.port }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', onError);
    socket.once('connect', () => {
      cleanup();
      handshakes.set(socket, performance.now() - handshakeStarted);
      resolve(socket);
    });
  });
}

/**
 * The registration transport for `requested` (ServerOptions.registerTransport) with
 * `dialer`: through a proxy or tunnel only TCP passes, so 'auto' becomes 'tcp' and 'udp'
 * is refused (ERR_INVALID_ARGUMENT naming both).
 */
export function registerTransportOf(requested: unknown, dialer: Dialer | undefined): 'auto' | 'udp' | 'tcp' {
  const transport = requested ?? 'auto';
  if (transport !== 'auto' && transport !== 'udp' && transport !== 'tcp') {
    throw new NattravError(ErrorCode.InvalidArgument, `registerTransport: expected 'auto', 'udp' or 'tcp', got ${String(transport)}`);
  }
  if (dialer === undefined || dialer.kind === 'direct') return transport;
  if (transport === 'udp') {
    throw new NattravError(ErrorCode.InvalidArgument, `registerTransport 'udp' cannot work through ${dialer.kind}: only TCP passes a proxy or tunnel (use 'tcp' or 'auto')`);
  }
  return 'tcp';
}

/** The {@link Dialer.kind}s of a WebSocket to the broker (peer/web/): a network that passes only the web. */
export const WEB_DIALER_KINDS: ReadonlySet<string> = new Set(['ws', 'wss']);

/**
 * The strategies that cannot work through `dialer`: through a proxy or tunnel our
 * connections have no local port of our own, so nothing can listen on it or punch from
 * it. What remains is connecting out to the other peer's public endpoint (`public`), or to
 * the address its SOCKS5 proxy bound for it (`socks5-bind`), and the broker's `relay`; over
 * the web ({@link WEB_DIALER_KINDS}) only the broker is reached, so only its `relay`. None
 * for the direct dialer.
 */
export function unusableStrategies(dialer: Dialer | undefined): StrategyName[] {
  if (dialer === undefined || dialer.kind === 'direct') return [];
  if (WEB_DIALER_KINDS.has(dialer.kind)) return STRATEGY_NAMES.filter((name) => name !== 'relay');
  return STRATEGY_NAMES.filter((name) => name !== 'public' && name !== 'relay' && name !== 'socks5-bind');
}

/**
 * Adds {@link unusableStrategies} of `dialer`, as it is now, to the FAILED-STRATEGIES of
 * `connect` (an initiator's Connect request, about to be sent), so the broker plans what
 * can work at once. Called once the exchange's connection is open: a fallback dialer
 * knows it goes over the web only after its first dial.
 */
export function claimUnusable(connect: StunMessage, dialer: Dialer | undefined): void {
  const unusable = unusableStrategies(dialer);
  if (unusable.length === 0) return;
  const value = encodeU32(((getU32Attr(connect, AttrType.FailedStrategies) ?? 0) | strategyMask(unusable)) >>> 0);
  const index = connect.attributes.findIndex((a) => a.type === AttrType.FailedStrategies);
  if (index < 0) connect.add(AttrType.FailedStrategies, value);
  else connect.attributes[index] = { type: AttrType.FailedStrategies, value };
}
