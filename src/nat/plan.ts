/**
 * Which strategies may connect two peers, best first, from both sides' TCP
 * mappings and public addresses. The broker runs the first that has not failed
 * yet; `relay` is always the last resort. Pure.
 */
import type { MappingKind } from './mapping.js';
import type { StrategyName } from './strategy.js';

/** What the planner knows about one side of an attempt. */
export interface SideFacts {
  readonly mapping: MappingKind;
  /** The side's public IP address as the broker saw it. */
  readonly publicAddress: string;
}

/** Ordered strategies for an initiator/recipient pair. */
export function planStrategies(initiator: SideFacts, recipient: SideFacts): StrategyName[] {
  const plan: StrategyName[] = [];
  const i = initiator.mapping.kind;
  const r = recipient.mapping.kind;
  const coneLike = (k: string): boolean => k === 'eim' || k === 'unknown';
  // Behind one NAT (or on one host): the LAN path first; hairpinning may still allow direct.
  if (initiator.publicAddress === recipient.publicAddress && !(i === 'none' && r === 'none')) plan.push('lan');
  if (r === 'none') plan.push('public');
  else if (i === 'none') plan.push('reversal');
  if (coneLike(i) && coneLike(r)) plan.push('direct');
  else if ((i === 'sequential' && (coneLike(r) || r === 'sequential')) || (r === 'sequential' && coneLike(i))) plan.push('predicted');
  else if ((i === 'random' && coneLike(r)) || (r === 'random' && coneLike(i))) {
    // A full cone forwards every SYN to its host, whose RSTs would kill the birthday
    // sockets; but then the cone side can simply listen. Try that briefly first.
    plan.push(coneLike(r) ? 'public' : 'reversal', 'birthday');
  }
  // A public side can still simultaneous-open with a cone when its listener is firewalled.
  if ((i === 'none' && (coneLike(r) || r === 'none')) || (r === 'none' && coneLike(i))) plan.push('direct');
  if ((i === 'none' && r === 'random') || (r === 'none' && i === 'random')) plan.push('birthday');
  plan.push('relay');
  return [...new Set(plan)];
}

/** The first strategy of `plan` not in `failed` (relay when all failed). */
export function nextStrategy(plan: readonly StrategyName[], failed: ReadonlySet<StrategyName>): StrategyName {
  return plan.find((name) => !failed.has(name)) ?? 'relay';
}
