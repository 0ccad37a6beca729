/** What every nattrav connection reports about itself, on both sides. */
import type { Socket } from 'node:net';
import { breakOnAddressLoss } from './mobility.js';
import { performance } from 'node:perf_hooks';
import { ErrorCode, NattravError } from '../errors.js';
import type { StrategyName } from '../nat/strategy.js';
import type { TransportAddress } from '../wire/types.js';

/**
 * How a connection was made: `lan` (private endpoint), `public` (the recipient
 * listens), `reversal` (the initiator listens), `direct` (TCP simultaneous
 * open), `predicted` (sequential port prediction), `birthday` (random-port
 * probing), `relay` (through the broker) or `portmap` (to the port the
 * recipient's gateway maps for it).
 */
export type ConnectionPath = StrategyName;

/** One step of trying strategies, as reported by `connect({ onTrace })` and kept in the info. */
export interface StrategyTrace {
  /** The attempt (1 = the first) the strategy ran in. */
  readonly attempt: number;
  readonly strategy: StrategyName;
  readonly outcome: 'started' | 'succeeded' | 'failed';
  /** Milliseconds the strategy ran (0 when it starts). */
  readonly ms: number;
  /** Why it failed. */
  readonly error?: string;
  /** The address family of the attempt, when the initiator raced IPv6 against IPv4 (connect-race.ts). */
  readonly family?: 4 | 6;
}

/** Which end of the connection this is. */
export type ConnectionRole = 'initiator' | 'recipient';

/** Facts about one established connection. */
export interface ConnectionInfo {
  /** How the connection was made (see {@link ConnectionPath}). */
  readonly path: ConnectionPath;
  /** Which side we are. */
  readonly role: ConnectionRole;
  /** The recipient's URI. */
  readonly uri: string;
  /** Our end of the socket (as the kernel sees it). */
  readonly local: TransportAddress;
  /** The other end of the socket: the other peer's public (NAT) endpoint, or the broker for `relay`. */
  readonly remote: TransportAddress;
  /** Our own public endpoint for this attempt, as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  /**
   * The address family the attempt ran in (that of our exchange with the broker, so of both
   * peers' endpoints; for `relay`, of our connection to the broker): 4 or 6. An initiator
   * racing both families (connect-race.ts) reports the one that won.
   */
  readonly family: 4 | 6;
  /** The other peer's private endpoints, as it reported them. */
  readonly peerPrivateEndpoints: readonly TransportAddress[];
  /** Milliseconds from the start of connect() (initiator) or the broker's request (recipient) until usable (TLS included). */
  readonly setupMs: number;
  /** Milliseconds of that until the traversal was done (the Hello), before TLS: what the protocol's floor bounds. */
  readonly traversalMs: number;
  /** Which attempt succeeded (1 = the first). The recipient sees 1: each attempt is new to it. */
  readonly attempts: number;
  /** The attempt ID, hex. */
  readonly attemptId: string;
  /** Every strategy tried on our side, failures first, ending with the one that succeeded. */
  readonly trace: readonly StrategyTrace[];
  /** With TLS: the other peer's URI from its verified certificate. */
  readonly peerUri?: string;
  /** With TLS: the fingerprint of the other peer's verified key (lowercase base32 SHA-256 of its SPKI). */
  readonly peerKeyFingerprint?: string;
  /**
   * With TLS: what vouched for the other peer's key: its self-certifying URI, a trusted CA, or
   * `key`: the key pinned by the user, remembered for the URI, or given by the broker for a
   * plain name (only as good as the broker's authentication the first time).
   */
  readonly peerVouchedBy?: 'self-certifying' | 'ca' | 'key';
  /** True when the socket is a TLS 1.3 socket with both ends authenticated. */
  readonly tls: boolean;
  /** For `relay`: the quotas the broker announced for this connection (0 = unlimited). */
  readonly relayQuota?: RelayQuota;
  /** Application bytes received so far (after the Hello and, with TLS, decrypted). */
  readonly bytesIn: number;
  /** Application bytes written so far (handed to the socket, possibly not yet sent). */
  readonly bytesOut: number;
  /** Milliseconds since the connection was established, until it closed. */
  readonly durationMs: number;
  /** How the connection ended, once it has: resolves on the socket's 'close' and never rejects. */
  readonly closed: Promise<ConnectionClosed>;
}

