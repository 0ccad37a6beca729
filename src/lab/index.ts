/**
 * The network-namespace NAT lab: real Linux NATs (nftables) between hosts in namespaces, for
 * tests that prove traversal against the kernel rather than a simulation. Needs root.
 */
export { Lab } from './lab.js';
export { cleanupStaleLabs, labSupport } from './support.js';
export {
  NAT_TABLE,
  fullConeRuleset,
  natRuleset,
  portRestrictedRuleset,
  restrictedConeRuleset,
  symmetricRuleset,
  symmetricSequentialRuleset,
  type NatRulesetOptions,
  type SequentialRulesetOptions,
} from './nat.js';
export { LAB_NS_PATTERN, LAB_NS_PREFIX } from './plan.js';
export {
  NAT_TYPES,
  type LabHost,
  type LabOptions,
  type LabRunOptions,
  type LabRunResult,
  type LabSite,
  type LabSupport,
  type NatType,
  type SiteOptions,
  type TrafficCounterReader,
  type TrafficCounts,
} from './types.js';
