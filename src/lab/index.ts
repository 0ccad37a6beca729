/**
 * `nattrav/lab`: the network-namespace NAT lab. Real Linux NATs (nftables) between hosts in
 * namespaces, for tests that prove traversal against the kernel rather than a simulation; the
 * NAT-type matrix runner and its HTML report; and the demo (`nattrav demo`). Building a lab
 * needs root; {@link labSupport} says whether this machine can, and why not.
 *
 * ```ts
 * import { runMatrix, renderMatrixReport, NAT_TYPES } from 'nattrav/lab';
 * ```
 *
 * @module
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
  udpBlockedRuleset,
  webOnlyRuleset,
  type NatRulesetOptions,
  type SequentialRulesetOptions,
} from './nat.js';
export { FIREWALL6_TABLE, firewall6Ruleset, type Firewall6Options } from './ipv6.js';
export { LAB_NS_PATTERN, LAB_NS_PREFIX } from './plan.js';
export { MAX_DELAY_MS, ensureDelayLine } from './delayline.js';
export {
  minimumSetup,
  runMatrix,
  type MatrixAttempt,
  type MatrixCell,
  type MatrixOptions,
  type MatrixPath,
  type MatrixResult,
  type MinimumSetup,
  type SetupStep,
} from './matrix.js';
export { PATH_COLORS, renderMatrixReport } from './report.js';
export {
  HAIRPIN_NAT_TYPES,
  IPV6_MODES,
  NAT_TYPES,
  type Ipv6Mode,
  type LabHost,
  type LabOptions,
  type LabRunOptions,
  type LabRunResult,
  type LabSite,
  type LabSupport,
  type NatType,
  type SiteOptions,
  type TrafficCounterOptions,
  type TrafficCounterReader,
  type TrafficCounts,
} from './types.js';
export { runDemo, type DemoOptions, type DemoResult, type DemoStep } from './demo.js';