/** The quotas of a relayed connection (0 = unlimited). */
export interface RelayQuota {
  readonly maxBytes: number;
  readonly maxDurationMs: number;
}

/**
 * Why a connection ended:
 * - `closed`: both sides ended their writes (FIN, or TLS close_notify) and nothing failed;
 * - `reset`: the other side (or a middlebox) reset the connection, or a write hit a closed peer;
 * - `timeout`: TCP keepalive found the other side gone;
 * - `relay-quota`: the broker's relay cut the connection at the quota it announced;
 * - `destroyed`: this side destroyed the socket before both directions had ended;
 * - `error`: any other socket error (the `error` says which).
 */
export type CloseReason = 'closed' | 'reset' | 'timeout' | 'relay-quota' | 'destroyed' | 'error';

/** What {@link ConnectionInfo.closed} resolves with. */
export interface ConnectionClosed {
  readonly reason: CloseReason;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly durationMs: number;
  /** Whether the other side ended its direction (FIN / close_notify). */
  readonly remoteEnded: boolean;
  /** Whether we ended our direction and every byte we wrote was handed to the kernel. */
  readonly localEnded: boolean;
  /** For every reason but `closed`: an `ERR_CONNECTION_BROKEN` error whose message says what happened. */
  readonly error?: NattravError;
}

/** The facts fixed at setup; {@link attachInfo} adds the live counters and `closed`. */
export type ConnectionFacts = Omit<ConnectionInfo, 'bytesIn' | 'bytesOut' | 'durationMs' | 'closed' | 'family'>;

/** A connected `net.Socket` carrying its {@link ConnectionInfo}. */
export type NattravSocket = Socket & { readonly nattrav: ConnectionInfo };

/**
 * TCP keepalive on an established connection, in ms of idleness before the first probe.
 * libuv then probes every second, ten times: a peer that vanished is found within about
 * 25 s of silence, and NAT mappings see traffic well within their TCP timeouts.
 */
export const KEEPALIVE_IDLE_MS = 15_000;

/**
 * Attaches `facts` to `socket` as a read-only `nattrav` property with live byte counts and
 * a `closed` promise. `raw` is the TCP socket under a TLS socket (keepalive and the relay's
 * byte count live there); for a plain socket it is the socket itself.
 */
