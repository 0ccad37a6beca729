/**
 * How a NAT maps TCP, measured per attempt by the broker: the peer opens its
 * exchange and a probe connection (to another broker port) from one local
 * port; the broker compares the public endpoints it sees. Equal ports: endpoint-
 * independent. A small positive step: sequential (a random allocator lands
 * within MAX_SEQUENTIAL_STEP of the first port about 0.05% of the time; the
 * prediction then fails and the plan moves on). Pure: no sockets.
 */
import type { TransportAddress } from '../wire/types.js';
import { MAX_SEQUENTIAL_STEP } from './classify.js';

/** What the broker concluded about one side's TCP mapping. */
export type MappingKind =
  /** No NAT: the public endpoint is one of the peer's own. */
  | { kind: 'none' }
  /** Endpoint-independent mapping: one public port for every destination (cone or port-restricted). */
  | { kind: 'eim' }
  /** A new public port per flow, `step` apart (sequential symmetric NAT). */
  | { kind: 'sequential'; step: number }
  /** A new, unpredictable public port per flow (random symmetric NAT). */
  | { kind: 'random' }
  /** Too few observations (probes blocked or lost). */
  | { kind: 'unknown' };


/**
 * Classifies from the exchange's public endpoint, the probes' public endpoints
 * (same local port, other broker port) and the peer's own private endpoints.
 */
export function classifyTcpMapping(
  exchange: TransportAddress,
  probes: readonly TransportAddress[],
  privateEndpoints: readonly TransportAddress[],
): MappingKind {
  if (claimsNoNat(exchange, privateEndpoints)) return { kind: 'none' };
  if (probes.length === 0) return { kind: 'unknown' };
  const ports = [exchange.port, ...probes.map((p) => p.port)];
  if (ports.every((port) => port === exchange.port)) return { kind: 'eim' };
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  if (sorted.length === ports.length && sorted.length >= 2) {
    const step = (sorted[1] as number) - (sorted[0] as number);
    const even = sorted.every((port, i) => i === 0 || port - (sorted[i - 1] as number) === step);
    if (even && step > 0 && step <= MAX_SEQUENTIAL_STEP) return { kind: 'sequential', step };
  }
  return { kind: 'random' };
}

/**
 * True when the peer names its exchange's public endpoint among its own (PRIVATE-ENDPOINT): no
 * NAT. A claim of the peer about itself only: it must not be remembered for its public address.
 */
export function claimsNoNat(exchange: TransportAddress, privateEndpoints: readonly TransportAddress[]): boolean {
  return privateEndpoints.some((p) => p.address === exchange.address && p.port === exchange.port);
}

/** The last (highest) port seen for a sequential NAT: the next flow gets last + step. */
export function lastObservedPort(exchange: TransportAddress, probes: readonly TransportAddress[]): number {
  return Math.max(exchange.port, ...probes.map((p) => p.port));
}

const KIND_CODES = { unknown: 0, none: 1, eim: 2, sequential: 3, random: 4 } as const;

/** Encodes a {@link MappingKind} as a u32: kind in the low byte, step in the next. */
export function encodeMappingKind(mapping: MappingKind): number {
  const step = mapping.kind === 'sequential' ? mapping.step : 0;
  return (KIND_CODES[mapping.kind] | (step << 8)) >>> 0;
}

/** Decodes {@link encodeMappingKind}; unknown codes decode as 'unknown'. */
export function decodeMappingKind(value: number): MappingKind {
  const code = value & 0xff;
  const step = (value >>> 8) & 0xffff;
  switch (code) {
    case KIND_CODES.none:
      return { kind: 'none' };
    case KIND_CODES.eim:
      return { kind: 'eim' };
    case KIND_CODES.sequential:
      return step > 0 ? { kind: 'sequential', step } : { kind: 'unknown' };
    case KIND_CODES.random:
      return { kind: 'random' };
    default:
      return { kind: 'unknown' };
  }
}
