/**
 * The traversal strategies, by name and wire code. The broker chooses one per
 * attempt from both peers' measured NAT mappings (see plan.ts); peers run it.
 */
import { StrategyCode } from '../wire/constants.js';

/** Wire codes of the strategies (the STRATEGY attribute), named once in wire/constants.ts. */
export { StrategyCode };

/** How a connection was (or may be) made. */
export type StrategyName = keyof typeof StrategyCode;

/** Every strategy name, in code order. */
export const STRATEGY_NAMES: readonly StrategyName[] = ['lan', 'public', 'reversal', 'direct', 'predicted', 'birthday', 'relay', 'portmap', 'socks5-bind'];

/** The name for a wire code, or undefined for an unknown code. */
export function strategyName(code: number): StrategyName | undefined {
  return STRATEGY_NAMES.find((name) => StrategyCode[name] === code);
}

/** Bit mask of a set of strategies (bit `code`). */
export function strategyMask(names: Iterable<StrategyName>): number {
  let mask = 0;
  for (const name of names) mask |= 1 << StrategyCode[name];
  return mask >>> 0;
}

/** The strategies in a bit mask. */
export function strategiesInMask(mask: number): StrategyName[] {
  return STRATEGY_NAMES.filter((name) => (mask & (1 << StrategyCode[name])) !== 0);
}
