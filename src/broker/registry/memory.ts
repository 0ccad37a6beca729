import { sameRegistration, type Registration, type Registry } from './registry.js';

/** Options of {@link MemoryRegistry}. */
export interface MemoryRegistryOptions {
  /** Clock returning milliseconds since the epoch. @default Date.now */
  now?: () => number;
  /** How often expired entries are swept, in ms (0 disables the timer; lookups still ignore them). @default 5000 */
  sweepIntervalMs?: number;
}

/** Sweeping is only about memory: lookups already ignore expired entries. */
const DEFAULT_SWEEP_INTERVAL_MS = 5_000;

/** A {@link Registry} held in this process's memory. */
export class MemoryRegistry implements Registry {
  readonly #entries = new Map<string, Registration>();
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
    this.#entries.set(registration.uri, registration);
  }

  async claim(registration: Registration & { readonly keyFingerprint: string }): Promise<string | undefined> {
    // No await before the set: another claim must not run in between.
    const holder = this.#live(registration.uri)?.keyFingerprint;
    if (holder !== undefined && holder !== registration.keyFingerprint) return holder;
    this.#entries.set(registration.uri, registration);
    return undefined;
  }

  async get(uri: string): Promise<Registration | undefined> {
    return this.#live(uri);
  }

  #live(uri: string): Registration | undefined {
    const entry = this.#entries.get(uri);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(uri);
      return undefined;
    }
    return entry;
  }

  async delete(uri: string): Promise<boolean> {
    const live = this.#live(uri) !== undefined;
    this.#entries.delete(uri);
    return live;
  }

  async deleteIf(expected: Registration): Promise<boolean> {
    const live = this.#live(expected.uri);
    if (live === undefined || !sameRegistration(live, expected)) return false;
    this.#entries.delete(expected.uri);
    return true;
  }

  async size(): Promise<number> {
    this.sweep();
    return this.#entries.size;
  }

  /** Drops every expired entry now. */
  sweep(): void {
    const now = this.#now();
    for (const [uri, entry] of this.#entries) {
      if (entry.expiresAt <= now) this.#entries.delete(uri);
    }
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
