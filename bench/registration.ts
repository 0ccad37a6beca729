/**
 * Registration and lookup rates of one broker pinned to core 0, the generator (this process)
 * on core 1, on loopback: first registrations with proof of key, refreshes under a session,
 * first registrations in open mode, and lookups (Connect for a registered URI, counted when
 * the broker's ConnectionRequest reaches the recipient). The same measurement runs against
 * three brokers on one Redis (redis.ts).
 */
import { generateKeyPair } from '../src/security/keys.js';
import { lookupLoad } from './lib/lookup-load.js';
import { ProofFlows, openRegistration, refresh } from './lib/register.js';
import { figure, type Figure, type Target } from './lib/results.js';
import { startBenchBroker, type RunningServer } from './lib/servers.js';
import { SERVER_CORE, type Bench, type BenchContext } from './lib/suite.js';
import { closeSockets, openSockets, udpLoad } from './lib/udp-load.js';
import { nodeFloor } from './stun.js';
import { withCpu } from './lib/cpu.js';

/** Generator sockets and requests in flight on each. */
const SOCKETS = 8;
const WINDOW = 16;
/**
 * Requests built before a timed phase (refreshes, open registrations), so the generator only
 * sends and matches answers while the clock runs: more than a broker on one core answers in
 * a phase. A phase that runs out ends early; its rate stays valid.
 */
const PREBUILT = { full: 240_000, quick: 8_000 };
/** Registrations with proof in flight per socket: each costs the broker a signature check, so fewer keep it just as busy. */
const PROOF_WINDOW = 4;
/** Duration of each measured phase, ms. */
const PHASE_MS = { full: 5_000, quick: 500 };
/** TCP lookups at a time, and registered recipients they look up. */
const LOOKUP_PARALLEL = 32;
const LOOKUP_RECIPIENTS = 16;
/** Registrations and sessions a bench broker may hold. */
const CAP = 1_000_000;
/** Issue 10: refreshes at least 0.8x the Node floor per core. */
export const REFRESH_TARGET: Target = { op: '>=', value: 0.8, text: '>= 0.8x the Node dgram floor per core' };

/** A rate per second and the CPU the broker(s) used meanwhile (1 = one core busy all along). */
export interface Rate {
  readonly perSecond: number;
  readonly busy: number;
}

/** The four rates. */
export interface RegistrationRates {
  readonly proof: Rate;
  readonly refresh: Rate;
  readonly open: Rate;
  readonly lookups: Rate;
}

/** Starts the broker(s) under test: authenticated or open; returns them (the caller's cleanup stops them). */
export type StartBrokers = (open: boolean) => Promise<RunningServer[]>;

const pidsOf = (servers: readonly RunningServer[]): number[] => servers.map((s) => s.child.pid);
const describeRate = (r: Rate): string => `${Math.round(r.perSecond)}/s, broker CPU ${(r.busy * 100).toFixed(0)}%`;

/** Builds `total` requests (`make(socket, k)`, k-th of that socket) spread over `sockets`; returns udpLoad's `next`. */
function prebuild(sockets: number, total: number, make: (socket: number, k: number) => Buffer | undefined): (socket: number) => Buffer | undefined {
  const lists = Array.from({ length: sockets }, (_, i) => {
    const list: Buffer[] = [];
    for (let k = 0; k < Math.ceil(total / sockets); k++) {
      const bytes = make(i, k);
      if (bytes === undefined) break;
      list.push(bytes);
    }
    return list;
  });
  const cursor = lists.map(() => 0);
  return (i) => lists[i]![cursor[i]!++];
}

async function authenticatedRates(ctx: BenchContext, servers: readonly RunningServer[], ms: number): Promise<{ proof: Rate; refresh: Rate }> {
  const ports = servers.map((s) => s.port);
  const sockets = await openSockets(SOCKETS);
  try {
    const flows = new ProofFlows(generateKeyPair(), SOCKETS);
    let n = 0;
    const proof = await withCpu(pidsOf(servers), () => udpLoad({ ports, sockets, window: PROOF_WINDOW, durationMs: ms, next: (i) => flows.first(`nattrav://bench-proof-${i}-${n++}`), onAnswer: (i, a) => flows.answer(i, a) }));
    const proofRate = { perSecond: proof.result.succeeded / proof.result.seconds, busy: proof.busy };
    ctx.log(`  first registrations with proof of key: ${describeRate(proofRate)} (${proof.result.succeeded} sessions, ${proof.result.failed} refused, ${proof.result.lost} lost)`);
    const prebuilt = prebuild(sockets.length, PREBUILT[ctx.quick ? 'quick' : 'full'], (i, k) => {
      const own = flows.sessions[i]!;
      return own.length === 0 ? undefined : refresh(own[k % own.length]!);
    });
    const refreshes = await withCpu(pidsOf(servers), () => udpLoad({ ports, sockets, window: WINDOW, durationMs: ms, next: prebuilt, retransmit: false }));
    const refreshRate = { perSecond: refreshes.result.succeeded / refreshes.result.seconds, busy: refreshes.busy };
    ctx.log(`  refreshes: ${describeRate(refreshRate)} (${refreshes.result.failed} refused, ${refreshes.result.lost} lost)`);
    return { proof: proofRate, refresh: refreshRate };
  } finally {
    await closeSockets(sockets);
  }
}

