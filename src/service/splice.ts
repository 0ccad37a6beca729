/**
 * Splicing a peer connection and a local TCP connection, as expose and forward do:
 * bytes both ways with back-pressure (stream pipes, nothing buffered beyond the
 * streams' high-water marks), half-close passed on (a FIN on one side becomes a FIN on
 * the other, the other direction stays open), and failure passed on (a reset or a
 * broken connection on one side resets the other, so neither end takes a cut transfer
 * for a finished one).
 */
import type { Socket } from 'node:net';
import { resetConnection, type ConnectionClosed, type NattravSocket } from '../peer/info.js';

/**
 * Why a spliced connection ended, as the per-connection log reports it:
 * - `closed`: both directions ended cleanly;
 * - `reset`: one side (see `side`) reset its connection; the other was reset in turn;
 * - `timeout`, `relay-quota`: the peer connection broke so (see {@link ConnectionClosed});
 * - `error`: another failure (the message says which);
 * - `refused`: the exposed service refused or could not be reached (the preamble said so);
 * - `busy`: a connection limit was reached (the exposer's or the forwarder's);
 * - `idle`: no byte went either way for the idle timeout; both sides were closed;
 * - `failed`: the forwarder could not make the peer connection (the message says why);
 * - `stopped`: this side was closed while the connection ran.
 */
export type ServiceCloseReason = 'closed' | 'reset' | 'timeout' | 'relay-quota' | 'error' | 'refused' | 'busy' | 'idle' | 'failed' | 'stopped';

/** How a splice ended. */
export interface SpliceResult {
  readonly reason: ServiceCloseReason;
  /** Which side failed first, for `reset` and `error` (and the peer's `timeout` / `relay-quota`). */
  readonly side?: 'peer' | 'local';
  /** What happened, for every reason but `closed`. */
  readonly message?: string;
  /** The error code behind `failed` or `error` when nattrav raised it, e.g. `ERR_UNKNOWN_URI`, `ERR_NOT_ALLOWED`. */
  readonly code?: string;
  /** Bytes that came from the peer and were handed to the local socket. */
  readonly bytesIn: number;
  /** Bytes that came from the local socket and were handed to the peer. */
  readonly bytesOut: number;
}

/** A running splice. */
export interface Splice {
  /** Settles once both sockets have closed; never rejects. */
  readonly done: Promise<SpliceResult>;
  /**
   * Ends both directions (FIN both ways), and after `graceMs` destroys whatever is still
   * open. The result's reason is then `stopped`.
   */
  stop(graceMs: number): void;
}

/** A socket's failure, if it had one. */
interface Failure {
  readonly side: 'peer' | 'local';
  readonly error: Error;
}

/**
 * Splices `peer` (a nattrav connection) and `local` (a TCP socket with allowHalfOpen).
 * `localName` names the local side in messages, e.g. "the local service". With
 * `idleTimeoutMs` (> 0), a connection over which no byte went either way for that long
 * is reset on both sides (reason `idle`): a cut, not an end of data, so neither end
 * takes it for a finished exchange. Every byte spliced crosses the peer socket, so its
 * inactivity timer sees both directions.
 */
export function splice(peer: NattravSocket, local: Socket, localName: string, idleTimeoutMs = 0): Splice {
  let failure: Failure | undefined;
  let stopped = false;
  let idle = false;
  if (idleTimeoutMs > 0) {
    peer.setTimeout(idleTimeoutMs, () => {
      idle = true;
      resetConnection(peer);
      if (!local.destroyed) local.resetAndDestroy();
    });
  }
  let graceTimer: NodeJS.Timeout | undefined;
  const localBase = { read: local.bytesRead, written: local.bytesWritten };
  peer.on('error', (error: Error) => {
    failure ??= { side: 'peer', error };
    if (!local.destroyed) local.resetAndDestroy();
  });
  local.on('error', (error: Error) => {
    failure ??= { side: 'local', error };
    resetConnection(peer);
  });
  // The peer connection can also break without an 'error' on it (a relay's quota cut
  // arrives as an end of stream): whatever breaks it resets the local side too.
  void peer.nattrav.closed.then((closed) => {
    if (closed.reason !== 'closed' && !local.destroyed) local.resetAndDestroy();
  });
  // pipe() ends the destination when the source ends: a FIN becomes a FIN.
  peer.pipe(local);
  local.pipe(peer);
  const localClosed = new Promise<void>((resolve) => {
    if (local.closed) resolve();
    else local.once('close', () => resolve());
  });
  const done = Promise.all([peer.nattrav.closed, localClosed]).then(([closed]): SpliceResult => {
    if (graceTimer !== undefined) clearTimeout(graceTimer);
    const counts = { bytesIn: local.bytesWritten - localBase.written, bytesOut: local.bytesRead - localBase.read };
    if (idle && failure === undefined && !stopped) {
      return { ...counts, reason: 'idle', message: `no byte went either way for ${idleTimeoutMs} ms (the idle timeout); both sides were reset` };
    }
    return { ...counts, ...outcome(closed, failure, stopped, localName) };
  });
  return {
    done,
    stop(graceMs: number): void {
      if (stopped) return;
      stopped = true;
      peer.end();
      local.end();
      graceTimer = setTimeout(() => {
        peer.destroy();
        local.destroy();
      }, graceMs);
    },
  };
}

/** Decides the reason from the peer's report, the first failure, and whether we stopped. */
function outcome(closed: ConnectionClosed, failure: Failure | undefined, stopped: boolean, localName: string): Pick<SpliceResult, 'reason' | 'side' | 'message'> {
  if (failure?.side === 'local') {
    const code = (failure.error as NodeJS.ErrnoException).code ?? '';
    const reset = code === 'ECONNRESET' || code === 'EPIPE';
    return {
      reason: reset ? 'reset' : 'error',
      side: 'local',
      message: reset ? `${localName} reset its connection (${code}); the peer connection was reset in turn` : `${localName}'s connection failed: ${failure.error.message}`,
    };
  }
  if (closed.reason !== 'closed' && closed.reason !== 'destroyed') {
    return { reason: closed.reason, side: 'peer', message: closed.error?.message ?? `the peer connection ended: ${closed.reason}` };
  }
  if (stopped) return { reason: 'stopped', message: 'closed on this side while the connection ran' };
  if (closed.reason === 'destroyed') return { reason: 'error', side: 'peer', message: closed.error?.message ?? 'the peer connection was destroyed' };
  return { reason: 'closed' };
}
