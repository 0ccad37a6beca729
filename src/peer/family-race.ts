/**
 * The initiator's race between IPv6 and IPv4 (RFC 8305 "happy eyeballs", applied to whole
 * rendezvous attempts instead of TCP SYNs), as a sans-IO state machine on an injected clock:
 * the caller starts and aborts the attempts it is told to and reports how each ended; this
 * decides. Steps:
 *
 * 1. IPv6 starts at once; IPv4 starts {@link FAMILY_RACE_DELAY_MS} later (RFC 8305 §5's
 *    "Connection Attempt Delay"), or at once when IPv6 fails (no route, the broker's IPv6
 *    unreachable, the recipient not registered over IPv6) or ends on the relay first.
 * 2. The first direct connection wins: the other attempt is aborted, and a connection it
 *    already made is released (closed). A family whose traversal went direct while it still
 *    secures the connection (TLS) keeps IPv4 from starting on the delay: the other family then
 *    starts at once if this one fails after all, or starts another attempt (its TLS failed and
 *    its connect retries: {@link FamilyRace.retrying}), and at the latest
 *    {@link FAMILY_SECURE_STALL_MS} after the traversal (its TLS stalls: a path that carries
 *    SYNs but not the certificates' larger segments, say); then both run and the first direct wins.
 * 5. Both families share one deadline, the caller's time limit for the whole race: each is
 *    started with what is left of it, so a late start never runs past it.
 * 3. A relayed connection is held until the other family has ended: it is used only when
 *    neither went direct (the other failed or was relayed too; IPv6 first then).
 * 4. Both failed: the race fails naming both errors. An abort from outside aborts both.
 */
import type { Clock, TimerHandle } from '../common/clock.js';

/** An address family, as `connect({ family })` names it. */
export type Family = 4 | 6;

/**
 * How long IPv4 waits for IPv6, in ms. RFC 8305 recommends 250 ms between TCP connection
 * attempts; ours race whole attempts (an exchange with the broker, its request to the
 * recipient, the recipient's join, the punch), each of which takes several round trips, and an
 * IPv4 attempt running beside IPv6 costs the recipient a second join and the broker a second
 * rendezvous. 50 ms keeps the worst case of IPv6 silently broken (it never traverses) within
 * 50 ms of IPv4 alone, the bound being 300 ms, while IPv6 still gets the head start that
 * makes it win when both work (its direct path usually completes in about the time IPv4 needs
 * for the same steps). IPv6 that traverses and then fails its TLS hands over to IPv4 at once;
 * one whose TLS stalls holds IPv4 back for {@link FAMILY_SECURE_STALL_MS}.
 */
export const FAMILY_RACE_DELAY_MS = 50;

/**
 * How long a family that traversed may take to secure its connection (TLS: one peer round
 * trip and the certificate checks) before the other family starts beside it, in ms: several
 * slow round trips (a relayed or satellite path), far below the usual time limit, so a stalled
 * handshake costs 2 s instead of the whole deadline.
 */
export const FAMILY_SECURE_STALL_MS = 2_000;

/** How one family's attempt ended. */
export type FamilyOutcome<T> = { readonly ok: true; readonly value: T; readonly direct: boolean } | { readonly ok: false; readonly error: Error };

/** What the caller must do. */
export type RaceAction<T> =
  /** Start `family`'s attempt with a time limit of `timeoutMs` (what is left of the shared deadline). */
  | { readonly type: 'start'; readonly family: Family; readonly timeoutMs: number }
  | { readonly type: 'abort'; readonly family: Family }
  /** A connection the race will not use (the loser's, or a relay not needed): close it. */
  | { readonly type: 'release'; readonly family: Family; readonly value: T }
  | { readonly type: 'won'; readonly family: Family; readonly value: T }
  | { readonly type: 'failed'; readonly errors: ReadonlyMap<Family, Error> };

/** Each family's state: not started, running, ended with a held relay, or failed. */
type SideState<T> = { readonly kind: 'waiting' } | { readonly kind: 'running' } | { readonly kind: 'relayed'; readonly value: T } | { readonly kind: 'failed'; readonly error: Error } | { readonly kind: 'done' };

