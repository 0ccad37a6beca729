/**
 * The scheduling of a datagram (UDP) attempt, as a pure function beside schedule.ts's
 * TCP one. Each peer sends its Connect or Join with TRANSPORT = datagram, the local port
 * of its UDP socket (UDP-PORT) and that socket's mappings as the broker's two UDP ports
 * saw them in STUN Bindings (UDP-MAPPED, UDP-MAPPED-ALTERNATE). A mapping counts only on
 * the address the broker sees the peer's exchange come from, so a peer can aim the other
 * one's probes at nothing but its own public address.
 *
 * UDP plans differ from TCP ones: both sides send PROBEs, so one plan step covers
 * promiscuous and strict filtering alike (no listener that conntrack could refuse):
 * - `lan` (same public address: the private endpoints), then
 * - `public` (the recipient has no NAT), `reversal` (the initiator has none: the
 *   recipient's probes come first), or `direct` (both behind NATs mapping endpoint-
 *   independently: the public endpoints), or
 * - `predicted` (a sequential symmetric NAT: the other side aims at its next ports), or
 * - `birthday` (a random symmetric NAT against a cone: many sockets against many ports),
 * - `relay` (through the broker) last, and alone for two symmetric NATs with a random one.
 */
import { classifyTcpMapping, lastObservedPort, type MappingKind } from '../nat/mapping.js';
import { chooseStrategy, crossFamily } from '../nat/plan.js';
import type { StrategyName } from '../nat/strategy.js';
import { isPrivateAddress } from '../common/private-address.js';
import { AttrType, MAX_PRIVATE_ENDPOINTS, TransportCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { getU32Attr, getXorAddressAttr } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { assembleSchedule, ATTEMPT_HISTORY_MS, BIRTHDAY_CONE_LAG_MS, type AttemptSide, type Failures, type RoundTrips, type Schedule } from './schedule.js';
import { startDelays } from './timing.js';

/** True when `request` (a Connect, ConnectionRequest or final answer) asks for a datagram channel. */
export function isDatagramRequest(request: StunMessage): boolean {
  return getU32Attr(request, AttrType.Transport) === TransportCode.datagram;
}

/** What the broker learns of one side of a datagram attempt from its request. */
export interface DatagramSide extends AttemptSide {
  /** False when the side's UDP mapping is missing or not on its exchange's address: only the relay can serve it. */
  readonly verified: boolean;
}

/**
 * The UDP facts of a datagram Connect or Join, given the public TCP endpoint of its
 * exchange and the private endpoints it listed (their addresses, with the UDP port).
 */
export function datagramSide(request: StunMessage, exchange: TransportAddress, privateEndpoints: readonly TransportAddress[]): DatagramSide {
  const port = getU32Attr(request, AttrType.UdpPort);
  const mapped = getXorAddressAttr(request, AttrType.UdpMapped);
  const alternate = getXorAddressAttr(request, AttrType.UdpMappedAlternate);
  const validPort = port !== undefined && port > 0 && port <= 65_535;
  // A claimed mapping to port 0 is no endpoint: probes to it would fail (or crash an old peer).
  const verified = validPort && mapped !== undefined && mapped.port > 0 && mapped.address === exchange.address;
  // As many as a TCP attempt forwards; all of them classify the mapping (a host without NAT names its public address).
  const privates = validPort ? privateEndpoints.slice(0, MAX_PRIVATE_ENDPOINTS).map((p) => ({ ...p, port })) : [];
  return {
    publicEndpoint: verified ? mapped : exchange,
    privateEndpoints: privates,
    probes: verified && alternate !== undefined && alternate.port > 0 && alternate.address === exchange.address ? [alternate] : [],
    verified,
  };
}

/** Both sides' public addresses, UDP mappings and whether they could be checked: the ordered UDP strategies. */
export function planDatagram(initiator: { mapping: MappingKind; publicAddress: string; verified: boolean }, recipient: { mapping: MappingKind; publicAddress: string; verified: boolean }): StrategyName[] {
  if (!initiator.verified || !recipient.verified || crossFamily(initiator.publicAddress, recipient.publicAddress)) return ['relay'];
  const plan: StrategyName[] = [];
  const i = initiator.mapping.kind;
  const r = recipient.mapping.kind;
  const cone = (k: string): boolean => k === 'eim' || k === 'unknown' || k === 'none';
  // Behind a NAT mapping endpoint-independently (a side without NAT got public/reversal above).
  const mapped = (k: string): boolean => k === 'eim' || k === 'unknown';
  if (initiator.publicAddress === recipient.publicAddress && !(i === 'none' && r === 'none')) plan.push('lan');
  if (r === 'none') plan.push('public');
  else if (i === 'none') plan.push('reversal');
  if (cone(i) && cone(r)) plan.push('direct');
  else if ((i === 'sequential' && (cone(r) || r === 'sequential')) || (r === 'sequential' && cone(i))) plan.push('predicted');
  else if ((i === 'random' && mapped(r)) || (r === 'random' && mapped(i))) plan.push('birthday');
  plan.push('relay');
  return [...new Set(plan)];
}

/** Schedules a datagram attempt (rendezvous step 6 for TRANSPORT = datagram). Pure. */
export function scheduleDatagram(sides: { initiator: DatagramSide; recipient: DatagramSide }, rtts: RoundTrips, failures: Failures, now: number): Schedule {
  const { initiator, recipient } = sides;
  const initiatorMapping = classifyTcpMapping(initiator.publicEndpoint, initiator.probes, initiator.privateEndpoints);
  const recipientMapping = classifyTcpMapping(recipient.publicEndpoint, recipient.probes, recipient.privateEndpoints);
  const plan = planDatagram(
    { mapping: initiatorMapping, publicAddress: initiator.publicEndpoint.address, verified: initiator.verified },
    { mapping: recipientMapping, publicAddress: recipient.publicEndpoint.address, verified: recipient.verified },
  );
  const scheduled = new Set(failures.history.filter((h) => now - h.at <= ATTEMPT_HISTORY_MS).map((h) => h.strategy));
  const choice = chooseStrategy(plan, { scheduled, claimed: failures.claimed, budget: failures.budget });
  const strategy = choice.strategy;
  const base = startDelays(rtts.initiatorMs, rtts.recipientMs);
  // Birthday: the random side's mappings exist before the cone side's probes arrive.
  const lag = (random: boolean): number => (strategy === 'birthday' && !random ? BIRTHDAY_CONE_LAG_MS : 0);
  const delays = { initiatorMs: base.initiatorMs + lag(initiatorMapping.kind === 'random'), recipientMs: base.recipientMs + lag(recipientMapping.kind === 'random') };
  // For prediction a sequential side is named by the last port its NAT gave out (the peer aims past it).
  const aim = (side: DatagramSide, mapping: MappingKind): TransportAddress =>
    strategy === 'predicted' && mapping.kind === 'sequential' ? { ...side.publicEndpoint, port: lastObservedPort(side.publicEndpoint, side.probes) } : side.publicEndpoint;
  return assembleSchedule(
    sides,
    { plan, choice, mappings: { initiator: initiatorMapping, recipient: recipientMapping }, delays },
    aim,
    // Only LAN addresses go to the other peer to probe: a peer cannot aim them at a public host.
    (other) => other.privateEndpoints.filter((p) => isPrivateAddress(p.address)),
  );
}
