/**
 * The floor of a connection's setup time for each strategy in a lab whose site links each
 * add `d` ms one way (the broker's link adds none), from the initiator's `connect()`, as
 * issue 13 defines it: what no design can avoid. Counted in one-way crossings of a delayed
 * link: a message between a peer and the broker crosses one, a message between peers on
 * different sites crosses two, between peers on one LAN none. Pure.
 *
 * Every strategy needs the initiator's TCP handshake with the broker and its request (3
 * crossings) and the broker's answer (1); the peer leg is what the strategy adds:
 * - `direct`, `predicted`, `birthday` (simultaneous open): the SYNs cross (2), the SYN/ACKs
 *   cross (2);
 * - `public`, `portmap`: the initiator dials, SYN (2) and SYN/ACK (2);
 * - `reversal`: the recipient dials the initiator once the broker's answer reaches it (at
 *   the same time as the initiator's): SYN (2), SYN/ACK (2), and the ACK (2) that completes
 *   the initiator's accept;
 * - `lan`: a dial inside one LAN (no delayed link);
 * - `relay`: nothing. The connections the relay needs exist when the Connect arrives: the
 *   initiator's own exchange and the warm recipient's standby (the recipient's half of every
 *   floor here: the broker answers it at the same time as the initiator). The broker can
 *   splice those two and answer both, so the initiator's answer (the 4 crossings above) is
 *   also its relayed connection. (Today's relay opens a fresh connection per side and joins:
 *   4 crossings more, 200 ms at d = 25 ms; rendezvous.ts, broker/relay.ts.)
 * With TLS 1.3 add one peer round trip (ClientHello; ServerHello to Finished): 4 crossings
 * between sites, 0 on a LAN (through the relay too: 4, each message crossing the
 * initiator's link and the recipient's).
 */
import type { StrategyName } from '../../src/nat/strategy.js';

/** Crossings before any peer leg: broker TCP handshake (2), request (1), answer (1). */
export const BROKER_CROSSINGS = 4;

/** The peer leg of each strategy the setup benchmark measures, in one-way crossings. */
export const PEER_LEG_CROSSINGS: Readonly<Partial<Record<StrategyName, number>>> = {
  lan: 0,
  public: 4,
  portmap: 4,
  reversal: 6,
  direct: 4,
  predicted: 4,
  birthday: 4,
  relay: 0,
};

/** One strategy's floor. */
export interface Floor {
  readonly strategy: StrategyName;
  /** Crossings until the socket is connected (no TLS). */
  readonly crossings: number;
  /** Crossings until the TLS 1.3 handshake is done as well. */
  readonly tlsCrossings: number;
  /** `crossings * d`, ms. */
  readonly ms: number;
  /** `tlsCrossings * d`, ms. */
  readonly tlsMs: number;
  /** The formula, for a table's notes, e.g. "(4 + 4) x 25 ms". */
  readonly formula: string;
}

/** The floor of `strategy` for a one-way delay of `delayMs` per site link; throws for a strategy without one. */
export function setupFloor(strategy: StrategyName, delayMs: number): Floor {
  const leg = PEER_LEG_CROSSINGS[strategy];
  if (leg === undefined) throw new Error(`no setup floor is defined for strategy ${strategy}`);
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new Error(`delayMs must be a number >= 0, got ${delayMs}`);
  const tls = strategy === 'lan' ? 0 : 4;
  const crossings = BROKER_CROSSINGS + leg;
  return {
    strategy,
    crossings,
    tlsCrossings: crossings + tls,
    ms: crossings * delayMs,
    tlsMs: (crossings + tls) * delayMs,
    formula: `(${BROKER_CROSSINGS} + ${leg}) x ${delayMs} ms, TLS +${tls}`,
  };
}
