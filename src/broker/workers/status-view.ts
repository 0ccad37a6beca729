/**
 * `--http` with `--workers N`: worker 1 serves the status page and /metrics for the
 * whole broker. Every other worker sends it, four times a second, what the monitor
 * counts (its attempt, relay, registration and withdrawal events; refreshes as a number,
 * they are too many to send one by one) and its gauges (relays running, relayed bytes,
 * attempts pending); worker 1's view adds them to its own. Registrations live come from
 * the shared registry, so they are the whole broker's already.
 */
import { EventEmitter } from 'node:events';
import type { Broker } from '../broker.js';
import type { BrokerEvent } from '../events.js';
import type { MonitoredBroker } from '../http/monitor.js';
import type { Registry } from '../registry/registry.js';
import type { IpcMessage } from './ipc.js';
import type { WorkerLink } from './link.js';

/** How often a worker sends its status to worker 1, in ms: the page samples every 10 s, /metrics when scraped. */
export const STATUS_INTERVAL_MS = 250;
/** Events a worker sends per report at most (the rest are dropped, as a full log would): bounds one report's size. */
export const MAX_EVENTS_PER_REPORT = 4_096;

/** The event types the monitor counts (http/monitor.ts), other than refreshes. */
const COUNTED: ReadonlySet<BrokerEvent['type']> = new Set<BrokerEvent['type']>(['registered', 'withdrawn', 'attempt', 'scheduled', 'attempt-failed', 'relay-started', 'relay-ended']);

/** A worker's gauges. */
interface Gauges {
  readonly relayedBytes: number;
  readonly activeRelays: number;
  readonly pendingAttempts: number;
}

/** Worker 1's view of the whole broker, for the status server (a {@link MonitoredBroker}). */
export class WorkersStatusView extends EventEmitter implements MonitoredBroker {
  readonly #broker: Broker;
  /** The latest gauges of every other worker, by slot. */
  readonly #others = new Map<number, Gauges>();

  constructor(broker: Broker) {
    super();
    this.#broker = broker;
    broker.on('event', (event: BrokerEvent) => this.emit('event', event));
  }

  /** Bytes relayed by every worker (the others' as last reported). */
  get relayedBytes(): number {
    return this.#broker.relayedBytes + this.#sum('relayedBytes');
  }

  /** Relays running in every worker (the others' as last reported). */
  get activeRelays(): number {
    return this.#broker.activeRelays + this.#sum('activeRelays');
  }

  /** Attempts pending in every worker (the others' as last reported). */
  get pendingAttempts(): number {
    return this.#broker.pendingAttempts + this.#sum('pendingAttempts');
  }

  /** Whether worker 1 listens. */
  get listening(): boolean {
    return this.#broker.listening;
  }

  /** The shared registry (the whole broker's registrations). */
  get registry(): Registry {
    return this.#broker.registry;
  }

  /** The broker's address (every worker's). */
  address(): { address: string; port: number } {
    return this.#broker.address();
  }

  /** A report from the worker in `slot` (`nt: 'status'`). */
  report(slot: number, message: IpcMessage): void {
    this.#others.set(slot, message['gauges'] as Gauges);
    for (const event of message['events'] as BrokerEvent[]) this.emit('event', event);
    const refreshes = message['refreshes'] as number;
    // The monitor reads only `refresh` of a registration event; these stand for refreshes counted there.
    for (let i = 0; i < refreshes; i++) this.emit('event', REFRESH);
  }

  /** The worker in `slot` died: its relays and attempts went with it. */
  forget(slot: number): void {
    this.#others.delete(slot);
  }

  #sum(key: keyof Gauges): number {
    let total = 0;
    for (const gauges of this.#others.values()) total += gauges[key];
    return total;
  }
}

/** A refresh counted by another worker (the monitor reads only `refresh`). */
const REFRESH: BrokerEvent = { type: 'registered', uri: '', publicEndpoint: { family: 'IPv4', address: '0.0.0.0', port: 0 }, lifetimeMs: 0, refresh: true };

/** Sends this worker's status to worker 1 until the returned function is called. */
export function reportStatus(broker: Broker, link: WorkerLink): () => void {
  let events: BrokerEvent[] = [];
  let refreshes = 0;
  const onEvent = (event: BrokerEvent): void => {
    if (event.type === 'registered' && event.refresh) refreshes++;
    else if (COUNTED.has(event.type) && events.length < MAX_EVENTS_PER_REPORT) events.push(event);
  };
  broker.on('event', onEvent);
  const send = (): void => {
    const gauges: Gauges = { relayedBytes: broker.relayedBytes, activeRelays: broker.activeRelays, pendingAttempts: broker.pendingAttempts };
    link.port.post({ nt: 'bus', to: 1, body: { nt: 'status', events, refreshes, gauges } });
    events = [];
    refreshes = 0;
  };
  const timer = setInterval(send, STATUS_INTERVAL_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    broker.off('event', onEvent);
    send();
  };
}
