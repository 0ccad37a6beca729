/**
 * A simulated NAT and RFC 5780 server for unit tests of the mapping-lifetime measurement
 * (nat/lifetime.ts), on a fake clock: each socket gets a public port whose mapping dies
 * `lifetimeMs` after the last packet that crossed it (either way, as Linux conntrack), and
 * the server answers Binding requests, honouring RESPONSE-PORT unless told not to.
 */
import { toTransportAddress } from '../../src/common/endpoint.js';
import type { LifetimeIo, LifetimeSocket } from '../../src/nat/lifetime.js';
import { decodeDatagram, encodeMessage } from '../../src/wire/codec.js';
import { MessageClass } from '../../src/wire/constants.js';
import { addXorAddress, getResponsePort } from '../../src/wire/nattrav.js';
import { AttrType } from '../../src/wire/constants.js';
import type { FakeClock } from './fake-clock.js';

/** The NAT's public address. */
export const FAKE_PUBLIC_ADDRESS = '198.51.100.20';

interface Mapping {
  port: number;
  lastActive: number;
  closed: boolean;
  readonly deliver: (data: Uint8Array) => void;
  /** When each datagram left this socket, on the clock. */
  readonly sends: number[];
}

/** Options of {@link FakeNat}. */
export interface FakeNatOptions {
  /** How long an idle mapping lives, in ms. */
  readonly lifetimeMs: number;
  /** The server ignores RESPONSE-PORT (answers the asking socket), as a server without RFC 5780 would. */
  readonly ignoreResponsePort?: boolean;
  /** Drops the nth datagram sent (1-based) on the way out. */
  readonly dropSends?: readonly number[];
}

/** The NAT, the server, and what crossed them. */
export class FakeNat {
  readonly #clock: FakeClock;
  readonly #options: FakeNatOptions;
  readonly mappings: Mapping[] = [];
  #nextPort = 40_000;
  #sent = 0;
  /** The most sockets open at once. */
  maxOpen = 0;

  constructor(clock: FakeClock, options: FakeNatOptions) {
    this.#clock = clock;
    this.#options = options;
  }

  /** Sockets open now. */
  get open(): number {
    return this.mappings.filter((m) => !m.closed).length;
  }

  #alive(m: Mapping): boolean {
    return this.#clock.now() - m.lastActive < this.#options.lifetimeMs;
  }

  /** The sockets, as measureMappingLifetime takes them. */
  get io(): LifetimeIo {
    return {
      open: async (onMessage) => {
        const mapping: Mapping = { port: this.#nextPort++, lastActive: this.#clock.now(), closed: false, deliver: onMessage, sends: [] };
        this.mappings.push(mapping);
        this.maxOpen = Math.max(this.maxOpen, this.open);
        const socket: LifetimeSocket = {
          send: (data) => {
            if (mapping.closed) throw new Error('send on a closed socket');
            mapping.sends.push(this.#clock.now());
            if (!this.#alive(mapping)) mapping.port = this.#nextPort++; // a new mapping for a dead one
            mapping.lastActive = this.#clock.now();
            this.#sent++;
            if (this.#options.dropSends?.includes(this.#sent) === true) return;
            queueMicrotask(() => this.#serve(data, mapping));
          },
          close: () => {
            mapping.closed = true;
          },
        };
        return socket;
      },
    };
  }

  /** The server's answer, through the NAT to the mapping it is addressed to (if that still lives). */
  #serve(data: Uint8Array, from: Mapping): void {
    const request = decodeDatagram(Buffer.from(data));
    if (request === undefined || request.cls !== MessageClass.Request) return;
    const response = request.successResponse();
    addXorAddress(response, AttrType.XorMappedAddress, toTransportAddress(FAKE_PUBLIC_ADDRESS, from.port));
    const port = this.#options.ignoreResponsePort === true ? undefined : getResponsePort(request);
    const to = port === undefined ? from : this.mappings.find((m) => m.port === port);
    if (to === undefined || !this.#alive(to)) return; // no mapping: the NAT drops it
    to.lastActive = this.#clock.now();
    if (!to.closed) to.deliver(encodeMessage(response, { fingerprint: true }));
  }
}

/** Runs the clock (timer to timer) until `promise` settles or `limitMs` of fake time passed; returns the promise. */
export async function runClock<T>(clock: FakeClock, promise: Promise<T>, limitMs: number): Promise<T> {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  const end = clock.now() + limitMs;
  while (!done && clock.now() < end) {
    const next = clock.nextDue;
    await clock.advance(next === undefined ? 100 : Math.max(1, Math.min(next, end) - clock.now()));
  }
  return promise;
}
