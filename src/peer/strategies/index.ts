/** Every strategy runner, by name. */
import type { StrategyName } from '../../nat/strategy.js';
import { birthday } from './birthday.js';
import { direct } from './direct.js';
import { lan, publicStrategy, reversal } from './listening.js';
import { portmap } from './portmap.js';
import { predicted } from './predicted.js';
import { relay } from './relay.js';
import { socks5Bind } from './socks5-bind.js';
import type { StrategyRunner } from './types.js';

/** The runner for each strategy the broker may choose. */
export const STRATEGIES: Readonly<Record<StrategyName, StrategyRunner>> = {
  lan,
  public: publicStrategy,
  reversal,
  direct,
  predicted,
  birthday,
  relay,
  portmap,
  'socks5-bind': socks5Bind,
};

export type { BoundClaim, BoundInbound, InboundClaim, MappedInbound, StrategyContext, StrategyRunner } from './types.js';
