/** What the broker reports (its 'event' events), in one place for every part of it. */
import type { TransportAddress } from '../wire/types.js';
import type { LimitedReport } from './limits.js';
import type { RelayEnded } from './relay.js';
import type { RendezvousEvent } from './rendezvous.js';

/** Something the broker did, for logs and tests. */
export type BrokerEvent =
  | RendezvousEvent
  | {
      type: 'listening';
      address: string;
      port: number;
      alternatePort: number;
      alternateAddress?: string;
      /** 'open': no proof of key; 'authenticated': proof of key; '+tls': the broker can prove itself too. */
      security: 'open' | 'authenticated' | 'authenticated+tls';
    }
  /** Something went wrong that the broker survived (e.g. a registry that failed while a control connection closed). */
  | { type: 'warning'; message: string }
  | { type: 'binding'; transport: 'udp' | 'tcp'; remote: TransportAddress }
  /** A registration was stored; `refresh`: a keepalive renewing one the peer already held (logged at debug level). */
  | { type: 'registered'; uri: string; publicEndpoint: TransportAddress; lifetimeMs: number; refresh: boolean; transport?: 'tcp'; /** The peer's second address family (SECOND-FAMILY), kept next to its first. */ secondFamily?: true }
  /** The recipient withdrew its registration (LIFETIME 0 under its session): `uri` is unknown from now on. */
  | { type: 'withdrawn'; uri: string; transport: 'udp' | 'tcp' }
  /** Both peers of a relayed attempt joined: the broker splices their connections from now on. */
  | { type: 'relay-started'; attemptId: string }
  | ({ type: 'relay-ended' } & RelayEnded)
  /** A rate limit or cap refused something (limits.ts); throttled, never more than `limitedEventsPerSecond`. */
  | ({ type: 'limited' } & LimitedReport);

