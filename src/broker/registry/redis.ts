/**
 * The registry on Redis, shared by brokers: a registration is one key holding a few
 * dozen bytes (redis-codec.ts), expiring by Redis TTL (PX) when its registration lapses.
 * Each URI's keys (`<prefix>reg:{<uri>}`, `<prefix>sess:{<uri>}`) share one hash slot
 * through the `{uri}` hash tag, so Redis Cluster serves them and their Lua scripts.
 *
 * The broker's clock decides liveness, as in {@link MemoryRegistry}: a value whose
 * `expiresAt` is not after `now()` counts as gone even if Redis has not dropped it yet
 * (clocks of brokers and Redis differ by milliseconds; the TTL only frees the memory).
 */
import { checkSameUri, type Registration, type Registry } from './registry.js';
import { checkKeyPrefix, decodeRegistration, encodeRegistration, redisKey, registrationExpiresAt, type RedisStoreOptions } from './redis-codec.js';
import { RedisConnection, redisScript, type RedisConnectionOptions } from './redis-connection.js';
import { RedisSessionStore } from './redis-sessions.js';

/** Options of {@link connectRedis}: the connection's and the stores'. */
export interface ConnectRedisOptions extends RedisConnectionOptions, RedisStoreOptions {}

/**
 * Stores the registration unless a live one of another key holds the URI. KEYS[1]: the
 * registration; ARGV: value, TTL in ms, now, fingerprint. Reads expiresAt (bytes 3-8) and
 * the fingerprint (length at byte 9) at the offsets of redis-codec.ts. Returns the
 * holder's fingerprint, or nil when stored.
 */
const CLAIM = redisScript(`
local current = redis.call('GET', KEYS[1])
if current and string.len(current) >= 9 then
  local expires = 0
  for i = 3, 8 do expires = expires * 256 + string.byte(current, i) end
  local length = string.byte(current, 9)
  if expires > tonumber(ARGV[3]) and length > 0 then
    local holder = string.sub(current, 10, 9 + length)
    if holder ~= ARGV[4] then return holder end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return false
`);

/** Deletes KEYS[1] only if it still holds ARGV[1] (the bytes read before). Returns 1 when deleted. */
const DELETE_IF = redisScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`);

/** Sets KEYS[1] to ARGV[2] with TTL ARGV[3] ms (deletes it at 0 or less) only if it still holds ARGV[1]. Returns 1 when replaced. */
const REPLACE_IF = redisScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
`);

/** A {@link Registry} in Redis (a single server or a Redis Cluster), shared by every broker using it. */
export class RedisRegistry implements Registry {
  readonly #redis: RedisConnection;
  readonly #prefix: string;
  readonly #now: () => number;

  /** Uses `redis`, which the caller closes (see {@link connectRedis}). */
  constructor(redis: RedisConnection, options: RedisStoreOptions = {}) {
    this.#redis = redis;
    this.#prefix = checkKeyPrefix(options.keyPrefix);
    this.#now = options.now ?? Date.now;
  }

  async put(registration: Registration): Promise<void> {
    const key = redisKey(this.#prefix, 'reg', registration.uri);
    const value = encodeRegistration(registration);
    const ttl = registration.expiresAt - this.#now();
    await this.#redis.command(key, ttl > 0 ? ['SET', key, value, 'PX', String(ttl)] : ['DEL', key]);
  }

  async claim(registration: Registration & { readonly keyFingerprint: string }): Promise<string | undefined> {
    const key = redisKey(this.#prefix, 'reg', registration.uri);
    const value = encodeRegistration(registration);
    const now = this.#now();
    const holder = await this.#redis.script(CLAIM, key, [value, String(registration.expiresAt - now), String(now), registration.keyFingerprint]);
    return holder === null || holder === undefined ? undefined : String(holder);
  }

  async get(uri: string): Promise<Registration | undefined> {
    const key = redisKey(this.#prefix, 'reg', uri);
    const value = await this.#redis.command(key, ['GET', key], true);
    if (!Buffer.isBuffer(value)) return undefined;
    const registration = decodeRegistration(uri, value);
    return registration.expiresAt > this.#now() ? registration : undefined;
  }

  async delete(uri: string): Promise<boolean> {
    const key = redisKey(this.#prefix, 'reg', uri);
    const value = await this.#redis.command(key, ['GETDEL', key]);
    return Buffer.isBuffer(value) && registrationExpiresAt(value) > this.#now();
  }

  async deleteIf(expected: Registration): Promise<boolean> {
    if (expected.expiresAt <= this.#now()) return false;
    const key = redisKey(this.#prefix, 'reg', expected.uri);
    // The codec is deterministic: the same registration encodes to the bytes stored.
    return Number(await this.#redis.script(DELETE_IF, key, [encodeRegistration(expected)])) === 1;
  }

  async replaceIf(expected: Registration, next: Registration): Promise<boolean> {
    checkSameUri(expected, next);
    const now = this.#now();
    if (expected.expiresAt <= now) return false;
    const key = redisKey(this.#prefix, 'reg', expected.uri);
    return Number(await this.#redis.script(REPLACE_IF, key, [encodeRegistration(expected), encodeRegistration(next), String(next.expiresAt - now)])) === 1;
  }

  /** Live registrations on every node: a SCAN, for status pages and tests, not for hot paths. */
  async size(): Promise<number> {
    let count = 0;
    for await (const keys of this.#redis.keys(`${globEscape(this.#prefix)}reg:{*`)) {
      const values = await Promise.all(keys.map((key) => this.#redis.command(key.toString(), ['GET', key], true)));
      const now = this.#now();
      count += values.filter((value) => Buffer.isBuffer(value) && registrationExpiresAt(value) > now).length;
    }
    return count;
  }

  /** Nothing to release: the connection belongs to whoever made it. */
  async close(): Promise<void> {}
}

/** Redis glob metacharacters escaped. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** A broker's shared state on one Redis connection; {@link RedisBackend.close} closes the connection. */
export interface RedisBackend {
  readonly registry: RedisRegistry;
  readonly sessions: RedisSessionStore;
  readonly connection: RedisConnection;
  /** Closes the connection. Idempotent. */
  close(): Promise<void>;
  /** Same as {@link RedisBackend.close}. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Connects to Redis and makes the registry and session store that brokers sharing it
 * pass as their `registry` and `sessions` options. Throws ERR_INVALID_ARGUMENT for bad
 * options, ERR_REGISTRY_UNAVAILABLE naming the server when it does not answer.
 */
export async function connectRedis(options: ConnectRedisOptions): Promise<RedisBackend> {
  const stores = { ...(options.keyPrefix === undefined ? {} : { keyPrefix: checkKeyPrefix(options.keyPrefix) }), ...(options.now === undefined ? {} : { now: options.now }) };
  const connection = await RedisConnection.connect(options);
  return {
    registry: new RedisRegistry(connection, stores),
    sessions: new RedisSessionStore(connection, stores),
    connection,
    close: () => connection.close(),
    [Symbol.asyncDispose]: () => connection.close(),
  };
}
