/**
 * A broker for the benchmarks, in its own process (so it can be pinned to one core):
 * createBroker on 127.0.0.1 with limits opened wide (bench/lib/wide.ts) and the caps at
 * `max`, in memory or on Redis. Prints `{"port":N}` once listening. Each line `rss` on stdin
 * is answered with `{"rss":BYTES}` after a full GC (run with --expose-gc).
 * Run: `node --expose-gc dist/bench/servers/broker.js '{"open":true,"max":100000}'`.
 */
import { createInterface } from 'node:readline';
import { createBroker } from '../../src/broker/broker.js';
import { connectRedis, type RedisBackend } from '../../src/broker/registry/redis.js';
import { wideLimits } from '../lib/wide.js';

/** What the parent passes as argv[2] (JSON). */
export interface BenchBrokerConfig {
  /** Open mode (registrations without proof of key). */
  readonly open: boolean;
  /** Registrations and sessions the broker may hold. */
  readonly max: number;
  /** Share registrations and sessions through this Redis. */
  readonly redisUrl?: string;
}

/** Registrations in the benchmarks ask for long lifetimes, so none lapses during a run. */
const MAX_LIFETIME_MS = 3_600_000;

const config = JSON.parse(process.argv[2] ?? '{}') as BenchBrokerConfig;
if (typeof config.open !== 'boolean' || !Number.isSafeInteger(config.max) || config.max <= 0) {
  console.error('usage: broker.js \'{"open":BOOLEAN,"max":POSITIVE_INTEGER,"redisUrl"?:URL}\'');
  process.exit(2);
}
const redis: RedisBackend | undefined = config.redisUrl === undefined ? undefined : await connectRedis({ url: config.redisUrl });
const broker = createBroker({
  host: '127.0.0.1',
  port: 0,
  open: config.open,
  maxSessions: config.max,
  maxLifetimeMs: MAX_LIFETIME_MS,
  limits: wideLimits(config.max),
  ...(redis === undefined ? {} : { registry: redis.registry, sessions: redis.sessions }),
});
broker.on('error', (err: unknown) => console.error(String(err)));
const { port } = await broker.listen();
console.log(JSON.stringify({ port }));

const gc = (globalThis as { gc?: () => void }).gc;
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'rss') return;
  gc?.();
  gc?.();
  console.log(JSON.stringify({ rss: process.memoryUsage().rss }));
});
const stop = (): void => {
  void broker.close().then(() => redis?.close()).finally(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
