import type { TransportAddress } from '../../wire/types.js';
import { sameRegistration, type Registration, type Registry } from './registry.js';
import { Column, FINGERPRINT_BYTES, packFingerprint, packIPv4, Slots, sweepExpired, unpackFingerprint, unpackIPv4 } from './slab.js';

/** Options of {@link MemoryRegistry}. */
export interface MemoryRegistryOptions {
  /** Clock returning milliseconds since the epoch. @default Date.now */
  now?: () => number;
  /** How often expired entries are swept, in ms (0 disables the timer; lookups still ignore them). @default 5000 */
  sweepIntervalMs?: number;
}

/** Sweeping is only about memory: lookups already ignore expired entries. */
const DEFAULT_SWEEP_INTERVAL_MS = 5_000;
/** Private endpoints kept in the slab; a registration with more is kept whole (rare: one per interface). */
const PACKED_PRIVATE_ENDPOINTS = 2;
/** Brokers named in the slab by number (bus IDs; there are a handful); past this, registrations are kept whole. */
const MAX_BROKER_IDS = 0xfffe;

/** The flags byte of a slot. */
const TRANSPORT_MASK = 0b11;
const TRANSPORT_CODES = { udp: 1, tcp: 2 } as const;
const TRANSPORTS = [undefined, 'udp', 'tcp'] as const;
/** The registration is kept whole in the overflow map (it does not pack). */
const WHOLE = 0b100;
const HAS_FINGERPRINT = 0b1000;
const PRIVATE_COUNT_SHIFT = 4;
/** The private count takes bits 4 and 5 (0 to PACKED_PRIVATE_ENDPOINTS). */
const PRIVATE_COUNT_MASK = 0b11;
/** Registration.web, above the private count. */
const WEB = 0b1000000;

/**
 * A {@link Registry} held in this process's memory, compactly: a registration is a slot
 * in a few typed arrays (expiry, IPv4 endpoints, key fingerprint as 32 bytes, transport,
 * the broker that took it) plus its URI in one Map, about 60 bytes and a Map entry instead
 * of half a dozen objects. One that does not pack (IPv6, more than two private endpoints,
 * a second address family, a fingerprint that is not a SHA-256 in base32) is kept as the object it was stored as.
 * What comes back from {@link MemoryRegistry.get} equals what was stored.
 */
