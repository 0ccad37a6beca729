/**
 * The registration and lookup rates of registration.ts with three brokers sharing one
 * redis-server (started here on a free loopback port in a temporary directory, stopped by
 * PID). The three brokers are pinned to core 0 together, so the rates stay per core and
 * compare with the one in-memory broker's; redis-server runs beside the generator on core 1.
 * The generator spreads its sockets and lookups over the three brokers.
 */
import { spawnSync } from 'node:child_process';
import { startRedis } from '../test/helpers/redis-server.js';
import { onCleanup } from './lib/procs.js';
import { skipped, type Figure } from './lib/results.js';
import { startBenchBroker, type RunningServer } from './lib/servers.js';
import { SERVER_CORE, type Bench } from './lib/suite.js';
import { REFRESH_TARGET, registrationFigures, registrationRates } from './registration.js';
import { nodeFloor } from './stun.js';

/** Brokers sharing the Redis. */
const BROKERS = 3;
const CAP = 1_000_000;

/** The three-brokers-on-Redis benchmark. */
export const redisBench: Bench = {
  name: 'redis',
  summary: 'The same registration and lookup rates with three brokers on one Redis',
  async run(ctx) {
    if (spawnSync('redis-server', ['--version']).error !== undefined) {
      const setup = `${BROKERS} brokers on one Redis`;
      const why = 'skipped: redis-server is not installed (apt-get install redis-server)';
      return [
        skipped('redis', 'redis.refresh', `Registration refreshes/s (authenticated), ${setup}`, '/s', why, REFRESH_TARGET),
        ...['proof', 'open', 'lookups'].map((id): Figure => skipped('redis', `redis.${id}`, `${id} rate, ${setup}`, '/s', why)),
      ];
    }
    const floor = await nodeFloor(ctx);
    const redis = await startRedis();
    const remove = onCleanup(() => redis.stop());
    try {
      const rates = await registrationRates(ctx, async (open) => {
        const brokers: RunningServer[] = [];
        try {
          for (let i = 0; i < BROKERS; i++) brokers.push(await startBenchBroker({ open, max: CAP, redisUrl: redis.url }, SERVER_CORE));
        } catch (err) {
          for (const b of brokers) await b.stop();
          throw err;
        }
        return brokers;
      });
      return registrationFigures('redis', `${BROKERS} brokers on one Redis, one core`, rates, floor);
    } finally {
      remove();
      await redis.stop();
    }
  },
};