async function openRates(ctx: BenchContext, servers: readonly RunningServer[], ms: number): Promise<{ open: Rate; lookups: Rate }> {
  const ports = servers.map((s) => s.port);
  const sockets = await openSockets(SOCKETS);
  const recipients = await openSockets(LOOKUP_RECIPIENTS);
  try {
    const prebuilt = prebuild(sockets.length, PREBUILT[ctx.quick ? 'quick' : 'full'], (i, k) => openRegistration(`nattrav://bench-open-${i}-${k}`));
    const open = await withCpu(pidsOf(servers), () => udpLoad({ ports, sockets, window: WINDOW, durationMs: ms, next: prebuilt, retransmit: false }));
    const openRate = { perSecond: open.result.succeeded / open.result.seconds, busy: open.busy };
    ctx.log(`  first registrations, open mode: ${describeRate(openRate)} (${open.result.failed} refused, ${open.result.lost} lost)`);
    const sent = recipients.map(() => false);
    const uris = recipients.map((_, r) => `nattrav://bench-lookup-${r}`);
    const registered = await udpLoad({ ports, sockets: recipients, window: 1, durationMs: 10_000, next: (r) => (sent[r] ? undefined : ((sent[r] = true), openRegistration(uris[r]!))) });
    if (!registered.complete || registered.succeeded !== LOOKUP_RECIPIENTS) throw new Error(`only ${registered.succeeded} of ${LOOKUP_RECIPIENTS} lookup recipients registered`);
    const lookups = await withCpu(pidsOf(servers), () => lookupLoad({ ports, recipients: recipients.map((socket, r) => ({ socket, uri: uris[r]! })), parallel: LOOKUP_PARALLEL, durationMs: ms }));
    const lookupRate = { perSecond: lookups.result.answered / lookups.result.seconds, busy: lookups.busy };
    ctx.log(`  lookups: ${describeRate(lookupRate)} (${lookups.result.failed} failed)`);
    return { open: openRate, lookups: lookupRate };
  } finally {
    await closeSockets(sockets);
    await closeSockets(recipients);
  }
}

/** Measures the four rates against the brokers `start` gives (stopped after each half). */
export async function registrationRates(ctx: BenchContext, start: StartBrokers): Promise<RegistrationRates> {
  const ms = PHASE_MS[ctx.quick ? 'quick' : 'full'];
  const auth = await start(false);
  let first: { proof: Rate; refresh: Rate };
  try {
    first = await authenticatedRates(ctx, auth, ms);
  } finally {
    for (const s of auth) await s.stop();
  }
  const open = await start(true);
  try {
    return { ...first, ...(await openRates(ctx, open, ms)) };
  } finally {
    for (const s of open) await s.stop();
  }
}

/** The rows of {@link RegistrationRates}: `setup` names the brokers (e.g. "one broker"). */
export function registrationFigures(bench: string, setup: string, rates: RegistrationRates, floor: number): Figure[] {
  const row = (id: keyof RegistrationRates, label: string, extra: { target?: Target; note?: string } = {}): Figure => {
    const rate = rates[id];
    const cpu = `broker CPU ${(rate.busy * 100).toFixed(0)}% of a core`;
    const note = extra.note === undefined ? cpu : `${cpu}; ${extra.note}`;
    return figure({ bench, id: `${bench}.${id}`, label: `${label}, ${setup}`, value: rate.perSecond, unit: '/s', note, ...(extra.target === undefined ? {} : { compared: rate.perSecond / floor, target: extra.target }) });
  };
  return [
    row('refresh', 'Registration refreshes/s (authenticated)', { target: REFRESH_TARGET }),
    row('proof', 'First registrations with proof of key/s (ECDSA P-256)', { note: 'profiled in BENCHMARKS.md' }),
    row('open', 'First registrations/s, open mode'),
    row('lookups', 'Lookups/s (Connect for a registered URI over a fresh TCP exchange)'),
  ];
}

/** The one-broker registration benchmark. */
export const registrationBench: Bench = {
  name: 'registration',
  summary: 'Registrations (proof of key, refresh, open) and lookups per second, one broker on one core',
  async run(ctx) {
    const floor = await nodeFloor(ctx);
    const rates = await registrationRates(ctx, async (open) => [await startBenchBroker({ open, max: CAP }, SERVER_CORE)]);
    return registrationFigures('registration', 'one broker, one core', rates, floor);
  },
};
