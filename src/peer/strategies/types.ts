/** What every strategy gets, and what it returns. */
import type { Socket } from 'node:net';
import type { HostPort } from '../../common/endpoint.js';
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
  /** Runs the Hello for our role on a connected socket; rejects when it is not our peer. */
  verify(socket: Socket): Promise<void>;
}

/** Opens and verifies a connection to the peer; resolves with the winning socket, closes every loser. */
export type StrategyRunner = (ctx: StrategyContext) => Promise<Socket>;
