/**
 * What a broker did, counted from its events ('event', events.ts) and, where no event
 * fits (registrations alive now, relay bytes while relays run), from its public
 * getters. The numbers live in a prom-client registry of the monitor's own (never
 * the global one), so `/metrics` and the status page read the same counters.
 *
 * Every label takes only known values (the strategy names, the mapping kinds, the
 * relay end reasons), so no input can make the series grow.
 */
import { Counter, Gauge, Histogram, Registry as MetricsRegistry } from 'prom-client';
import { ErrorCode, NattravError } from '../../errors.js';
import { STRATEGY_NAMES, type StrategyName } from '../../nat/strategy.js';
import type { Broker } from '../broker.js';
import type { BrokerEvent } from '../events.js';
import type { RelayEnded } from '../relay.js';

/**
 * What the monitor and the status server read of a broker: its events and a few getters.
 * A {@link Broker} is one; so is the whole-broker view of `--workers` (workers/status-view.ts).
 */
export type MonitoredBroker = Pick<Broker, 'relayedBytes' | 'activeRelays' | 'pendingAttempts' | 'listening' | 'registry' | 'address'> & {
  on(event: 'event', listener: (event: BrokerEvent) => void): unknown;
  off(event: 'event', listener: (event: BrokerEvent) => void): unknown;
};

/** The path an attempt got: a strategy, or `none` when the broker failed it before choosing one. */
export type AttemptPath = StrategyName | 'none';
/** Every {@link AttemptPath}, in the order the page shows them. */
export const ATTEMPT_PATHS: readonly AttemptPath[] = [...STRATEGY_NAMES, 'none'];
/** How the broker saw a NAT map TCP (nat/mapping.ts MappingKind, without the sequential step). */
export type NatMappingLabel = 'none' | 'eim' | 'sequential' | 'random' | 'unknown';
/** Every {@link NatMappingLabel}. */
export const NAT_MAPPING_LABELS: readonly NatMappingLabel[] = ['none', 'eim', 'sequential', 'random', 'unknown'];
/** Why relays ended (relay.ts). */
export const RELAY_END_REASONS: readonly RelayEnded['reason'][] = ['closed', 'byte-quota', 'time-quota'];
/**
 * Upper bounds of the setup-time histogram, in seconds: from a LAN (tens of ms) through
 * direct punches across continents (about a second) to relays after failed punches.
 */
export const SETUP_BUCKETS_SECONDS: readonly number[] = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** How many finished attempts {@link BrokerStatus.recent} keeps. */
export const RECENT_ATTEMPTS = 20;

/** One finished attempt, for the page's list of recent ones. */
export interface RecentAttempt {
  /** When it finished, ms since the epoch. */
  readonly at: number;
  /** The URI asked for (peer input: escape it before rendering). */
  readonly uri: string;
  readonly path: AttemptPath;
  readonly result: 'scheduled' | 'failed';
  /** Scheduled: ms from the Connect to the answers. */
  readonly setupMs?: number;
  /** Scheduled: the NAT pair. Failed: undefined. */
  readonly nat?: { readonly initiator: NatMappingLabel; readonly recipient: NatMappingLabel };
  /** Failed: why (the broker's reason, which can quote the recipient: escape it too). */
  readonly reason?: string;
}

/** Options of {@link BrokerMonitor}. */
export interface BrokerMonitorOptions {
  /** How often the monitor samples the numbers the page draws over time, in ms. @default 10000 */
  sampleIntervalMs?: number;
  /** Samples kept (the newest). @default 60 (ten minutes at the default interval) */
  historySamples?: number;
}

/** Defaults of {@link BrokerMonitorOptions}. */
export const MONITOR_DEFAULTS = { sampleIntervalMs: 10_000, historySamples: 60 } as const;

/** The numbers at one moment, for the page's charts over time. */
export interface StatusSample {
  /** ms since the epoch. */
  readonly at: number;
  readonly registrations: number;
  readonly activeRelays: number;
  /** Attempts started so far (a counter: the page draws its increase per interval). */
  readonly attempts: number;
  /** Bytes relayed so far (a counter). */
  readonly relayBytes: number;
}

/** Attempts of one path. */
export interface PathCounts {
  /** The broker answered both peers with this path. */
  readonly scheduled: number;
  /** The broker gave up on the attempt (only path `none`). */
  readonly failed: number;
}

