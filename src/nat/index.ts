/** NAT behaviour discovery (RFC 5780): the profile types, the pure classification, `discoverNat()`, and the mapping lifetime (`measureNatLifetime()`). */
export { describeNat, formatAllocation, type Behaviour, type ClassicNatName, type NatProfile, type PortAllocation, type TcpProfile } from './profile.js';
export {
  classifyAllocation,
  classifyFiltering,
  classifyMapping,
  runTcpDiscovery,
  runUdpDiscovery,
  MAX_SEQUENTIAL_STEP,
  MIN_ALLOCATION_SAMPLES,
  type BindingOutcome,
  type ChangeFlags,
  type Endpoint,
  type PortSample,
  type TcpProbeIo,
  type UdpDiscoveryPlan,
  type UdpFindings,
  type UdpProbeIo,
} from './classify.js';
export { discoverNat, DISCOVERY_DEFAULTS, type DiscoverNatOptions } from './discovery.js';
export { measureMappingLifetime, LIFETIME_TIMING, type LifetimeIo, type LifetimeProbeEvent, type LifetimeSocket, type MappingLifetime, type MeasureLifetimeOptions } from './lifetime.js';
export { LIFETIME_SEARCH_DEFAULTS, type LifetimeSearchOptions, type SearchEnd } from './lifetime-search.js';
export { dgramLifetimeIo, measureNatLifetime, type LifetimeServer, type MeasureNatLifetimeOptions } from './lifetime-io.js';
