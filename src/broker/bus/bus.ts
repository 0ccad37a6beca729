/**
 * How brokers that share one registry reach each other: the broker that runs an
 * attempt (it holds the initiator's exchange) is often not the one that holds the
 * recipient's UDP mapping or TCP control connection (the one the recipient registered
 * through). A bus carries opaque messages between them; what the messages mean is the
 * brokers' business (see bus-messages.ts), the bus only delivers bytes.
 *
 * Implementations: in one process (memory-bus.ts: tests) and over Redis sharded pub/sub
 * (redis-bus.ts: brokers on one Redis). The workers of `nattrav broker --workers N` do not
 * use a bus: they route through their primary (workers/), which also passes sockets.
 * Delivery is best effort, like UDP: a message may be lost when a broker dies, so
 * senders retransmit or time out as they already do for the network.
 */
export interface BrokerBus {
  /** This broker's ID on the bus: unique among the brokers sharing it, stable for the broker's life. */
  readonly id: string;
  /**
   * Sends `message` to the broker whose ID is `to` (dropped when no such broker listens).
   * Never throws: a bus that cannot deliver drops, as a network does.
   */
  send(to: string, message: Uint8Array): void;
  /** Sets the one handler of messages sent to this broker (`from`: the sender's ID). */
  onMessage(handler: (message: Uint8Array, from: string) => void): void;
  /** Stops receiving and releases the bus's connections. Idempotent. */
  close(): Promise<void>;
}