/** A snapshot of everything the monitor counts (what the status page shows). */
export interface BrokerStatus {
  /** The broker is listening (what `/healthz` says). */
  readonly listening: boolean;
  /** When the snapshot was taken, ms since the epoch. */
  readonly at: number;
  /** Seconds since the monitor started counting. */
  readonly uptimeSeconds: number;
  /** Live registrations in the broker's registry now. */
  readonly registrations: number;
  /** Registrations made (not refreshes) since the monitor started. */
  readonly registrationsMade: number;
  /** Refreshes (keepalives renewing a registration). */
  readonly refreshes: number;
  /** Registrations withdrawn by their holders. */
  readonly withdrawals: number;
  /** Connects taken on. */
  readonly attempts: number;
  /** Connects that said earlier strategies of the same connect failed. */
  readonly retries: number;
  /** Attempts still waiting for their recipient or being scheduled. */
  readonly pendingAttempts: number;
  /** Attempts by path. */
  readonly byPath: Readonly<Record<AttemptPath, PathCounts>>;
  /** Scheduled attempts by the NAT mappings the broker saw (initiator, recipient); pairs never seen are left out. */
  readonly natPairs: ReadonlyArray<{ readonly initiator: NatMappingLabel; readonly recipient: NatMappingLabel; readonly attempts: number }>;
  /** Scheduled / (scheduled + failed), or undefined before any attempt finished. */
  readonly successRate: number | undefined;
  /** Setup times of scheduled attempts: count per bucket of {@link SETUP_BUCKETS_SECONDS}, then the rest (> the last bound). */
  readonly setup: { readonly boundsSeconds: readonly number[]; readonly counts: readonly number[]; readonly count: number; readonly sumSeconds: number };
  /** Samples taken every `sampleIntervalMs`, oldest first (at most `historySamples`). */
  readonly history: readonly StatusSample[];
  /** The interval between samples, in ms. */
  readonly sampleIntervalMs: number;
  /** The last {@link RECENT_ATTEMPTS} finished attempts, newest first. */
  readonly recent: readonly RecentAttempt[];
  /** Relays. */
  readonly relay: { readonly active: number; readonly started: number; readonly bytes: number; readonly ended: Readonly<Record<RelayEnded['reason'], number>> };
}

/** Counts a broker's events into Prometheus metrics `nattrav_broker_*`. Attach it before `listen()` to count everything. */
export class BrokerMonitor {
  /** The monitor's own metrics registry (Prometheus text via {@link BrokerMonitor.metricsText}). */
  readonly metrics = new MetricsRegistry();
  readonly #broker: MonitoredBroker;
  readonly #started = Date.now();
  readonly #onEvent = (event: BrokerEvent): void => this.#count(event);
  /** Newest last; at most {@link RECENT_ATTEMPTS}. */
  readonly #recent: RecentAttempt[] = [];
  readonly #registrations: Counter<'kind'>;
  readonly #withdrawals: Counter;
  readonly #attempts: Counter;
  readonly #retries: Counter;
  readonly #byPath: Counter<'path' | 'result'>;
  readonly #natPairs: Counter<'initiator_nat' | 'recipient_nat'>;
  readonly #setup: Histogram<'path'>;
  readonly #relaysStarted: Counter;
  readonly #relaysEnded: Counter<'reason'>;
  readonly #relayBytes: Counter;
  readonly #registrationsActive: Gauge;
  readonly #relaysActive: Gauge;
  readonly #pending: Gauge;

  readonly #history: StatusSample[] = [];
  /** The count of live registrations running now, shared by its callers (see #registrationCount). */
  #counting: Promise<number> | undefined;
  readonly #sampleIntervalMs: number;
  readonly #historySamples: number;
  readonly #sampler: NodeJS.Timeout;

