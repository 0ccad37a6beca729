/**
 * Broker limits opened wide, so a benchmark measures the broker's work and not its rate
 * limits (which exist against floods: limits.ts); caps raised to what the run needs.
 */
import type { BrokerLimitsOptions, RateSpec } from '../../src/broker/limits.js';

/** A bucket that never runs dry during a benchmark. */
const WIDE: RateSpec = { perSecond: 1e9, burst: 1e9 };

/** Every rate limit wide open; registration and connection caps at `maxRegistrations`. */
export function wideLimits(maxRegistrations: number): BrokerLimitsOptions {
  return {
    udpRegister: WIDE, udpBinding: WIDE, udpOther: WIDE, tcpAccept: WIDE, tcpRequest: WIDE, connect: WIDE,
    connectPerUri: WIDE, relay: WIDE, mappingProbe: WIDE, expensivePerUri: WIDE, expensivePerSource: WIDE,
    amplificationAllowance: WIDE, amplificationAllowancePerSource: WIDE,
    maxPendingPerUri: 65_536,
    maxRegistrationsPerSource: maxRegistrations,
    maxRegistrations,
    maxConnections: 65_536,
    maxConnectionsPerSource: 65_536,
  };
}

/** The setup benchmarks' `nattrav broker` arguments: the rates repeated connects would run into, opened wide. */
export const WIDE_CLI_LIMITS: readonly string[] = ['connect', 'connectPerUri', 'expensivePerUri', 'expensivePerSource', 'relay', 'mappingProbe'].flatMap((name) => ['--limit', `${name}=1000000/1000000`]);
