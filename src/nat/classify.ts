/**
 * NAT behaviour discovery logic (RFC 5780 §4), free of sockets: the tests are
 * run through an injected "send a Binding and await the response" interface,
 * so the same code is unit-tested with canned answers and run for real by
 * discovery.ts.
 */
import type { Behaviour, NatProfile, PortAllocation, TcpProfile } from './profile.js';

/** An IP address and port. */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** CHANGE-REQUEST flags (RFC 5780 §7.2). */
export interface ChangeFlags {
  readonly changeIp: boolean;
  readonly changePort: boolean;
}

/** What one Binding transaction produced: a success, an error response, or (undefined) silence. */
export type BindingOutcome =
  | {
      readonly ok: true;
      /** XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an old server). */
      readonly mapped: Endpoint;
      /** OTHER-ADDRESS (RFC 5780 §7.4), when the server sent it. */
      readonly otherAddress?: Endpoint;
      /** Where the response came from (the datagram's source). */
      readonly source: Endpoint;
    }
  | { readonly ok: false; readonly code: number; readonly reason: string };

/** The local and the mapped port of one fresh socket (or connection). */
export interface PortSample {
  readonly local: number;
  readonly mapped: number;
}

/** UDP I/O for discovery. Everything except {@link UdpProbeIo.freshMapping} uses one local socket. */
export interface UdpProbeIo {
  /** The local port of the shared socket. */
  readonly localPort: number;
  /** This host's IP addresses (to recognise "no NAT"). */
  readonly localAddresses: readonly string[];
  /** Sends a Binding request (retransmitted per RFC 8489 §6.2.1) from the shared socket; undefined when nothing answers. */
  binding(to: Endpoint, change: ChangeFlags | undefined, signal: AbortSignal): Promise<BindingOutcome | undefined>;
  /** RFC 5780 §4.5: sends a Binding request from the shared socket to `to`; true when that very request comes back to it. */
  hairpin(to: Endpoint, signal: AbortSignal): Promise<boolean>;
  /** A fresh socket sends one Binding request to `to`; its local and mapped port, or undefined when nothing answers. */
  freshMapping(to: Endpoint, signal: AbortSignal): Promise<PortSample | undefined>;
}

/** TCP I/O for discovery. */
export interface TcpProbeIo {
  /** Connects from the shared local port (the first call picks it) to `to` and sends a Binding; the mapped endpoint, or undefined on failure. */
  sharedBinding(to: Endpoint, signal: AbortSignal): Promise<Endpoint | undefined>;
  /** Connects from a fresh local port to `to` and sends a Binding; undefined on failure. */
  freshMapping(to: Endpoint, signal: AbortSignal): Promise<PortSample | undefined>;
}

/** The largest port step still called "sequential": bigger regular steps are rare and look random to a predictor anyway. */
export const MAX_SEQUENTIAL_STEP = 16;
/** Fewest samples needed to see a step twice (two differences). */
export const MIN_ALLOCATION_SAMPLES = 3;

/**
 * How to get the full RFC 5780 answer from a server without OTHER-ADDRESS: a
 * nattrav broker with a second IP address (`nattrav broker --alternate`).
 */
export const FULL_RFC5780_HINT =
  'for the full RFC 5780 answer (mapping and filtering), run the broker on a host with two IP addresses: ' +
  'nattrav broker --listen IP:PORT --alternate IP2';

/** True when both endpoints have the same address and port. */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a.address === b.address && a.port === b.port;
}

/**
 * RFC 5780 §4.3: compares the mapped endpoints of test I (primary address and
 * port), test II (alternate address, primary port) and test III (alternate
 * address and port). Undefined when test III is needed but missing.
 */
export function classifyMapping(test1: Endpoint, test2: Endpoint, test3: Endpoint | undefined): Behaviour | undefined {
  if (sameEndpoint(test1, test2)) return 'endpoint-independent';
  if (test3 === undefined) return undefined;
  return sameEndpoint(test2, test3) ? 'address-dependent' : 'address-and-port-dependent';
}

/**
 * RFC 5780 §4.4: whether the responses of test II (change IP and port) and
 * test III (change port) got through.
 */
