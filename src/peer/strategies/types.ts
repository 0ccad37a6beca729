/** What every strategy gets, and what it returns. */
import type { Socket } from 'node:net';
import type { HostPort } from '../../common/endpoint.js';
import type { StunMessage } from '../../wire/message.js';
import type { Dialer } from '../dialer.js';
import type { ExchangeResult } from '../exchange.js';
import type { ConnectionRole } from '../info.js';
import type { SocketBudget } from './socket-budget.js';

/** The context of one strategy run. */
export interface StrategyContext {
  readonly role: ConnectionRole;
  /** What the broker said for this attempt (endpoints, mappings, start delay, strategy). */
  readonly exchange: ExchangeResult;
  readonly broker: HostPort;
  /** The broker's CA (PEM), when the broker must prove itself (TLS to the broker). */
  readonly brokerCa?: string;
  /** How connections to the broker are opened (dialer.ts). @default direct */
  readonly dialer?: Dialer;
  /** Aborts on the caller's abort or the strategy's time limit. */
  readonly signal: AbortSignal;
  /** The recipient's shared budget of attempt sockets: every candidate socket takes one (race.ts). @default unlimited (the initiator) */
  readonly sockets?: SocketBudget;
  /** The recipient's listener on its gateway-mapped port (path `portmap`), when it holds a mapping. */
  readonly mappedInbound?: MappedInbound;
  /** The recipient's BIND at its SOCKS5 proxy (path `socks5-bind`), when it holds one. */
  readonly boundInbound?: BoundInbound;
  /** Runs the Hello for our role on a connected socket; rejects when it is not our peer. */
  verify(socket: Socket): Promise<void>;
}

/** Opens and verifies a connection to the peer; resolves with the winning socket, closes every loser. */
export type StrategyRunner = (ctx: StrategyContext) => Promise<Socket>;

/** Takes an inbound connection on the mapped port when it belongs to the attempt; false leaves it to others. */
export type InboundClaim = (socket: Socket) => boolean;

/**
 * Takes a connection that came in through the recipient's SOCKS5 BIND and whose first message
 * is a Hello naming the claim's attempt. `hello` is that message, still unread on the socket
 * (the attempt's own Hello check reads it again); `from` is the connecting peer as the proxy's
 * second reply named it (the socket's own remote address is the proxy). False refuses the
 * connection (the agent closes it; the claim stays).
 */
export type BoundClaim = (socket: Socket, from: HostPort, hello: StunMessage) => boolean;

/** Where a recipient's attempts wait for a connection through its SOCKS5 proxy's BIND (peer/socks5-bind.ts). */
export interface BoundInbound {
  /**
   * Hands every inbound connection whose first message is a Hello naming `attemptId` (and
   * those held now) to `claim` until the returned function is called; no other attempt's
   * connection ever reaches it.
   */
  claim(attemptId: Uint8Array, claim: BoundClaim): () => void;
}

/** Where a recipient's attempts wait for a connection on its gateway-mapped port (peer/portmap-agent.ts). */
export interface MappedInbound {
  /** Offers every inbound connection to `claim` until the returned function is called. */
  claim(claim: InboundClaim): () => void;
}
