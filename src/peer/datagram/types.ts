/** The types around a datagram channel (channel.ts): endpoints, transports, counters, facts. */
import type { StrategyName } from '../../nat/strategy.js';
import type { TransportAddress } from '../../wire/types.js';
import type { ConnectionRole } from '../info.js';

/** An IP endpoint, as `dgram` reports one. */
export interface DatagramEndpoint {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/** What the channel needs to hear from its transport. */
export interface TransportHandlers {
  message(data: Buffer, from: DatagramEndpoint): void;
  /** The transport failed (its socket errored, the relay connection ended). */
  error(err: Error): void;
}

/** Where a channel's packets go: a UDP socket, or a framed relay connection. */
export interface DatagramTransport {
  /** Starts handing arriving packets to `handlers` (called once). */
  attach(handlers: TransportHandlers): void;
  /** Sends one packet to `to` (a relay ignores `to`: it has one other end). */
  send(data: Buffer, to: DatagramEndpoint): void;
  /** Our local endpoint. */
  local(): DatagramEndpoint;
  /** Told once the channel took `peer` (a transport of several sockets sends from the one that reached it). */
  opened?(peer: DatagramEndpoint): void;
  /**
   * Told, while a packet is being handed to the channel, that it is the newest authenticated
   * one from the peer and came from `from`: a transport of several sockets settles on the
   * socket it arrived on (channel.ts step 2, roaming).
   */
  follow?(from: DatagramEndpoint): void;
  /** Releases the socket or connection; idempotent. */
  close(): void;
}

/** Datagrams dropped by a channel, by reason. */
export interface DatagramDrops {
  /** From an endpoint other than the peer's once the channel is open (a third host, or a stray). */
  readonly foreign: number;
  /** A sealed packet whose counter was seen before or is too old (a replay). */
  readonly replayed: number;
  /** Not a channel packet, or its tag failed (forged, corrupted, another attempt's). */
  readonly invalid: number;
}

/** Counters of a channel. */
export interface DatagramStats {
  readonly sent: number;
  readonly received: number;
  readonly dropped: DatagramDrops;
}

/** How an open channel was made (the `nattrav` property). */
export interface DatagramChannelInfo {
  /** The strategy that opened it (`relay`: through the broker). */
  readonly path: StrategyName;
  readonly role: ConnectionRole;
  /** The recipient's URI. */
  readonly uri: string;
  /** The attempt ID, hex. */
  readonly attemptId: string;
  /** Our UDP socket's public endpoint, as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  /** Milliseconds from the request until the channel opened. */
  readonly setupMs: number;
  /** Which attempt succeeded (1 = the first; the recipient always sees 1). */
  readonly attempts: number;
}

/** Per-message info, as `dgram`'s `rinfo`. */
export interface DatagramRemoteInfo extends DatagramEndpoint {
  readonly size: number;
}
