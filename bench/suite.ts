/** The benchmarks of `npm run bench`, in the order they run. */
import type { Bench } from './lib/suite.js';
import { labBench } from './lab.js';
import { labIpv6Bench } from './lab-ipv6.js';
import { memoryBench } from './memory.js';
import { redisBench } from './redis.js';
import { relayBench } from './relay.js';
import { registrationBench } from './registration.js';
import { setupBench } from './setup.js';
import { startBench } from './start.js';
import { stunBench } from './stun.js';

/** Every benchmark, in run order. */
export const SUITE: readonly Bench[] = [stunBench, registrationBench, memoryBench, relayBench, labBench, labIpv6Bench, setupBench, redisBench, startBench];
