/** What every nattrav connection reports about itself, on both sides. */
import type { Socket } from 'node:net';
import type { TransportAddress } from '../wire/types.js';

/** How a connection was made. Later strategies add values. */
export type ConnectionPath = 'direct';

/** Which end of the connection this is. */
export type ConnectionRole = 'initiator' | 'recipient';

/** Facts about one established connection. */
export interface ConnectionInfo {
  /** How the connection was made: `direct` is TCP simultaneous open through both NATs. */
  readonly path: ConnectionPath;
  /** Which side we are. */
  readonly role: ConnectionRole;
  /** The recipient's URI. */
  readonly uri: string;
  /** Our end of the socket (as the kernel sees it). */
  readonly local: TransportAddress;
  /** The other end of the socket: the other peer's public (NAT) endpoint, never the broker. */
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
