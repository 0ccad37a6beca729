/**
 * Registration sessions in Redis, shared by brokers: a refresh under a session opened on
 * one broker is accepted by any other. One hash per URI (`<prefix>sess:{<uri>}`, in the
 * slot of the URI's registration) with short fields: i session ID, k session key, f key
 * fingerprint, s last SEQUENCE, r last ConnectionRequest SEQUENCE (absent: 0), e expiresAt, a/p endpoint. It expires by Redis TTL with
 * the session. Every change is one Lua script, so that it is atomic across brokers: the
 * SEQUENCE check above all (a refresh replayed to two brokers at once is taken by one).
 *
 * The session key is a secret: whoever reads this Redis can forge refreshes and
 * connection requests. Redis must be private to the brokers and authenticated (README).
 * The memory table's `maxSessions` bound does not apply here: Redis's memory
 * (`maxmemory`) bounds the sessions.
 */
import { newSessionId, type SequenceVerdict, type Session, type SessionEndpoint, type SessionStore } from '../sessions.js';
import { checkKeyPrefix, redisKey, type RedisStoreOptions } from './redis-codec.js';
import { redisScript, type RedisConnection } from './redis-connection.js';

/** Replaces the URI's session. KEYS[1]: the session; ARGV: id, key, fingerprint, expiresAt, address, port, TTL in ms. */
const OPEN = redisScript(`
redis.call('DEL', KEYS[1])
if tonumber(ARGV[7]) <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'i', ARGV[1], 'k', ARGV[2], 'f', ARGV[3], 's', '0', 'e', ARGV[4], 'a', ARGV[5], 'p', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
`);

/** The check every change starts with: the session is `id` and live at `now`. */
const LIVE = `
local function live(id, now)
  local held = redis.call('HMGET', KEYS[1], 'i', 'e')
  return held[1] == id and tonumber(held[2]) > tonumber(now)
end
`;

/** Takes a SEQUENCE. ARGV: id, sequence, now. Returns 0 unknown, 1 replayed, 2 accepted. */
const ADVANCE = redisScript(`${LIVE}
if not live(ARGV[1], ARGV[3]) then return 0 end
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], 's')) then return 1 end
redis.call('HSET', KEYS[1], 's', ARGV[2])
return 2
`);

/** Draws the next ConnectionRequest SEQUENCE. ARGV: id, now. Returns it, or 0 when the session is gone. */
const NEXT_REQUEST = redisScript(`${LIVE}
if not live(ARGV[1], ARGV[2]) then return 0 end
return redis.call('HINCRBY', KEYS[1], 'r', 1)
`);

/** Moves and extends the session. ARGV: id, now, address, port, expiresAt, TTL in ms. Returns 1 when done. */
const RENEW = redisScript(`${LIVE}
if not live(ARGV[1], ARGV[2]) then return 0 end
if tonumber(ARGV[6]) <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'a', ARGV[3], 'p', ARGV[4], 'e', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return 1
`);

/** Ends the session if it is still `id`. ARGV: id. Returns 1 when ended. */
const END = redisScript(`
if redis.call('HGET', KEYS[1], 'i') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

const FIELDS = ['i', 'k', 'f', 's', 'e', 'a', 'p'] as const;
const VERDICTS: readonly SequenceVerdict[] = ['unknown', 'replayed', 'accepted'];

/** A {@link SessionStore} in Redis (a single server or a Redis Cluster), shared by every broker using it. */
export class RedisSessionStore implements SessionStore {
  readonly #redis: RedisConnection;
  readonly #prefix: string;
  readonly #now: () => number;

  /** Uses `redis`, which the caller closes. */
  constructor(redis: RedisConnection, options: RedisStoreOptions = {}) {
    this.#redis = redis;
    this.#prefix = checkKeyPrefix(options.keyPrefix);
    this.#now = options.now ?? Date.now;
  }

  async open(uri: string, key: Buffer, keyFingerprint: string, expiresAt: number, endpoint: SessionEndpoint): Promise<Session | undefined> {
    const id = newSessionId();
    const ttl = expiresAt - this.#now();
    await this.#redis.script(OPEN, this.#key(uri), [id, key, keyFingerprint, String(expiresAt), endpoint.address, String(endpoint.port), String(ttl)]);
    return { id, uri, key, keyFingerprint, lastSequence: 0, expiresAt, endpoint: { address: endpoint.address, port: endpoint.port } };
  }

  async find(uri: string, id: string): Promise<Session | undefined> {
    const session = await this.byUri(uri);
    return session?.id === id ? session : undefined;
  }

  async byUri(uri: string): Promise<Session | undefined> {
    const key = this.#key(uri);
    const reply = (await this.#redis.command(key, ['HMGET', key, ...FIELDS], true)) as ReadonlyArray<Buffer | null>;
    const [id, sessionKey, fingerprint, sequence, expires, address, port] = reply;
    if (id == null || sessionKey == null || fingerprint == null || sequence == null || expires == null || address == null || port == null) return undefined;
    const expiresAt = Number(expires.toString());
    if (!(expiresAt > this.#now())) return undefined;
    return {
      id: id.toString(),
      uri,
      key: Buffer.from(sessionKey),
      keyFingerprint: fingerprint.toString(),
      lastSequence: Number(sequence.toString()),
      expiresAt,
      endpoint: { address: address.toString(), port: Number(port.toString()) },
    };
  }

  async advance(session: Session, sequence: number): Promise<SequenceVerdict> {
    const verdict = await this.#redis.script(ADVANCE, this.#key(session.uri), [session.id, String(sequence), String(this.#now())]);
    return VERDICTS[Number(verdict)] ?? 'unknown';
  }

  async nextRequestSequence(session: Session): Promise<number | undefined> {
    const next = Number(await this.#redis.script(NEXT_REQUEST, this.#key(session.uri), [session.id, String(this.#now())]));
    return next > 0 ? next : undefined;
  }

  async renew(session: Session, endpoint: SessionEndpoint, expiresAt: number): Promise<boolean> {
    const now = this.#now();
    const done = await this.#redis.script(RENEW, this.#key(session.uri), [session.id, String(now), endpoint.address, String(endpoint.port), String(expiresAt), String(expiresAt - now)]);
    return Number(done) === 1;
  }

  async end(session: Session): Promise<boolean> {
    return Number(await this.#redis.script(END, this.#key(session.uri), [session.id])) === 1;
  }

  async drop(uri: string): Promise<void> {
    const key = this.#key(uri);
    await this.#redis.command(key, ['DEL', key]);
  }

  /** Nothing to release: the connection belongs to whoever made it. */
  async close(): Promise<void> {}

  #key(uri: string): string {
    return redisKey(this.#prefix, 'sess', uri);
  }
}
