/**
 * The scheduling of one attempt, as a pure function (tailscale's `makeProbePlan`;
 * our own nat/classify.ts): from what the broker saw of both sides (public
 * endpoints, private endpoints, mapping probes), the round trips it measured and
 * what it knows of earlier attempts, it decides the strategy, what each side is
 * told and when each side starts. No sockets, no timers, no clock of its own:
 * `now` comes in. The rendezvous (rendezvous.ts) does the I/O around it.
 */
import { classifyTcpMapping, lastObservedPort, type MappingKind } from '../nat/mapping.js';
import { chooseStrategy, planStrategies, strategyCost, type SideFacts, type SkipReason, type StrategyChoice } from '../nat/plan.js';
import { STRATEGY_NAMES, type StrategyName } from '../nat/strategy.js';
import type { TransportAddress } from '../wire/types.js';
import { startDelays, type StartDelays } from './timing.js';

/** Birthday: the cone side starts this much later, so the random side's mappings exist when its probes arrive. */
export const BIRTHDAY_CONE_LAG_MS = 200;
/**
 * How long a strategy the broker scheduled counts as evidence for a retry by the same
 * initiator, in ms: longer than a whole `connect()` (30 s by default, 4 attempts).
 */
export const ATTEMPT_HISTORY_MS = 60_000;

/**
 * True when nothing the mapping probes could show would change the decision: the recipient
 * registered over a WebSocket (its plan is the relay alone), or the initiator claims every
 * strategy but the relay failed (a claim may only lead to the relay then). The broker then
 * does not wait for probes, which a peer on the web never sends.
 */
export function relayOnly(recipientWeb: boolean, claimed: ReadonlySet<StrategyName>): boolean {
  return recipientWeb || STRATEGY_NAMES.every((strategy) => strategy === 'relay' || claimed.has(strategy));
}

/**
 * True when the kinds of the two NATs alone leave only the relay (nat/plan.ts: e.g. two
 * symmetric NATs, sequential or random): no probe, round trip or port could make another
 * strategy the first, so the broker may answer both at once with the relay, on a recipient's
 * standby whose port would be worth nothing for punching (rendezvous.ts). The kinds may come
 * from the mapping memory: only the kind counts here, never a port.
 */
export function relayCertain(initiator: SideFacts, recipient: SideFacts): boolean {
  return planStrategies(initiator, recipient)[0] === 'relay';
}

/** What the broker saw of one side of an attempt. */
export interface AttemptSide {
  /** The exchange's public endpoint, as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  /** The private endpoints the peer listed (PRIVATE-ENDPOINT). */
  readonly privateEndpoints: readonly TransportAddress[];
  /** Mapping-probe observations from the exchange's own address (probe-book.ts). */
  readonly probes: readonly TransportAddress[];
  /**
   * The port mapping its gateway holds for it, as registered (MAPPED-ENDPOINT; the recipient's
   * only). It counts only on the side's own public address: a gateway behind another NAT
   * (carrier-grade NAT) maps a port of an address nobody outside can reach.
   */
  readonly mappedEndpoint?: TransportAddress;
  /**
   * The address its SOCKS5 proxy bound for it (BIND), as registered (BOUND-ENDPOINT; the
   * recipient's only). Like a mapping it counts only on the side's own public address (the
   * proxy's, from which the registration came); an unspecified address stands for that one.
   */
  readonly boundEndpoint?: TransportAddress;
  /** It registered over a WebSocket (Registration.web; the recipient's only): only the relay can reach it. */
  readonly web?: boolean;
  /**
   * How its NAT maps TCP, known ahead (a standby's probe, or remembered for its address:
   * mapping-memory.ts): the classification when no probe of this attempt came.
   */
  readonly mapping?: MappingKind;
}