export function attachInfo(socket: Socket, facts: ConnectionFacts, raw: Socket = socket): NattravSocket {
  const established = performance.now();
  // Bytes already read but not consumed (the Hello's remainder) are application data.
  const baseIn = socket.bytesRead - socket.readableLength;
  const baseOut = socket.bytesWritten;
  const rawBase = raw.bytesRead + raw.bytesWritten;
  let endedAt: number | undefined;
  let remoteEnded = false;
  let localEnded = false;
  raw.setKeepAlive(true, KEEPALIVE_IDLE_MS);
  if (raw !== socket) rawSockets.set(socket, raw);
  const bytesIn = (): number => socket.bytesRead - baseIn;
  const bytesOut = (): number => socket.bytesWritten - baseOut;
  const durationMs = (): number => Math.round((endedAt ?? performance.now()) - established);
  // libuv (Node 20) can report a reset that arrives while data is queued as a plain end of
  // stream (libuv #2319). A relay cuts at its quota with a reset: an "end" that comes at the
  // quota is that cut, not the other peer ending, and must not pass for a clean close.
  let cutAtQuota = false;
  socket.once('end', () => {
    remoteEnded = true;
    const quota = facts.relayQuota;
    if (quota === undefined) return;
    const relayBytes = raw.bytesRead + raw.bytesWritten - rawBase;
    const nearBytes = quota.maxBytes > 0 && relayBytes >= relayCutThreshold(quota.maxBytes);
    const nearTime = quota.maxDurationMs > 0 && performance.now() - established >= quota.maxDurationMs - RELAY_CUT_TIME_SLACK_MS;
    if (nearBytes || nearTime) {
      cutAtQuota = true;
      socket.destroy();
    }
  });
  socket.once('finish', () => (localEnded = true));
  const closed = new Promise<ConnectionClosed>((resolve) => {
    const onClose = (): void => {
      endedAt = performance.now();
      const counts = { bytesIn: bytesIn(), bytesOut: bytesOut(), durationMs: durationMs(), remoteEnded, localEnded };
      const relayBytes = raw.bytesRead + raw.bytesWritten - rawBase;
      resolve({ ...counts, ...(cutAtQuota ? quotaCut(facts.relayQuota as RelayQuota, relayBytes, counts.durationMs) : closeReason(socket.errored, counts, facts.relayQuota, relayBytes)) });
    };
    // A reset can close the socket between the handshake and here.
    if (socket.closed) queueMicrotask(onClose);
    else socket.once('close', onClose);
  });
  const info = Object.defineProperties(
    { ...facts, family: facts.publicEndpoint.family === 'IPv6' ? 6 : 4, closed },
    {
      bytesIn: { get: bytesIn, enumerable: true },
      bytesOut: { get: bytesOut, enumerable: true },
      durationMs: { get: durationMs, enumerable: true },
    },
  ) as ConnectionInfo;
  Object.defineProperty(socket, 'nattrav', { value: Object.freeze(info), enumerable: false, writable: false });
  // Until the caller has the socket (handOver), an error (a reset right after setup) is only
  // recorded for `closed`: it must not crash the process from inside nattrav.
  const swallow = (): void => undefined;
  socket.on('error', swallow);
  unclaimed.set(socket, swallow);
  return socket as NattravSocket;
}

/** The TCP socket under each TLS socket attachInfo was given (see {@link resetConnection}). */
const rawSockets = new WeakMap<Socket, Socket>();

/**
 * Aborts a nattrav connection with a TCP reset (RST) where it can, so the other peer sees
 * `reset` (ECONNRESET) rather than a clean end: for passing on a failure that must not pass
 * for a finished transfer. Under TLS the reset goes out on the TCP socket beneath (no
 * close_notify). A socket that cannot be reset (already closed) is destroyed.
 */
export function resetConnection(socket: Socket): void {
  let raw = socket;
  for (let below = rawSockets.get(raw); below !== undefined && below !== raw; below = rawSockets.get(raw)) raw = below;
  if (!raw.destroyed && !raw.connecting) {
    try {
      raw.resetAndDestroy();
    } catch {
      // Not a TCP handle (a test's stream pair): a plain destroy is all there is.
    }
  }
  raw.destroy();
  socket.destroy();
}

/** The error listeners attachInfo holds until the socket is handed to the caller. */
const unclaimed = new WeakMap<Socket, () => void>();

/**
 * Gives `socket` to the caller: from here on its 'error' events are the caller's to
 * handle, as on any `net.Socket` (an error that came earlier is in `nattrav.closed`).
 */
export function handOver(socket: NattravSocket): NattravSocket {
  const swallow = unclaimed.get(socket);
  if (swallow !== undefined) socket.off('error', swallow);
  unclaimed.delete(socket);
  // A connection cannot follow its host to another network: it breaks, with a clear error, once its address is gone (mobility.ts).
  let raw: Socket = socket;
  for (let below = rawSockets.get(raw); below !== undefined && below !== raw; below = rawSockets.get(raw)) raw = below;
  breakOnAddressLoss(socket, raw.localAddress);
  return socket;
}

/** The facts of `info` without its live parts, to build the info of a socket layered on top. */
export function factsOf(info: ConnectionInfo): ConnectionFacts {
  const { bytesIn: _in, bytesOut: _out, durationMs: _ms, closed: _closed, ...facts } = info;
  return facts;
}

/**
 * An end of stream on a relayed connection this close to its byte quota is taken for the
 * quota's cut: within a tenth of the quota, or within {@link RELAY_CUT_IN_FLIGHT_BYTES}, whichever
 * is more, but never below half the quota. The relay's reset discards what was still in the broker's socket buffers towards us,
 * so we count fewer bytes than the broker did; on a busy machine that was 14% of a 2 MB quota.
 */