export function classifyFiltering(test2Answered: boolean, test3Answered: boolean): Behaviour {
  if (test2Answered) return 'endpoint-independent';
  return test3Answered ? 'address-dependent' : 'address-and-port-dependent';
}

/**
 * Port allocation from fresh sockets, in the order they were mapped: every
 * mapped port equal to its local port is "preserving"; a constant difference
 * between consecutive mapped ports (non-zero, at most {@link MAX_SEQUENTIAL_STEP})
 * is "sequential"; anything else "random". Undefined with fewer than
 * {@link MIN_ALLOCATION_SAMPLES} samples.
 */
export function classifyAllocation(samples: readonly PortSample[]): PortAllocation | undefined {
  if (samples.length < MIN_ALLOCATION_SAMPLES) return undefined;
  if (samples.every((s) => s.local === s.mapped)) return { kind: 'preserving' };
  const steps = samples.slice(1).map((s, i) => s.mapped - samples[i].mapped);
  const step = steps[0];
  if (step !== 0 && Math.abs(step) <= MAX_SEQUENTIAL_STEP && steps.every((d) => d === step)) return { kind: 'sequential', step };
  return { kind: 'random' };
}

/** Which UDP tests to run, and how many fresh sockets to sample. */
export interface UdpDiscoveryPlan {
  /** Fresh sockets used to judge port allocation. */
  readonly allocationSamples: number;
  /** Run the hairpinning test. */
  readonly hairpinning: boolean;
}

/** The UDP part of a {@link NatProfile}, plus OTHER-ADDRESS for the TCP tests. */
export interface UdpFindings {
  readonly profile: NatProfile;
  /** OTHER-ADDRESS from test I, when the server supports RFC 5780. */
  readonly otherAddress?: Endpoint;
}

/** Collects fresh-socket samples one after another (order matters for "sequential"). */
async function sample(fresh: (signal: AbortSignal) => Promise<PortSample | undefined>, count: number, signal: AbortSignal): Promise<PortSample[]> {
  const samples: PortSample[] = [];
  for (let i = 0; i < count; i++) {
    const s = await fresh(signal);
    if (s !== undefined) samples.push(s);
  }
  return samples;
}

/**
 * Runs RFC 5780's UDP tests against `server` through `io`:
 *
 * 1. Test I: a plain Binding. Silence means UDP is blocked; the mapped
 *    address gives the public address, and equals a local one without NAT.
 * 2. Filtering (§4.4) before mapping: tests II and III are requests to the
 *    primary address asking for answers from elsewhere. Run first, because the
 *    mapping tests send to the alternate address, which would open the very
 *    filter holes the filtering tests look for on this one socket.
 * 3. Mapping (§4.3): tests II and III to the alternate address (OTHER-ADDRESS).
 * 4. Hairpinning (§4.5): a Binding to our own mapped endpoint.
 * 5. Port allocation: one Binding each from several fresh sockets.
 */
export async function runUdpDiscovery(io: UdpProbeIo, server: Endpoint, plan: UdpDiscoveryPlan, signal: AbortSignal): Promise<UdpFindings> {
  const notes: string[] = [];
  const test1 = await io.binding(server, undefined, signal);
  if (test1 === undefined) return { profile: { udpBlocked: true, isPublic: false } };
  if (!test1.ok) {
    notes.push(`the server answered a plain Binding with error ${test1.code} (${test1.reason})`);
    return { profile: { udpBlocked: false, isPublic: false, notes } };
  }
  const profile: NatProfile = {
    udpBlocked: false,
    isPublic: test1.mapped.port === io.localPort && io.localAddresses.includes(test1.mapped.address),
    publicAddress: test1.mapped.address,
  };
  const other = test1.otherAddress;
  if (other === undefined) {
    notes.push('the server sent no OTHER-ADDRESS (no RFC 5780 support): mapping and filtering were not tested', FULL_RFC5780_HINT);
  } else {
    profile.filtering = await filtering(io, server, notes, signal);
    profile.mapping = await mapping(io, server, other, test1.mapped, notes, signal);
  }
  if (profile.filtering === undefined) delete profile.filtering;
  if (profile.mapping === undefined) delete profile.mapping;
  if (plan.hairpinning) profile.hairpinning = await io.hairpin(test1.mapped, signal);
  const allocation = classifyAllocation(await sample((s) => io.freshMapping(server, s), plan.allocationSamples, signal));
  if (allocation !== undefined) profile.allocation = allocation;
  else notes.push('too few fresh UDP sockets were answered to judge port allocation');
  if (notes.length > 0) profile.notes = notes;
  return other === undefined ? { profile } : { profile, otherAddress: other };
}