/** The side's bound endpoint when path `socks5-bind` may use it (on its own public address), else undefined. */
export function usableBoundEndpoint(side: AttemptSide): TransportAddress | undefined {
  const bound = side.boundEndpoint;
  if (bound === undefined || bound.port === 0) return undefined;
  if (bound.address === '0.0.0.0' || bound.address === '::') return { ...side.publicEndpoint, port: bound.port };
  return bound.address === side.publicEndpoint.address ? bound : undefined;
}

/** Both sides of an attempt. */
export interface AttemptSides {
  readonly initiator: AttemptSide;
  readonly recipient: AttemptSide;
}

/** Round trips the broker measured on each exchange, in ms. */
export interface RoundTrips {
  readonly initiatorMs: number;
  readonly recipientMs: number;
}

/** A strategy this broker scheduled earlier for the same initiator and URI (attempt-history.ts). */
export interface ScheduledBefore {
  readonly strategy: StrategyName;
  /** When, on the rendezvous' clock. */
  readonly at: number;
}

/** What the broker knows of failures when it schedules an attempt. */
export interface Failures {
  /** Strategies it scheduled for this initiator and URI; those older than {@link ATTEMPT_HISTORY_MS} do not count. */
  readonly history: readonly ScheduledBefore[];
  /** The initiator's FAILED-STRATEGIES: a claim that may only lead to cheaper strategies. */
  readonly claimed: ReadonlySet<StrategyName>;
  /** Expensive-strategy tokens left for this recipient and initiator (nat/plan.ts STRATEGY_COST). */
  readonly budget: number;
}

/** What one side is told in its final answer. */
export interface Answer {
  /** XOR-MAPPED-ADDRESS: the side's own exchange endpoint, as the broker saw it. */
  readonly publicEndpoint: TransportAddress;
  /** PEER-PUBLIC-ENDPOINT: where the other side is (for prediction, the last port its NAT gave out). */
  readonly peerPublicEndpoint: TransportAddress;
  /** PEER-PRIVATE-ENDPOINT, one attribute each. */
  readonly peerPrivateEndpoints: readonly TransportAddress[];
  /** START-DELAY: how long to wait after receipt before the strategy starts, in ms. */
  readonly startDelayMs: number;
  /** MAPPING: how the side's own NAT maps TCP. */
  readonly mapping: MappingKind;
  /** PEER-MAPPING: how the other side's NAT maps TCP. */
  readonly peerMapping: MappingKind;
}

/** The broker's decision for one attempt. */
export interface Schedule {
  readonly strategy: StrategyName;
  /** Every strategy that may connect these sides, best first (nat/plan.ts). */
  readonly plan: readonly StrategyName[];
  /** Strategies counted as failed (scheduled here recently, and claimed failed). */
  readonly failed: readonly StrategyName[];
  /** Strategies of the plan passed over, and why. */
  readonly skipped: ReadonlyArray<{ readonly strategy: StrategyName; readonly reason: SkipReason }>;
  /** Expensive-strategy tokens the strategy uses (0 for a cheap one). */
  readonly cost: number;
  readonly mappings: { readonly initiator: MappingKind; readonly recipient: MappingKind };
  readonly delays: StartDelays;
  readonly answers: { readonly initiator: Answer; readonly recipient: Answer };
}

/**
 * Schedules an attempt (rendezvous steps 5 and 6): classifies both TCP mappings,
 * plans, picks the strategy (nat/plan.ts `chooseStrategy`), and computes both
 * answers with start delays so the two sides start together (timing.ts). Pure.
 */
