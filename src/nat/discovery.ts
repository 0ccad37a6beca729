/**
 * `discoverNat()`: NAT behaviour discovery (RFC 5780 §4) against a STUN server
 * that has an alternate address and port (a nattrav broker started with an
 * alternate host, or coturn with two listening addresses). UDP first, then TCP,
 * one after the other so a sequential NAT's port counter sees only our flows.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { formatEndpoint, toHostPort, type HostPort } from '../common/endpoint.js';
import { abortError, throwIfAborted } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';
import { runTcpDiscovery, runUdpDiscovery, type Endpoint } from './classify.js';
import type { NatProfile } from './profile.js';
import { TcpProber } from './tcp-prober.js';
import { UdpProber, type UdpTiming } from './udp-prober.js';

/** RFC 8489 §18.4: the default STUN port. */
export const DEFAULT_STUN_PORT = 3478;

/** Options of {@link discoverNat}. */
export interface DiscoverNatOptions {
  /** The STUN server: `HOST:PORT` (port defaults to 3478) or `{ host, port }`. */
  server: HostPort | string;
  /** Aborts discovery; it rejects with ERR_ABORTED (or the signal's NattravError). */
  signal?: AbortSignal;
  /** First UDP retransmission timeout, doubled per resend. @default 100 */
  udpRtoMs?: number;
  /** UDP requests per transaction (RFC 8489's Rc). @default 3 */
  udpTransmissions?: number;
  /** Wait after the last UDP request before a test counts as unanswered. @default 400 */
  udpLastWaitMs?: number;
  /** Limit on one TCP probe: connect plus Binding exchange. @default 1000 */
  tcpProbeTimeoutMs?: number;
  /** Fresh sockets (and fresh TCP connections) sampled for port allocation. @default 4 */
  allocationSamples?: number;
  /** Run the hairpinning test. @default true */
  hairpinning?: boolean;
  /** Run the TCP tests. @default true */
  tcp?: boolean;
}

/** Defaults of {@link DiscoverNatOptions}, in one place. */
export const DISCOVERY_DEFAULTS = {
  /** A lab or LAN round trip is well under 10 ms; 100 ms still covers a continent (RFC 8489 says 500 ms for unknown paths). */
  udpRtoMs: 100,
  /** Three sends at 0, 100 and 300 ms survive two lost datagrams. */
  udpTransmissions: 3,
  /** 400 ms after the last send: a silent test costs 700 ms in all. */
  udpLastWaitMs: 400,
  /** One TCP handshake plus one exchange; a NAT that drops SYNs is found out within a second. */
  tcpProbeTimeoutMs: 1_000,
  /** Four samples give three differences: enough to tell a step from chance. */
  allocationSamples: 4,
  hairpinning: true,
  tcp: true,
} as const;

function positiveInteger(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `discoverNat option ${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/** How long one unanswered UDP transaction waits in all: the resends' timeouts plus the last wait. */
function silenceMs(timing: UdpTiming): number {
  let total = timing.lastWaitMs;
  for (let i = 0, rto = timing.rtoMs; i < timing.transmissions - 1; i++, rto *= 2) total += rto;
  return total;
}

/** Resolves a host name to one address (IP literals pass through); ERR_BROKER_UNREACHABLE names a name that does not resolve. */
export async function resolveServer(server: HostPort, signal: AbortSignal | undefined): Promise<Endpoint> {
  if (isIP(server.host) !== 0) return { address: server.host, port: server.port };
  try {
    const { address } = await lookup(server.host);
    throwIfAborted(signal);
    return { address, port: server.port };
  } catch (err) {
    if (signal?.aborted === true) throw abortError(signal);
    throw new NattravError(ErrorCode.BrokerUnreachable, `cannot resolve STUN server ${server.host}: ${(err as { code?: string }).code ?? String(err)}`, {
      cause: err,
      port: server.port,
    });
  }
}

/**
 * Classifies the NAT between this host and `options.server` (RFC 5780 §4.2-4.5
 * over UDP from one local socket, port allocation from fresh sockets, and the
 * TCP mapping and allocation). A server without OTHER-ADDRESS still yields the
 * public address, hairpinning and allocation; `notes` says what was skipped.
 * Takes about one round trip per test, plus 700 ms (default timing) for each
 * test a NAT silences.
 *
 * `udpBlocked` is reported only when TCP reaches the server and UDP does not.
 * When neither answers, or UDP does not and the TCP tests are off (so a UDP
 * block cannot be told from a server that is down), it rejects with
 * ERR_BROKER_UNREACHABLE naming the server.
 */
export async function discoverNat(options: DiscoverNatOptions): Promise<NatProfile> {
  if (options === null || typeof options !== 'object') {
    throw new NattravError(ErrorCode.InvalidArgument, 'discoverNat needs an options object with a server');
  }
  const settings = { ...DISCOVERY_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as Required<Omit<DiscoverNatOptions, 'signal'>>;
  const timing = {
    rtoMs: positiveInteger(settings.udpRtoMs, 'udpRtoMs'),
    transmissions: positiveInteger(settings.udpTransmissions, 'udpTransmissions'),
    lastWaitMs: positiveInteger(settings.udpLastWaitMs, 'udpLastWaitMs'),
  };
  const tcpTimeoutMs = positiveInteger(settings.tcpProbeTimeoutMs, 'tcpProbeTimeoutMs');
  const samples = positiveInteger(settings.allocationSamples, 'allocationSamples');
  const server = await resolveServer(toHostPort(options.server, 'server', DEFAULT_STUN_PORT), options.signal);
  const signal = options.signal ?? new AbortController().signal;
  throwIfAborted(signal);

  const udp = await UdpProber.open(server.address, timing);
  let findings;
  try {
    findings = await runUdpDiscovery(udp, server, { allocationSamples: samples, hairpinning: settings.hairpinning !== false }, signal);
  } finally {
    udp.close();
  }
  const profile: NatProfile = findings.profile;
  const where = formatEndpoint(server);
  const udpSilence = `no UDP answer from ${where} within ${silenceMs(timing)} ms`;
  if (settings.tcp === false) {
    if (!profile.udpBlocked) return profile;
    throw new NattravError(
      ErrorCode.BrokerUnreachable,
      `broker unreachable: ${udpSilence}. UDP may be blocked on the way, or the broker may be down; ` +
        'the TCP tests, which were off, tell the two apart (netcheck: drop --no-tcp; discoverNat: tcp: true)',
      { address: server.address, port: server.port },
    );
  }
  const tcpProber = new TcpProber(tcpTimeoutMs);
  try {
    const { tcp, notes } = await runTcpDiscovery(tcpProber, server, findings.otherAddress, samples, signal);
    if (profile.udpBlocked && tcp.blocked) {
      throw new NattravError(
        ErrorCode.BrokerUnreachable,
        `broker unreachable: neither UDP nor TCP to ${where} got an answer (${udpSilence}; TCP: ${tcpProber.lastFailure ?? 'no answer'})`,
        { address: server.address, port: server.port },
      );
    }
    profile.tcp = tcp;
    if (notes.length > 0) profile.notes = [...(profile.notes ?? []), ...notes];
  } finally {
    tcpProber.close();
  }
  return profile;
}