const RELAY_CUT_FRACTION = 0.9;
/** What a reset may discard in flight (the broker's send buffer and the path), in bytes. */
export const RELAY_CUT_IN_FLIGHT_BYTES = 512 * 1024;

/** The byte count from which an end of stream on a relayed connection is taken for the quota's cut. */
export function relayCutThreshold(maxBytes: number): number {
  return Math.max(maxBytes / 2, Math.min(maxBytes * RELAY_CUT_FRACTION, maxBytes - RELAY_CUT_IN_FLIGHT_BYTES));
}
/** ... or within this many ms of its time quota. */
const RELAY_CUT_TIME_SLACK_MS = 1_000;

/** The report of a relayed connection whose end came at the relay's quota. */
function quotaCut(quota: RelayQuota, relayBytes: number, durationMs: number): { reason: CloseReason; error: NattravError } {
  return {
    reason: 'relay-quota',
    error: new NattravError(
      ErrorCode.ConnectionBroken,
      `the broker's relay ended the connection at its quota (${describeQuota(quota)}; this connection: ${relayBytes} bytes in ${durationMs} ms): data may be missing`,
    ),
  };
}

/**
 * Decides why a connection closed, from the socket's error and what each side ended.
 * `relayBytes` is what crossed the relay in both directions (the broker's count).
 */
export function closeReason(
  errored: Error | null,
  counts: { durationMs: number; remoteEnded: boolean; localEnded: boolean },
  relayQuota: RelayQuota | undefined,
  relayBytes: number,
): { reason: CloseReason; error?: NattravError } {
  const broken = (reason: CloseReason, message: string): { reason: CloseReason; error: NattravError } => ({
    reason,
    error: new NattravError(ErrorCode.ConnectionBroken, message, errored === null ? {} : { cause: errored }),
  });
  if (errored === null) {
    if (counts.remoteEnded && counts.localEnded) return { reason: 'closed' };
    const pending = [counts.remoteEnded ? undefined : 'the other side had not ended', counts.localEnded ? undefined : 'we had not ended'];
    return broken('destroyed', `the connection was closed on this side before both directions ended (${pending.filter((p) => p !== undefined).join(', ')})`);
  }
  const code = (errored as NodeJS.ErrnoException).code ?? '';
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    if (relayQuota !== undefined && (relayQuota.maxBytes > 0 || relayQuota.maxDurationMs > 0)) {
      const quota = describeQuota(relayQuota);
      // The broker counts bytes still in flight that we never saw: half the quota is evidence enough.
      const byBytes = relayQuota.maxBytes > 0 && relayBytes >= relayQuota.maxBytes / 2;
      const byTime = relayQuota.maxDurationMs > 0 && counts.durationMs >= relayQuota.maxDurationMs - 1_000;
      if (byBytes || byTime) {
        return broken('relay-quota', `the broker's relay cut the connection at its quota (${quota}; this connection: ${relayBytes} bytes in ${counts.durationMs} ms)`);
      }
      return broken('reset', `the connection was reset (${code}); it ran through the broker's relay (quota ${quota}), so the broker or the other peer cut it`);
    }
    return broken('reset', `the connection was reset (${code}): the other peer died or aborted before ending cleanly`);
  }
  if (code === 'ETIMEDOUT') return broken('timeout', `the other side stopped answering (${code}: TCP keepalive or retransmission timed out)`);
  return broken('error', `the connection failed: ${errored.message}`);
}

function describeQuota(quota: RelayQuota): string {
  const parts = [quota.maxBytes > 0 ? `${quota.maxBytes} bytes` : undefined, quota.maxDurationMs > 0 ? `${quota.maxDurationMs / 1000} s` : undefined];
  return parts.filter((p) => p !== undefined).join(' or ');
}

/** The {@link ConnectionInfo} of a socket nattrav made, or undefined for any other socket. */
export function connectionInfo(socket: Socket): ConnectionInfo | undefined {
  return (socket as Partial<NattravSocket>).nattrav;
}
