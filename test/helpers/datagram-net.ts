/**
 * An in-memory network and a pair of datagram channels on it, on a fake clock: what the
 * datagram channel tests run on.
 */
import { DatagramChannel, type DatagramEndpoint, type DatagramTransport, type TransportHandlers } from '../../src/peer/datagram/channel.js';
import type { FakeClock } from './fake-clock.js';

export const A: DatagramEndpoint = { address: '198.51.100.1', port: 4000, family: 'IPv4' };
export const B: DatagramEndpoint = { address: '203.0.113.2', port: 5000, family: 'IPv4' };
export const THIRD: DatagramEndpoint = { address: '203.0.113.66', port: 6666, family: 'IPv4' };

/** An in-memory network: what a transport sends reaches the transport at `to` (unless `drop` says no), one microtask later. */
export class Network {
  readonly #hosts = new Map<string, TransportHandlers>();
  /** Every packet sent, with its ends. */
  readonly log: Array<{ from: DatagramEndpoint; to: DatagramEndpoint; data: Buffer }> = [];
  drop: (from: DatagramEndpoint, to: DatagramEndpoint) => boolean = () => false;

  transport(self: DatagramEndpoint): DatagramTransport {
    return {
      attach: (handlers) => void this.#hosts.set(key(self), handlers),
      send: (data, to) => this.deliver(self, to, data),
      local: () => self,
      close: () => void this.#hosts.delete(key(self)),
    };
  }

  deliver(from: DatagramEndpoint, to: DatagramEndpoint, data: Buffer): void {
    this.log.push({ from, to, data: Buffer.from(data) });
    if (this.drop(from, to)) return;
    queueMicrotask(() => this.#hosts.get(key(to))?.message(Buffer.from(data), from));
  }
}

export function key(e: DatagramEndpoint): string {
  return `${e.address}:${e.port}`;
}

export const secret = new Uint8Array(32).fill(7);
export const attemptId = new Uint8Array(16).fill(9);

export function pair(net: Network, clock: FakeClock, options: { secretB?: Uint8Array; keepaliveMs?: number } = {}): { a: DatagramChannel; b: DatagramChannel } {
  const a = new DatagramChannel({ role: 'initiator', attemptId, secret, transport: net.transport(A), candidates: [B], clock, ...(options.keepaliveMs === undefined ? {} : { keepaliveMs: options.keepaliveMs }) });
  const b = new DatagramChannel({ role: 'recipient', attemptId, secret: options.secretB ?? secret, transport: net.transport(B), candidates: [A], clock, ...(options.keepaliveMs === undefined ? {} : { keepaliveMs: options.keepaliveMs }) });
  return { a, b };
}

export async function openBoth(a: DatagramChannel, b: DatagramChannel, clock: FakeClock): Promise<void> {
  const signal = new AbortController().signal;
  const both = Promise.all([a.establish(signal), b.establish(signal)]);
  await clock.advance(1_000);
  await both;
}
