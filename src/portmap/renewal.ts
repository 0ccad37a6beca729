/**
 * When to renew, check or retry a mapping: pure, on times the caller passes in, so the
 * schedule is tested without waiting (tailscale's portmapper renews at half the lease;
 * RFC 6886 §3.3 recommends the same).
 */

/** A permanent lease (UPnP lease 0) is still checked this often, ms, to re-add it after a gateway reboot. */
export const PERMANENT_LEASE_CHECK_MS = 120_000;
/** The first retry after a failed renewal, ms; doubled per failure up to {@link MAX_RETRY_MS}. */
export const FIRST_RETRY_MS = 1_000;
/** The longest wait between retries of a failed renewal, ms (less for leases shorter than 2 minutes: see {@link retryAtMs}). */
export const MAX_RETRY_MS = 60_000;

/** The state of one mapping (see {@link nextStep}). */
export type MappingState =
  /** Granted; waiting for the renewal time. */
  | 'active'
  /** Checking the gateway still holds it, then renewing. */
  | 'renewing'
  /** The last renewal failed; waiting to try again. */
  | 'retrying'
  /** Deleted or given up; no timer runs. */
  | 'closed';

/** What the schedule needs to know about a grant. */
export interface GrantTimes {
  /** The granted lease, seconds (0: permanent). */
  readonly lifetimeSeconds: number;
  /** When it was granted (client clock, ms). */
  readonly grantedAtMs: number;
}

/** When a grant expires (client clock, ms); Infinity for a permanent lease. */
export function expiresAtMs(grant: GrantTimes): number {
  return grant.lifetimeSeconds === 0 ? Infinity : grant.grantedAtMs + grant.lifetimeSeconds * 1000;
}

/** When to renew (and first verify) a grant: half its lease; a permanent one every {@link PERMANENT_LEASE_CHECK_MS}. */
export function renewAtMs(grant: GrantTimes): number {
  if (grant.lifetimeSeconds === 0) return grant.grantedAtMs + PERMANENT_LEASE_CHECK_MS;
  return grant.grantedAtMs + (grant.lifetimeSeconds * 1000) / 2;
}

/**
 * When to try again after `failures` (>= 1) failed renewals at `nowMs`: doubling from
 * {@link FIRST_RETRY_MS}, but never more than one renewal interval (half the lease, at most
 * {@link MAX_RETRY_MS}: a gateway that comes back is served within one renewal interval), and
 * never later than halfway to expiry (a lease still running gets several tries before it lapses).
 */
export function retryAtMs(grant: GrantTimes, failures: number, nowMs: number): number {
  const interval = grant.lifetimeSeconds === 0 ? MAX_RETRY_MS : Math.min(MAX_RETRY_MS, (grant.lifetimeSeconds * 1000) / 2);
  const backoff = Math.min(interval, FIRST_RETRY_MS * 2 ** Math.max(0, failures - 1));
  const expires = expiresAtMs(grant);
  const halfwayToExpiry = expires > nowMs ? (expires - nowMs) / 2 : backoff;
  return nowMs + Math.max(FIRST_RETRY_MS, Math.min(backoff, halfwayToExpiry));
}

/** The events that move a mapping between states. */
export type MappingEvent = 'timer' | 'renewed' | 'failed' | 'close';

/** The one transition function of a mapping's state machine. */
export function nextStep(state: MappingState, event: MappingEvent): MappingState {
  if (event === 'close' || state === 'closed') return 'closed';
  switch (event) {
    case 'timer':
      return 'renewing';
    case 'renewed':
      return 'active';
    case 'failed':
      return 'retrying';
  }
}