async function filtering(io: UdpProbeIo, server: Endpoint, notes: string[], signal: AbortSignal): Promise<NatProfile['filtering']> {
  const test2 = await io.binding(server, { changeIp: true, changePort: true }, signal);
  if (test2 !== undefined && !test2.ok) {
    notes.push(`the server refused CHANGE-REQUEST with error ${test2.code}: filtering was not tested`);
    return undefined;
  }
  if (test2 !== undefined && (test2.source.address === server.address || test2.source.port === server.port)) {
    notes.push(`the server answered "change IP and port" from ${test2.source.address}:${test2.source.port}: filtering was not tested`);
    return undefined;
  }
  if (test2 !== undefined) return classifyFiltering(true, false);
  const test3 = await io.binding(server, { changeIp: false, changePort: true }, signal);
  return classifyFiltering(false, test3 !== undefined && test3.ok && test3.source.port !== server.port);
}

async function mapping(
  io: UdpProbeIo,
  server: Endpoint,
  other: Endpoint,
  test1: Endpoint,
  notes: string[],
  signal: AbortSignal,
): Promise<NatProfile['mapping']> {
  const test2 = await io.binding({ address: other.address, port: server.port }, undefined, signal);
  if (test2 === undefined || !test2.ok) {
    notes.push(`no answer from the alternate address ${other.address}:${server.port}: mapping was not tested`);
    return undefined;
  }
  if (sameEndpoint(test1, test2.mapped)) return classifyMapping(test1, test2.mapped, undefined);
  const test3 = await io.binding(other, undefined, signal);
  if (test3 === undefined || !test3.ok) {
    notes.push(`no answer from the alternate address and port ${other.address}:${other.port}: mapping was not fully tested`);
    return undefined;
  }
  return classifyMapping(test1, test2.mapped, test3.mapped);
}

/**
 * The TCP counterpart of the mapping test (RFC 5382 §4.1): Binding requests
 * over connections from one local port to the primary address, the alternate
 * address (primary port) and the alternate address and port. Without an
 * alternate address only the alternate port of the primary address is tried,
 * which can prove port dependence but not independence. Then port allocation
 * from fresh connections.
 */
export async function runTcpDiscovery(
  io: TcpProbeIo,
  server: Endpoint,
  other: Endpoint | undefined,
  allocationSamples: number,
  signal: AbortSignal,
): Promise<{ tcp: TcpProfile; notes: string[] }> {
  const notes: string[] = [];
  const test1 = await io.sharedBinding(server, signal);
  if (test1 === undefined) return { tcp: { blocked: true }, notes };
  const tcp: TcpProfile = { blocked: false };
  if (other !== undefined) {
    const test2 = await io.sharedBinding({ address: other.address, port: server.port }, signal);
    const test3 = test2 === undefined || sameEndpoint(test1, test2) ? undefined : await io.sharedBinding(other, signal);
    const behaviour = test2 === undefined ? undefined : classifyMapping(test1, test2, test3);
    if (behaviour !== undefined) tcp.mapping = behaviour;
    else notes.push('TCP Binding to the alternate address failed: TCP mapping was not fully tested');
  } else {
    const altPort = await io.sharedBinding({ address: server.address, port: server.port + 1 }, signal);
    if (altPort !== undefined && !sameEndpoint(test1, altPort)) tcp.mapping = 'address-and-port-dependent';
    else notes.push('no alternate address known: TCP mapping could not be proven endpoint-independent');
  }
  const allocation = classifyAllocation(await sample((s) => io.freshMapping(server, s), allocationSamples, signal));
  if (allocation !== undefined) tcp.allocation = allocation;
  return { tcp, notes };
}