export function scheduleAttempt(sides: AttemptSides, rtts: RoundTrips, failures: Failures, now: number): Schedule {
  const { initiator, recipient } = sides;
  const initiatorMapping = mappingOf(initiator);
  const recipientMapping = mappingOf(recipient);
  const plan = planStrategies(
    { mapping: initiatorMapping, publicAddress: initiator.publicEndpoint.address },
    { mapping: recipientMapping, publicAddress: recipient.publicEndpoint.address, mapped: recipient.mappedEndpoint?.address === recipient.publicEndpoint.address, bound: usableBoundEndpoint(recipient) !== undefined, web: recipient.web === true },
  );
  const scheduled = new Set(failures.history.filter((h) => now - h.at <= ATTEMPT_HISTORY_MS).map((h) => h.strategy));
  const choice = chooseStrategy(plan, { scheduled, claimed: failures.claimed, budget: failures.budget });
  const strategy = choice.strategy;

  const base = startDelays(rtts.initiatorMs, rtts.recipientMs);
  let initiatorMs = base.initiatorMs;
  let recipientMs = base.recipientMs;
  if (strategy === 'birthday') {
    // The random side opens its sockets first; the cone side's probes follow.
    if (initiatorMapping.kind === 'random') recipientMs += BIRTHDAY_CONE_LAG_MS;
    else initiatorMs += BIRTHDAY_CONE_LAG_MS;
  }
  // For prediction a sequential side is named by the last port its NAT gave out; for portmap the recipient by its mapping, for socks5-bind by its proxy's bound address.
  const aim = (side: AttemptSide, mapping: MappingKind): TransportAddress => {
    if (strategy === 'portmap' && side.mappedEndpoint !== undefined) return side.mappedEndpoint;
    const bound = strategy === 'socks5-bind' ? usableBoundEndpoint(side) : undefined;
    if (bound !== undefined) return bound;
    return strategy === 'predicted' && mapping.kind === 'sequential'
      ? { ...side.publicEndpoint, port: lastObservedPort(side.publicEndpoint, side.probes) }
      : side.publicEndpoint;
  };
  return assembleSchedule(sides, { plan, choice, mappings: { initiator: initiatorMapping, recipient: recipientMapping }, delays: { initiatorMs, recipientMs } }, aim);
}

/** How `side`'s NAT maps TCP: from this attempt's probes, else as known ahead, else classified without probes. */
function mappingOf(side: AttemptSide): MappingKind {
  if (side.probes.length === 0 && side.mapping !== undefined) return side.mapping;
  return classifyTcpMapping(side.publicEndpoint, side.probes, side.privateEndpoints);
}

/** What a scheduler decided for an attempt, before the answers are built from it. */
export interface ScheduleDecision {
  /** Every strategy that may connect these sides, best first. */
  readonly plan: readonly StrategyName[];
  /** The strategy picked from the plan, with what was counted failed and passed over. */
  readonly choice: StrategyChoice;
  readonly mappings: { readonly initiator: MappingKind; readonly recipient: MappingKind };
  readonly delays: StartDelays;
}

/**
 * The schedule for a decision (TCP here, datagram in datagram-plan.ts): each side's answer
 * names the other side as `aim` places it and the other side's private endpoints as
 * `peerPrivateEndpoints` picks them (all of them unless given). Pure.
 */
export function assembleSchedule<S extends AttemptSide>(
  sides: { readonly initiator: S; readonly recipient: S },
  decision: ScheduleDecision,
  aim: (side: S, mapping: MappingKind) => TransportAddress,
  peerPrivateEndpoints: (side: S) => readonly TransportAddress[] = (side) => side.privateEndpoints,
): Schedule {
  const { initiator, recipient } = sides;
  const { plan, choice, mappings, delays } = decision;
  const strategy = choice.strategy;
  const answer = (own: S, ownMapping: MappingKind, other: S, otherMapping: MappingKind, startDelayMs: number): Answer => ({
    publicEndpoint: own.publicEndpoint,
    peerPublicEndpoint: aim(other, otherMapping),
    peerPrivateEndpoints: peerPrivateEndpoints(other),
    startDelayMs,
    mapping: ownMapping,
    peerMapping: otherMapping,
  });
  return {
    strategy,
    plan,
    failed: choice.failed,
    skipped: choice.skipped,
    cost: strategyCost(strategy),
    mappings,
    delays,
    answers: {
      initiator: answer(initiator, mappings.initiator, recipient, mappings.recipient, delays.initiatorMs),
      recipient: answer(recipient, mappings.recipient, initiator, mappings.initiator, delays.recipientMs),
    },
  };
}
