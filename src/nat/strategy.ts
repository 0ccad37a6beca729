/**
 * The traversal strategies, by name and wire code. The broker chooses one per
 * attempt from both peers' measured NAT mappings (see plan.ts); peers run it.
 */

/** How a connection was (or may be) made. */
export type StrategyName = 'lan' | 'public' | 'reversal' | 'direct' | 'predicted' | 'birthday' | 'relay';

/** Wire codes of the strategies (the STRATEGY attribute); each is also a bit in FAILED-STRATEGIES. */
export const StrategyCode: Readonly<Record<StrategyName, number>> = {
  /** Same public address: connect to the recipient's private endpoint. */
  lan: 1,
  /** The recipient has a public address: it listens, the initiator connects. */
  public: 2,
  /** The initiator has a public address: it listens, the recipient connects (P2PWG connection reversal). */
  reversal: 3,
  /** Both NATs map endpoint-independently: TCP simultaneous open. */
  direct: 4,
  /** A sequential symmetric NAT: aim at its next port(s) (P2PWG N+1). */
  predicted: 5,
  /** A random symmetric NAT against a cone: many ports on one side, probes from the other. */
  birthday: 6,
  /** Nothing direct can work: the broker splices two TCP connections. */
  relay: 7,
};

/** Every strategy name, in code order. */
export const STRATEGY_NAMES: readonly StrategyName[] = ['lan', 'public', 'reversal', 'direct', 'predicted', 'birthday', 'relay'];

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
