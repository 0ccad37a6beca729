/** What every nattrav connection reports about itself, on both sides. */
import type { Socket } from 'node:net';
import type { StrategyName } from '../nat/strategy.js';
import type { TransportAddress } from '../wire/types.js';

/**
 * How a connection was made: `lan` (private endpoint), `public` (the recipient
 * listens), `reversal` (the initiator listens), `direct` (TCP simultaneous
 * open), `predicted` (sequential port prediction), `birthday` (random-port
 * probing) or `relay` (through the broker).
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
  /** The other peer's private endpoints, as it reported them. */
  readonly peerPrivateEndpoints: readonly TransportAddress[];
  /** Milliseconds from the start of connect() (initiator) or the broker's request (recipient) until usable. */
  readonly setupMs: number;
  /** Which attempt succeeded (1 = the first). The recipient sees 1: each attempt is new to it. */
  readonly attempts: number;
  /** The attempt ID, hex. */
  readonly attemptId: string;
  /** Every strategy tried on our side, failures first, ending with the one that succeeded. */
  readonly trace: readonly StrategyTrace[];
  /** With TLS: the other peer's URI from its verified certificate. */
  readonly peerUri?: string;
  /** True when the socket is a TLS 1.3 socket with both ends authenticated. */
  readonly tls: boolean;
}

/** A connected `net.Socket` carrying its {@link ConnectionInfo}. */
export type NattravSocket = Socket & { readonly nattrav: ConnectionInfo };

/** Attaches `info` to `socket` as a read-only `nattrav` property. */
export function attachInfo(socket: Socket, info: ConnectionInfo): NattravSocket {
  Object.defineProperty(socket, 'nattrav', { value: Object.freeze(info), enumerable: false, writable: false });
  return socket as NattravSocket;
}

/** The {@link ConnectionInfo} of a socket nattrav made, or undefined for any other socket. */
export function connectionInfo(socket: Socket): ConnectionInfo | undefined {
  return (socket as Partial<NattravSocket>).nattrav;
}
