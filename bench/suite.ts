/** The benchmarks of `npm run bench`, in the order they run. */
import type { Bench } from './lib/suite.js';
import { registrationBench } from './registration.js';
import { stunBench } from './stun.js';

/** Every benchmark, in run order. */
export const SUITE: readonly Bench[] = [stunBench, registrationBench];
