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

/** Generator sockets and requests in flight on each. */
const SOCKETS = 8;
const WINDOW = 16;
/** Duration of each measured phase, ms. */
const PHASE_MS = { full: 5_000, quick: 500 };
/** TCP lookups at a time, and registered recipients they look up. */
const LOOKUP_PARALLEL = 32;
const LOOKUP_RECIPIENTS = 16;
/** Registrations and sessions a bench broker may hold. */
const CAP = 1_000_000;
/** Issue 10: refreshes at least 0.8x the Node floor per core. */
export const REFRESH_TARGET: Target = { op: '>=', value: 0.8, text: '>= 0.8x the Node dgram floor per core' };

/** The four rates, per second. */
export interface RegistrationRates {
  readonly proof: number;
  readonly refresh: number;
  readonly open: number;
  readonly lookups: number;
}

/** Starts the broker(s) under test: authenticated or open; returns them (the caller's cleanup stops them). */
export type StartBrokers = (open: boolean) => Promise<RunningServer[]>;

async function authenticatedRates(ctx: BenchContext, ports: number[], ms: number): Promise<{ proof: number; refresh: number }> {
  const sockets = await openSockets(SOCKETS);
  try {
    const flows = new ProofFlows(generateKeyPair(), SOCKETS);
    let n = 0;
    const proof = await udpLoad({ ports, sockets, window: WINDOW, durationMs: ms, next: (i) => flows.first(`nattrav://bench-proof-${i}-${n++}`), onAnswer: (i, a) => flows.answer(i, a) });
    const proofRate = proof.succeeded / proof.seconds;
    ctx.log(`  first registrations with proof of key: ${Math.round(proofRate)}/s (${proof.succeeded} sessions, ${proof.failed} refused, ${proof.lost} lost)`);
    const cursor = sockets.map(() => 0);
    const next = (i: number): Buffer | undefined => {
      const own = flows.sessions[i]!;
      if (own.length === 0) return undefined;
      return refresh(own[cursor[i]!++ % own.length]!);
    };
    const refreshes = await udpLoad({ ports, sockets, window: WINDOW, durationMs: ms, next, retransmit: false });
    const refreshRate = refreshes.succeeded / refreshes.seconds;
    ctx.log(`  refreshes: ${Math.round(refreshRate)}/s (${refreshes.failed} refused, ${refreshes.lost} lost)`);
    return { proof: proofRate, refresh: refreshRate };
  } finally {
    await closeSockets(sockets);
  }
}

async function openRates(ctx: BenchContext, ports: number[], ms: number): Promise<{ open: number; lookups: number }> {
  const sockets = await openSockets(SOCKETS);
  const recipients = await openSockets(LOOKUP_RECIPIENTS);
  try {
    let n = 0;
    const open = await udpLoad({ ports, sockets, window: WINDOW, durationMs: ms, next: (i) => openRegistration(`nattrav://bench-open-${i}-${n++}`), retransmit: false });
    const openRate = open.succeeded / open.seconds;
    ctx.log(`  first registrations, open mode: ${Math.round(openRate)}/s (${open.failed} refused, ${open.lost} lost)`);
    const sent = recipients.map(() => false);
    const uris = recipients.map((_, r) => `nattrav://bench-lookup-${r}`);
    const registered = await udpLoad({ ports, sockets: recipients, window: 1, durationMs: 10_000, next: (r) => (sent[r] ? undefined : ((sent[r] = true), openRegistration(uris[r]!))) });
    if (!registered.complete || registered.succeeded !== LOOKUP_RECIPIENTS) throw new Error(`only ${registered.succeeded} of ${LOOKUP_RECIPIENTS} lookup recipients registered`);
    const lookups = await lookupLoad({ ports, recipients: recipients.map((socket, r) => ({ socket, uri: uris[r]! })), parallel: LOOKUP_PARALLEL, durationMs: ms });
    const lookupRate = lookups.answered / lookups.seconds;
    ctx.log(`  lookups: ${Math.round(lookupRate)}/s (${lookups.failed} failed)`);
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
  let first: { proof: number; refresh: number };
  try {
    first = await authenticatedRates(ctx, auth.map((s) => s.port), ms);
  } finally {
    for (const s of auth) await s.stop();
  }
  const open = await start(true);
  try {
    return { ...first, ...(await openRates(ctx, open.map((s) => s.port), ms)) };
  } finally {
    for (const s of open) await s.stop();
  }
}

/** The rows of {@link RegistrationRates}: `setup` names the brokers (e.g. "one broker"). */
export function registrationFigures(bench: string, setup: string, rates: RegistrationRates, floor: number): Figure[] {
  return [
    figure({ bench, id: `${bench}.refresh`, label: `Registration refreshes/s (authenticated), ${setup}`, value: rates.refresh, unit: '/s', compared: rates.refresh / floor, target: REFRESH_TARGET }),
    figure({ bench, id: `${bench}.proof`, label: `First registrations with proof of key/s, ${setup}`, value: rates.proof, unit: '/s', note: 'measured and profiled (BENCHMARKS.md)' }),
    figure({ bench, id: `${bench}.open`, label: `First registrations/s, open mode, ${setup}`, value: rates.open, unit: '/s' }),
    figure({ bench, id: `${bench}.lookups`, label: `Lookups/s (Connect for a registered URI over a fresh TCP exchange), ${setup}`, value: rates.lookups, unit: '/s' }),
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