/** The race's state machine (see the module comment). `act` runs each action as it is decided. */
export class FamilyRace<T> {
  readonly #clock: Clock;
  readonly #delayMs: number;
  readonly #act: (action: RaceAction<T>) => void;
  readonly #sides = new Map<Family, SideState<T>>([
    [6, { kind: 'waiting' }],
    [4, { kind: 'waiting' }],
  ]);
  readonly #timeoutMs: number;
  /** Families whose traversal went direct while their connection is still being secured. */
  readonly #traversed = new Set<Family>();
  #deadline = Infinity;
  #timer: TimerHandle | undefined;
  #over = false;

  /** `timeoutMs`: the whole race's time limit, shared by both families (step 5). */
  constructor(clock: Clock, delayMs: number, act: (action: RaceAction<T>) => void, timeoutMs: number) {
    this.#clock = clock;
    this.#delayMs = delayMs;
    this.#act = act;
    this.#timeoutMs = timeoutMs;
  }

  /** Whether the race has decided (won, failed or aborted). */
  get over(): boolean {
    return this.#over;
  }

  /** Step 1: IPv6 now, IPv4 after the delay. */
  start(): void {
    this.#deadline = this.#clock.now() + this.#timeoutMs;
    this.#begin(6);
    this.#timer = this.#clock.setTimeout(() => this.#begin(4), this.#delayMs);
  }

  /**
   * `family`'s traversal went direct (its connection is being secured): the other family is no
   * longer started on the delay, only at once if this one fails or ends on the relay after all,
   * or {@link FAMILY_SECURE_STALL_MS} from now if it is still securing it.
   */
  traversed(family: Family): void {
    if (this.#over) return;
    const other: Family = family === 6 ? 4 : 6;
    this.#traversed.add(family);
    if (this.#sides.get(other)?.kind !== 'waiting') return;
    this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => this.#begin(other), FAMILY_SECURE_STALL_MS);
  }

  /**
   * `family` starts another attempt (of its strategies, or of its connect after a failed TLS):
   * when it had traversed, that connection failed, and the other family starts at once.
   */
  retrying(family: Family): void {
    if (!this.#traversed.delete(family)) return;
    this.#begin(family === 6 ? 4 : 6);
  }

  /** One family's attempt ended (ignored once the race is over, except that a late connection is released). */
  settle(family: Family, outcome: FamilyOutcome<T>): void {
    if (this.#over) {
      if (outcome.ok) this.#act({ type: 'release', family, value: outcome.value });
      return;
    }
    const other: Family = family === 6 ? 4 : 6;
    if (outcome.ok && outcome.direct) return this.#win(family, outcome.value);
    this.#sides.set(family, outcome.ok ? { kind: 'relayed', value: outcome.value } : { kind: 'failed', error: outcome.error });
    const state = this.#sides.get(other) as SideState<T>;
    // Step 1: IPv6 did not go direct: IPv4 need not wait any longer.
    if (state.kind === 'waiting') return this.#begin(other);
    if (state.kind === 'running') return;
    this.#finish();
  }

  /** Aborts the race from outside: every running attempt is aborted, held connections released; no 'won' or 'failed' follows. */
  abort(): void {
    if (this.#over) return;
    this.#over = true;
    this.#clock.clearTimeout(this.#timer);
    for (const [family, state] of this.#sides) {
      if (state.kind === 'running') this.#act({ type: 'abort', family });
      if (state.kind === 'relayed') this.#act({ type: 'release', family, value: state.value });
    }
  }

  #begin(family: Family): void {
    if (this.#over || this.#sides.get(family)?.kind !== 'waiting') return;
    if (family === 4) this.#clock.clearTimeout(this.#timer);
    this.#sides.set(family, { kind: 'running' });
    this.#act({ type: 'start', family, timeoutMs: Math.max(1, Math.ceil(this.#deadline - this.#clock.now())) });
  }

  /** Step 2: `family` went direct. */
  #win(family: Family, value: T): void {
    this.#over = true;
    this.#clock.clearTimeout(this.#timer);
    const other: Family = family === 6 ? 4 : 6;
    const state = this.#sides.get(other) as SideState<T>;
    if (state.kind === 'running') this.#act({ type: 'abort', family: other });
    if (state.kind === 'relayed') this.#act({ type: 'release', family: other, value: state.value });
    this.#sides.set(family, { kind: 'done' });
    this.#act({ type: 'won', family, value });
  }

  /** Steps 3 and 4: both ended without a direct connection. */
  #finish(): void {
    this.#over = true;
    const relayed = ([6, 4] as const).filter((f) => this.#sides.get(f)?.kind === 'relayed');
    const [use, ...spare] = relayed;
    if (use === undefined) {
      const errors = new Map<Family, Error>();
      for (const [family, state] of this.#sides) if (state.kind === 'failed') errors.set(family, state.error);
      this.#act({ type: 'failed', errors });
      return;
    }
    for (const family of spare) this.#act({ type: 'release', family, value: (this.#sides.get(family) as { value: T }).value });
    this.#act({ type: 'won', family: use, value: (this.#sides.get(use) as { value: T }).value });
  }
}
