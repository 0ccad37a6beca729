/**
 * A {@link BrokerBus} over Redis sharded pub/sub (Redis 7: SSUBSCRIBE / SPUBLISH), for
 * brokers on several hosts sharing one Redis (a single server or a Redis Cluster): each
 * broker subscribes to one channel, `<prefix>bus:{<id>}`, and a message to broker B is
 * published on B's channel. Delivery is best effort (pub/sub keeps nothing for a broker
 * that is not subscribed), which is what the bus promises: the rendezvous retransmits.
 *
 * Each message carries the sender's ID in front of it (1 length byte, then ASCII), since
 * Redis does not say who published.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, NattravError } from '../../errors.js';
import { MAX_BROKER_ID_LENGTH, checkKeyPrefix } from '../registry/redis-codec.js';
import type { RedisConnection } from '../registry/redis-connection.js';
import type { BrokerBus } from './bus.js';

/** Options of {@link RedisBus.open}. */
export interface RedisBusOptions {
  /** This broker's ID (printable ASCII, at most 64 characters). @default `b-` and 16 random hex digits */
  id?: string;
  /** Prefix of the channel names, as of the registry's keys. @default 'nattrav:' */
  keyPrefix?: string;
}

/** Publishes in flight at once; beyond them messages are dropped (a Redis that stopped answering must not pile them up). */
const MAX_PUBLISHES_IN_FLIGHT = 1_000;

/** The bus over Redis pub/sub; make it with {@link RedisBus.open}. */
export class RedisBus implements BrokerBus {
  readonly id: string;
  readonly #redis: RedisConnection;
  readonly #prefix: string;
  #handler: ((message: Uint8Array, from: string) => void) | undefined;
  #unsubscribe: (() => Promise<void>) | undefined;
  #inFlight = 0;
  #closed: Promise<void> | undefined;

  private constructor(redis: RedisConnection, id: string, prefix: string) {
    this.#redis = redis;
    this.id = id;
    this.#prefix = prefix;
  }

  /**
   * Subscribes to this broker's channel on `redis` (which the caller keeps and closes after
   * the bus). Throws ERR_INVALID_ARGUMENT for a bad ID or prefix, ERR_REGISTRY_UNAVAILABLE
   * when Redis does not take the subscription.
   */
  static async open(redis: RedisConnection, options: RedisBusOptions = {}): Promise<RedisBus> {
    const id = options.id ?? `b-${randomBytes(8).toString('hex')}`;
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_BROKER_ID_LENGTH || !/^[\x21-\x7e]+$/.test(id)) {
      throw new NattravError(ErrorCode.InvalidArgument, `bus ID must be 1 to ${MAX_BROKER_ID_LENGTH} printable ASCII characters, got ${JSON.stringify(id)}`);
    }
    const bus = new RedisBus(redis, id, checkKeyPrefix(options.keyPrefix));
    bus.#unsubscribe = await redis.subscribe(bus.#channel(id), (message) => bus.#receive(message));
    return bus;
  }

  send(to: string, message: Uint8Array): void {
    if (this.#closed !== undefined || this.#inFlight >= MAX_PUBLISHES_IN_FLIGHT) return;
    const from = Buffer.from(this.id, 'ascii');
    const framed = Buffer.concat([Buffer.of(from.length), from, message]);
    this.#inFlight++;
    // A failed publish (Redis away) drops the message, as a network would; the connection
    // reports its failures itself (its onError, at most one report per 5 s).
    this.#redis
      .publish(this.#channel(to), framed)
      .catch(() => undefined)
      .finally(() => this.#inFlight--);
  }

  onMessage(handler: (message: Uint8Array, from: string) => void): void {
    this.#handler = handler;
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#handler = undefined;
      await this.#unsubscribe?.();
    })();
    return this.#closed;
  }

  /** `<prefix>bus:{<id>}`: the hash tag gives each broker's channel a slot of its own. */
  #channel(id: string): string {
    return `${this.#prefix}bus:{${id}}`;
  }

  #receive(framed: Buffer): void {
    if (framed.length < 1) return;
    const end = 1 + (framed[0] as number);
    if (end > framed.length) return;
    this.#handler?.(framed.subarray(end), framed.toString('ascii', 1, end));
  }
}
