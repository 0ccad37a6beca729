/** NAT behaviour discovery (RFC 5780): the profile types, the pure classification, and `discoverNat()`. */
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
