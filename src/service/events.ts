/** The per-connection log of expose and forward: what each emits as `'event'`. */
import type { ConnectionPath } from '../peer/info.js';
import type { SpliceResult } from './splice.js';

/**
 * A connection arrived: for expose, a peer connection (`from` is the peer's verified URI
 * with TLS, else its endpoint); for forward, a local client (`from` is its endpoint).
 */
export interface ServiceAccepted {
  readonly type: 'accepted';
  /** Numbers this side's connections from 1. */
  readonly id: number;
  readonly from: string;
  /** How the peer connection was made (expose only: forward learns it at `connected`). */
  readonly path?: ConnectionPath;
}

/** forward only: the peer connection is up and the exposer said ok; bytes flow from here on. */
export interface ServiceConnected {
  readonly type: 'connected';
  readonly id: number;
  readonly path: ConnectionPath;
  /** The exposer's verified URI (TLS), else the URI asked for. */
  readonly peer: string;
  /** Milliseconds from the client's arrival until bytes could flow. */
  readonly setupMs: number;
}

/**
 * A connection ended: the per-connection log line. `bytesIn` came from the peer
 * connection (and went to the local side), `bytesOut` went to the peer; `durationMs`
 * counts from `accepted`.
 */
export interface ServiceClosed extends SpliceResult {
  readonly type: 'closed';
  readonly id: number;
  /** The other end: as in `accepted` (expose) or the exposer's URI (forward). */
  readonly peer: string;
  /** How the peer connection was made, when one was. */
  readonly path?: ConnectionPath;
  readonly durationMs: number;
}

/** One entry of the per-connection log. */
export type ServiceEvent = ServiceAccepted | ServiceConnected | ServiceClosed;
