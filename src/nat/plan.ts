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
  /** True when the side registered a port mapping of its gateway (MAPPED-ENDPOINT): only the recipient's counts. */
  readonly mapped?: boolean;
  /** True when the side holds a BIND open at its SOCKS5 proxy (BOUND-ENDPOINT): only the recipient's counts. */
  readonly bound?: boolean;
  /**
   * True when the side reaches the broker only over the web (it registered over a WebSocket:
   * the recipient's only). Nothing can connect to its own sockets and it can connect out to
   * nothing but the broker, so only the relay can carry a connection.
   */
  readonly web?: boolean;
}

/** Ordered strategies for an initiator/recipient pair. */
export function planStrategies(initiator: SideFacts, recipient: SideFacts): StrategyName[] {
  if (recipient.web === true) return ['relay'];
  // One side reached the broker over IPv4, the other over IPv6: neither knows an address of the
  // other's family (a side lists private endpoints of its broker's family only), so no socket of
  // one can reach the other's; only the relay, which speaks both, can carry the connection.
  if (crossFamily(initiator.publicAddress, recipient.publicAddress)) return ['relay'];
  const plan: StrategyName[] = [];
  const i = initiator.mapping.kind;
  const r = recipient.mapping.kind;
  const coneLike = (k: string): boolean => k === 'eim' || k === 'unknown';
  // The recipient's SOCKS5 proxy listens for it (BIND): whoever reaches the proxy connects there,
  // from anywhere, with a plain connect. First: the proxy is usually its only way in.
  if (recipient.bound === true) plan.push('socks5-bind');
  // Behind one NAT (or on one host): the LAN path first; hairpinning may still allow direct.
  if (initiator.publicAddress === recipient.publicAddress && !(i === 'none' && r === 'none')) plan.push('lan');
  // The recipient's gateway forwards a port to it: a plain connect from behind any NAT, symmetric
  // included. First, except after `lan` on one NAT (reaching it from inside needs hairpinning).
  if (recipient.mapped === true) plan.push('portmap');
  // Two IPv6 hosts without NAT sit behind stateful firewalls as a rule (RFC 6092): a dial to the
  // recipient's listener is dropped by its firewall, a simultaneous open passes both. Direct first.
  if (i === 'none' && r === 'none' && isIPv6(initiator.publicAddress) && initiator.publicAddress !== recipient.publicAddress) plan.push('direct');
  if (r === 'none') plan.push('public');
  else if (i === 'none') plan.push('reversal');
  // Two unfiltered cones (full cone, or no NAT behind a firewall-less cone) answer an early SYN
  // with the host's RST, so a simultaneous open can miss itself; a listening recipient cannot.
  if (coneLike(i) && coneLike(r)) plan.push('direct', 'public');
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

/**
 * Whether two public addresses are of different families (IPv4 and IPv6): then only the
 * relay connects the sides, as neither lists an address of the other's family.
 */
export function crossFamily(a: string, b: string): boolean {
  // An IPv6 address has a colon; an IPv4 one never does.
  return a.includes(':') !== b.includes(':');
}

function isIPv6(address: string): boolean {
  return address.includes(':');
}

/** The first strategy of `plan` not in `failed` (relay when all failed). */
export function nextStrategy(plan: readonly StrategyName[], failed: ReadonlySet<StrategyName>): StrategyName {
  return plan.find((name) => !failed.has(name)) ?? 'relay';
}

/**
 * What a strategy may cost the recipient beyond one connection, in tokens of the broker's
 * expensive-strategy budget (limits `expensivePerUri`, `expensivePerSource`): a prediction
 * window is a few connections, a birthday run hundreds of sockets and up to 2048 probes.
 * Strategies not listed are cheap (one connection each way, or the relay).
 */
export const STRATEGY_COST: Readonly<Partial<Record<StrategyName, number>>> = { predicted: 1, birthday: 8 };

/** The cost of `strategy` in budget tokens (0: cheap). */
export function strategyCost(strategy: StrategyName): number {
  return STRATEGY_COST[strategy] ?? 0;
}

/** What the broker knows of earlier attempts when it picks a strategy. */
export interface FailureView {
  /** Strategies this broker scheduled recently for the same initiator and URI: its own evidence. */
  readonly scheduled: ReadonlySet<StrategyName>;
  /** Strategies the initiator says failed (FAILED-STRATEGIES): a claim, not evidence. */
  readonly claimed: ReadonlySet<StrategyName>;
  /** Budget tokens left for an expensive strategy (see {@link STRATEGY_COST}). */
  readonly budget: number;
}

/** Why a strategy of the plan was passed over. */
export type SkipReason =
  /** Scheduled by this broker for this initiator and URI, and the initiator says it failed. */
  | 'failed'
  /** Only the initiator says it failed (or would get there): a claim may lead to a cheaper strategy only. */
  | 'claimed'
  /** Expensive, and the budget for this recipient or initiator is spent. */
  | 'budget';

/** The strategy to run now, and why the ones before it in the plan were passed over. */
export interface StrategyChoice {
  readonly strategy: StrategyName;
  /** Strategies counted as failed: scheduled here and claimed failed. */
  readonly failed: readonly StrategyName[];
  readonly skipped: ReadonlyArray<{ readonly strategy: StrategyName; readonly reason: SkipReason }>;
}

/**
 * Picks the strategy for an attempt from its plan. A strategy counts as failed only
 * when this broker scheduled it for the same initiator and URI and the initiator says
 * it failed (the broker cannot see whether a direct connection worked, but it does
 * know what it asked for). The initiator's claim alone may only move on to cheaper
 * strategies: an expensive one (prediction, birthday) runs only when the broker's own
 * evidence reaches it, and only while the budget lasts; otherwise the relay (always
 * last in a plan, and cheap for the recipient) or the next cheap strategy runs.
 */
export function chooseStrategy(plan: readonly StrategyName[], view: FailureView): StrategyChoice {
  const failed = plan.filter((s) => view.scheduled.has(s) && view.claimed.has(s));
  const evidence = nextStrategy(plan, new Set(failed));
  const skipped: Array<{ strategy: StrategyName; reason: SkipReason }> = [];
  for (const strategy of plan) {
    const cost = strategyCost(strategy);
    let reason: SkipReason | undefined;
    if (failed.includes(strategy)) reason = 'failed';
    else if (view.claimed.has(strategy) || (cost > 0 && strategy !== evidence)) reason = 'claimed';
    else if (cost > view.budget) reason = 'budget';
    if (reason === undefined) return { strategy, failed, skipped };
    skipped.push({ strategy, reason });
  }
  return { strategy: 'relay', failed, skipped };
}