  constructor(broker: MonitoredBroker, options: BrokerMonitorOptions = {}) {
    this.#broker = broker;
    this.#sampleIntervalMs = positive('sampleIntervalMs', options.sampleIntervalMs ?? MONITOR_DEFAULTS.sampleIntervalMs);
    this.#historySamples = positive('historySamples', options.historySamples ?? MONITOR_DEFAULTS.historySamples);
    const registers = [this.metrics];
    this.#registrations = new Counter({ name: 'nattrav_broker_registrations_total', help: 'Registrations stored, by kind: new, or a refresh renewing one', labelNames: ['kind'], registers });
    this.#withdrawals = new Counter({ name: 'nattrav_broker_withdrawals_total', help: 'Registrations withdrawn by their holders', registers });
    this.#attempts = new Counter({ name: 'nattrav_broker_attempts_started_total', help: 'Connects taken on (connection attempts started)', registers });
    this.#retries = new Counter({ name: 'nattrav_broker_attempt_retries_total', help: 'Connects that said earlier strategies of the same connect failed', registers });
    this.#byPath = new Counter({ name: 'nattrav_broker_attempts_total', help: 'Finished attempts by path (strategy, or none) and result (scheduled: both peers answered; failed: the broker gave up)', labelNames: ['path', 'result'], registers });
    this.#natPairs = new Counter({ name: 'nattrav_broker_attempts_by_nat_total', help: 'Scheduled attempts by the TCP mapping the broker saw on each side', labelNames: ['initiator_nat', 'recipient_nat'], registers });
    this.#setup = new Histogram({ name: 'nattrav_broker_setup_seconds', help: 'Time from a Connect to the answers of a scheduled attempt', labelNames: ['path'], buckets: [...SETUP_BUCKETS_SECONDS], registers });
    this.#relaysStarted = new Counter({ name: 'nattrav_broker_relays_started_total', help: 'Relayed connections spliced', registers });
    this.#relaysEnded = new Counter({ name: 'nattrav_broker_relays_ended_total', help: 'Relayed connections ended, by reason', labelNames: ['reason'], registers });
    let relayedBefore = broker.relayedBytes;
    this.#relayBytes = new Counter({
      name: 'nattrav_broker_relay_bytes_total',
      help: 'Application bytes relayed, both directions, relays still running included',
      registers,
      collect() {
        const now = broker.relayedBytes;
        this.inc(Math.max(0, now - relayedBefore));
        relayedBefore = now;
      },
    });
    this.#registrationsActive = new Gauge({
      name: 'nattrav_broker_registrations_active',
      help: 'Live registrations in the registry',
      registers,
      collect: async () => {
        this.#registrationsActive.set(await this.#registrationCount());
      },
    });
    this.#relaysActive = new Gauge({ name: 'nattrav_broker_relays_active', help: 'Relayed connections running now', registers, collect() { this.set(broker.activeRelays); } });
    this.#pending = new Gauge({ name: 'nattrav_broker_attempts_pending', help: 'Attempts waiting for their recipient or being scheduled', registers, collect() { this.set(broker.pendingAttempts); } });
    // Every known series from zero, so a scrape shows them before the first event.
    for (const kind of ['new', 'refresh']) this.#registrations.inc({ kind }, 0);
    for (const path of STRATEGY_NAMES) this.#byPath.inc({ path, result: 'scheduled' }, 0);
    this.#byPath.inc({ path: 'none', result: 'failed' }, 0);
    for (const reason of RELAY_END_REASONS) this.#relaysEnded.inc({ reason }, 0);
    broker.on('event', this.#onEvent);
    // Sampling never keeps the process alive; a sample that fails (a registry that is down) is skipped.
    this.#sampler = setInterval(() => void this.#sample().catch(() => undefined), this.#sampleIntervalMs);
    this.#sampler.unref();
  }

  /** `/metrics`: every metric in the Prometheus text format (version 0.0.4). */
  metricsText(): Promise<string> {
    return this.metrics.metrics();
  }

  /** The content type of {@link BrokerMonitor.metricsText}. */
  get metricsContentType(): string {
    return this.metrics.contentType;
  }

  /** Stops counting (the metrics keep their values). Idempotent. */
  close(): void {
    clearInterval(this.#sampler);
    this.#broker.off('event', this.#onEvent);
  }

  /** A snapshot of every number, read from the metrics themselves. */
  async status(): Promise<BrokerStatus> {
    const [registrations, withdrawals, attempts, retries, byPath, natPairs, setup, started, ended, bytes, active, pending, live] = await Promise.all([
      this.#registrations.get(),
      this.#withdrawals.get(),
      this.#attempts.get(),
      this.#retries.get(),
      this.#byPath.get(),
      this.#natPairs.get(),
      this.#setup.get(),
      this.#relaysStarted.get(),
      this.#relaysEnded.get(),
      this.#relayBytes.get(),
      this.#relaysActive.get(),
      this.#pending.get(),
      this.#registrationsActive.get(),
    ]);
    const paths = Object.fromEntries(
      ATTEMPT_PATHS.map((path) => [path, { scheduled: sum(byPath.values, { path, result: 'scheduled' }), failed: sum(byPath.values, { path, result: 'failed' }) }]),
    ) as Record<AttemptPath, PathCounts>;
    const scheduled = sum(byPath.values, { result: 'scheduled' });
    const failed = sum(byPath.values, { result: 'failed' });
    const cumulative = [...SETUP_BUCKETS_SECONDS, Infinity].map((le) => sum(setup.values, { le: le === Infinity ? '+Inf' : le }, 'nattrav_broker_setup_seconds_bucket'));
    const now = Date.now();
    return {
      listening: this.#broker.listening,
      at: now,
      uptimeSeconds: Math.round((now - this.#started) / 1000),
      registrations: sum(live.values),
      registrationsMade: sum(registrations.values, { kind: 'new' }),
      refreshes: sum(registrations.values, { kind: 'refresh' }),
      withdrawals: sum(withdrawals.values),
      attempts: sum(attempts.values),
      retries: sum(retries.values),
      pendingAttempts: sum(pending.values),
      byPath: paths,
      history: [...this.#history],
      sampleIntervalMs: this.#sampleIntervalMs,
      recent: [...this.#recent].reverse(),
      natPairs: natPairs.values
        .filter((v) => v.value > 0)
        .map((v) => ({ initiator: v.labels.initiator_nat as NatMappingLabel, recipient: v.labels.recipient_nat as NatMappingLabel, attempts: v.value })),
      successRate: scheduled + failed === 0 ? undefined : scheduled / (scheduled + failed),
      setup: {
        boundsSeconds: SETUP_BUCKETS_SECONDS,
        counts: cumulative.map((count, i) => count - (i === 0 ? 0 : (cumulative[i - 1] as number))),
        count: sum(setup.values, {}, 'nattrav_broker_setup_seconds_count'),
        sumSeconds: sum(setup.values, {}, 'nattrav_broker_setup_seconds_sum'),
      },
      relay: {
        active: sum(active.values),
        started: sum(started.values),
        bytes: sum(bytes.values),
        ended: Object.fromEntries(RELAY_END_REASONS.map((reason) => [reason, sum(ended.values, { reason })])) as Record<RelayEnded['reason'], number>,
      },
    };
  }

  #count(event: BrokerEvent): void {
    switch (event.type) {
      case 'registered':
        this.#registrations.inc({ kind: event.refresh ? 'refresh' : 'new' });
        return;
      case 'withdrawn':
        this.#withdrawals.inc();
        return;
      case 'attempt':
        this.#attempts.inc();
        if (event.retry) this.#retries.inc();
        return;
      case 'scheduled': {
        const nat = { initiator: mappingLabel(event.initiatorMapping), recipient: mappingLabel(event.recipientMapping) };
        this.#byPath.inc({ path: event.strategy, result: 'scheduled' });
        this.#natPairs.inc({ initiator_nat: nat.initiator, recipient_nat: nat.recipient });
        this.#setup.observe({ path: event.strategy }, event.setupMs / 1000);
        this.#remember({ at: Date.now(), uri: event.uri, path: event.strategy, result: 'scheduled', setupMs: event.setupMs, nat });
        return;
      }
      case 'attempt-failed':
        this.#byPath.inc({ path: 'none', result: 'failed' });
        this.#remember({ at: Date.now(), uri: event.uri, path: 'none', result: 'failed', reason: event.reason });
        return;
      case 'relay-started':
        this.#relaysStarted.inc();
        return;
      case 'relay-ended':
        this.#relaysEnded.inc({ reason: event.reason });
        return;
      default:
        return;
    }
  }

  /**
   * Live registrations, never counted twice at once: on a shared registry (Redis) a count scans
   * every key, so concurrent page requests and scrapes from anyone who reaches --http share one
   * count instead of piling up scans that would starve the broker's own requests.
   */
  #registrationCount(): Promise<number> {
    if (this.#counting === undefined) {
      const counting = this.#broker.registry.size().finally(() => {
        if (this.#counting === counting) this.#counting = undefined;
      });
      this.#counting = counting;
    }
    return this.#counting;
  }

  async #sample(): Promise<void> {
    const [registrations, attempts] = await Promise.all([this.#registrationCount(), this.#attempts.get()]);
    this.#history.push({ at: Date.now(), registrations, activeRelays: this.#broker.activeRelays, attempts: sum(attempts.values), relayBytes: this.#broker.relayedBytes });
    if (this.#history.length > this.#historySamples) this.#history.shift();
  }

  #remember(attempt: RecentAttempt): void {
    this.#recent.push(attempt);
    if (this.#recent.length > RECENT_ATTEMPTS) this.#recent.shift();
  }
}

/** Starts counting `broker`'s events (see {@link BrokerMonitor}). */
export function monitorBroker(broker: MonitoredBroker, options: BrokerMonitorOptions = {}): BrokerMonitor {
  return new BrokerMonitor(broker, options);
}

/** Checks a monitor option: a positive integer a timer can hold. */
function positive(key: keyof BrokerMonitorOptions, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0 || value > 2_147_483_647) {
    throw new NattravError(ErrorCode.InvalidArgument, `monitor option ${key} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/** `sequential(+2)` -> `sequential`; anything not a known kind -> `unknown` (labels stay bounded). */
export function mappingLabel(described: string): NatMappingLabel {
  const kind = described.split('(')[0] as NatMappingLabel;
  return NAT_MAPPING_LABELS.includes(kind) ? kind : 'unknown';
}

interface MetricValue {
  readonly value: number;
  readonly labels: Readonly<Partial<Record<string, string | number>>>;
  readonly metricName?: string;
}

/** The sum of `values` whose labels include `labels` (and whose name is `name`, for a histogram's series). */
function sum(values: readonly MetricValue[], labels: Readonly<Record<string, string | number>> = {}, name?: string): number {
  return values
    .filter((v) => (name === undefined || v.metricName === name) && Object.entries(labels).every(([k, want]) => v.labels[k] === want))
    .reduce((total, v) => total + v.value, 0);
}