export class MemoryRegistry implements Registry {
  readonly #slotOf = new Map<string, number>();
  readonly #uris: Array<string | undefined> = [];
  readonly #expires = new Column((n) => new Float64Array(n));
  readonly #publicIp = new Column((n) => new Uint32Array(n));
  readonly #publicPort = new Column((n) => new Uint16Array(n));
  readonly #flags = new Column((n) => new Uint8Array(n));
  readonly #privateIp = new Column((n) => new Uint32Array(n), PACKED_PRIVATE_ENDPOINTS);
  readonly #privatePort = new Column((n) => new Uint16Array(n), PACKED_PRIVATE_ENDPOINTS);
  readonly #fingerprint = new Column((n) => new Uint8Array(n), FINGERPRINT_BYTES);
  /** 0: none, else 1 + the index in #brokers. */
  readonly #broker = new Column((n) => new Uint16Array(n));
  readonly #slots = new Slots([this.#expires, this.#publicIp, this.#publicPort, this.#flags, this.#privateIp, this.#privatePort, this.#fingerprint, this.#broker]);
  readonly #whole = new Map<number, Registration>();
  readonly #scratch = new Uint8Array(FINGERPRINT_BYTES);
  readonly #brokers: string[] = [];
  readonly #brokerIds = new Map<string, number>();
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: MemoryRegistryOptions = {}) {
    this.#now = options.now ?? Date.now;
    const interval = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
    if (interval > 0) {
      this.#timer = setInterval(() => this.sweep(), interval);
      this.#timer.unref();
    }
  }

  async put(registration: Registration): Promise<void> {
    this.#store(registration);
  }

  async claim(registration: Registration & { readonly keyFingerprint: string }): Promise<string | undefined> {
    // No await before the store: another claim must not run in between.
    const slot = this.#live(registration.uri);
    if (slot >= 0 && !this.#heldBy(slot, registration.keyFingerprint)) {
      const holder = this.#fingerprintAt(slot);
      if (holder !== undefined) return holder;
    }
    this.#store(registration);
    return undefined;
  }

  async get(uri: string): Promise<Registration | undefined> {
    const slot = this.#live(uri);
    return slot < 0 ? undefined : this.#read(slot, uri);
  }

  async delete(uri: string): Promise<boolean> {
    const live = this.#live(uri) >= 0;
    const slot = this.#slotOf.get(uri);
    if (slot !== undefined) this.#remove(slot, uri);
    return live;
  }

  async deleteIf(expected: Registration): Promise<boolean> {
    const slot = this.#live(expected.uri);
    const live = slot < 0 ? undefined : this.#read(slot, expected.uri);
    if (live === undefined || !sameRegistration(live, expected)) return false;
    this.#remove(slot, expected.uri);
    return true;
  }

  async size(): Promise<number> {
    this.sweep();
    return this.#slotOf.size;
  }

  /** Drops every expired entry now (a scan of one typed array; only expired entries touch the Map). */
  sweep(): void {
    sweepExpired(this.#slots.end, this.#uris, this.#expires.array, this.#now(), (slot, uri) => this.#remove(slot, uri));
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** The slot of `uri`'s live registration, or -1 (an expired one is dropped). */
  #live(uri: string): number {
    const slot = this.#slotOf.get(uri);
    if (slot === undefined) return -1;
    if ((this.#expires.array[slot] as number) <= this.#now()) {
      this.#remove(slot, uri);
      return -1;
    }
    return slot;
  }

  #remove(slot: number, uri: string): void {
    this.#slotOf.delete(uri);
    this.#uris[slot] = undefined;
    this.#whole.delete(slot);
    this.#slots.release(slot);
  }

  #store(registration: Registration): void {
    const { uri } = registration;
    let slot = this.#slotOf.get(uri);
    if (slot === undefined) {
      slot = this.#slots.take();
      this.#slotOf.set(uri, slot);
      this.#uris[slot] = uri;
    }
    this.#expires.array[slot] = registration.expiresAt;
    if (this.#pack(slot, registration)) {
      this.#whole.delete(slot);
    } else {
      this.#flags.array[slot] = WHOLE;
      this.#whole.set(slot, registration);
    }
  }

  /** Writes `registration` into `slot`'s columns; false when it does not pack. */
  #pack(slot: number, registration: Registration): boolean {
    const { publicEndpoint, privateEndpoints, transport, keyFingerprint, broker } = registration;
    const publicIp = packEndpoint(publicEndpoint);
    if (publicIp < 0 || privateEndpoints.length > PACKED_PRIVATE_ENDPOINTS) return false;
    // A port mapping (portmap) or a SOCKS5 BIND (socks5-bind) has no column: such a registration is kept whole.
    if (registration.mappedEndpoint !== undefined || registration.boundEndpoint !== undefined) return false;
    // Nor has a second family (a dual-stack peer's IPv6 registration next to its IPv4 one).
    if (registration.secondFamily !== undefined) return false;
    if (transport !== undefined && TRANSPORT_CODES[transport] === undefined) return false;
    if (registration.web !== undefined && registration.web !== true) return false;
    let flags = (transport === undefined ? 0 : TRANSPORT_CODES[transport]) | (privateEndpoints.length << PRIVATE_COUNT_SHIFT) | (registration.web === true ? WEB : 0);
    for (let i = 0; i < privateEndpoints.length; i++) {
      const endpoint = privateEndpoints[i] as TransportAddress;
      const ip = packEndpoint(endpoint);
      if (ip < 0) return false;
      this.#privateIp.array[slot * PACKED_PRIVATE_ENDPOINTS + i] = ip;
      this.#privatePort.array[slot * PACKED_PRIVATE_ENDPOINTS + i] = endpoint.port;
    }
    if (keyFingerprint !== undefined) {
      if (!packFingerprint(keyFingerprint, this.#fingerprint.array, slot * FINGERPRINT_BYTES)) return false;
      flags |= HAS_FINGERPRINT;
    }
    let brokerId = 0;
    if (broker !== undefined) {
      brokerId = this.#brokerId(broker);
      if (brokerId === 0) return false;
    }
    this.#broker.array[slot] = brokerId;
    this.#publicIp.array[slot] = publicIp;
    this.#publicPort.array[slot] = publicEndpoint.port;
    this.#flags.array[slot] = flags;
    return true;
  }

  /** 1 + the index of `broker`, interned; 0 when there are too many to name. */
  #brokerId(broker: string): number {
    const known = this.#brokerIds.get(broker);
    if (known !== undefined) return known;
    if (this.#brokers.length >= MAX_BROKER_IDS) return 0;
    this.#brokers.push(broker);
    this.#brokerIds.set(broker, this.#brokers.length);
    return this.#brokers.length;
  }

  /** Whether `slot` is held by `fingerprint` (compared packed, without building the stored text). */
  #heldBy(slot: number, fingerprint: string): boolean {
    const flags = this.#flags.array[slot] as number;
    if ((flags & WHOLE) !== 0 || (flags & HAS_FINGERPRINT) === 0 || !packFingerprint(fingerprint, this.#scratch, 0)) return this.#fingerprintAt(slot) === fingerprint;
    const stored = this.#fingerprint.array;
    const at = slot * FINGERPRINT_BYTES;
    for (let i = 0; i < FINGERPRINT_BYTES; i++) if (stored[at + i] !== this.#scratch[i]) return false;
    return true;
  }

  #fingerprintAt(slot: number): string | undefined {
    const flags = this.#flags.array[slot] as number;
    if ((flags & WHOLE) !== 0) return this.#whole.get(slot)?.keyFingerprint;
    return (flags & HAS_FINGERPRINT) === 0 ? undefined : unpackFingerprint(this.#fingerprint.array, slot * FINGERPRINT_BYTES);
  }

  #read(slot: number, uri: string): Registration | undefined {
    const flags = this.#flags.array[slot] as number;
    if ((flags & WHOLE) !== 0) return this.#whole.get(slot);
    const privateEndpoints: TransportAddress[] = [];
    for (let i = 0; i < ((flags >>> PRIVATE_COUNT_SHIFT) & PRIVATE_COUNT_MASK); i++) {
      const at = slot * PACKED_PRIVATE_ENDPOINTS + i;
      privateEndpoints.push({ family: 'IPv4', address: unpackIPv4(this.#privateIp.array[at] as number), port: this.#privatePort.array[at] as number });
    }
    const transport = TRANSPORTS[flags & TRANSPORT_MASK];
    const broker = this.#broker.array[slot] as number;
    return {
      uri,
      publicEndpoint: { family: 'IPv4', address: unpackIPv4(this.#publicIp.array[slot] as number), port: this.#publicPort.array[slot] as number },
      privateEndpoints,
      expiresAt: this.#expires.array[slot] as number,
      ...(transport === undefined ? {} : { transport }),
      ...((flags & HAS_FINGERPRINT) === 0 ? {} : { keyFingerprint: unpackFingerprint(this.#fingerprint.array, slot * FINGERPRINT_BYTES) }),
      ...(broker === 0 ? {} : { broker: this.#brokers[broker - 1] as string }),
      ...((flags & WEB) === 0 ? {} : { web: true }),
    };
  }
}

/** The IPv4 address of `endpoint` as a number, or -1 when it is not a plain IPv4 endpoint that packs. */
function packEndpoint(endpoint: TransportAddress): number {
  if (endpoint.family !== 'IPv4' || !Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 0xffff) return -1;
  return packIPv4(endpoint.address);
}
