/** How the CLI words a measured NAT mapping lifetime and an adapted keepalive (netcheck --lifetime, listen's keepalive events). */
import type { KeepaliveEvent, MappingLifetime } from '../index.js';

const seconds = (ms: number): string => `${Number((ms / 1000).toFixed(1))} s`;

/** "27.3 s (a mapping idle 30.5 s was gone)", "at least 120 s", "under 5 s". */
export function describeLifetime(lifetime: MappingLifetime): string {
  if (lifetime.upperMs === undefined) return `at least ${seconds(lifetime.lifetimeMs)} (every mapping outlived the longest silence tested)`;
  if (lifetime.lifetimeMs === 0) return `under ${seconds(lifetime.upperMs)} (no mapping outlived the shortest silence tested)`;
  return `${seconds(lifetime.lifetimeMs)} (a mapping idle ${seconds(lifetime.upperMs)} was gone${lifetime.end === 'precise' ? '' : `; search ended: ${lifetime.end}`})`;
}

/** The JSON fields of a lifetime. */
export function lifetimeFields(lifetime: MappingLifetime): Record<string, unknown> {
  return { lifetimeMs: lifetime.lifetimeMs, upperMs: lifetime.upperMs ?? null, end: lifetime.end, probes: lifetime.probes, packets: lifetime.packets, elapsedMs: Math.round(lifetime.elapsedMs) };
}

/** The human line of a 'keepalive' event. */
export function describeKeepalive(event: KeepaliveEvent): string {
  const why =
    event.source === 'reset'
      ? 'the NAT forgot our mapping sooner than measured; back to the starting interval'
      : `the NAT at ${event.publicAddress} keeps an idle UDP mapping ${event.lifetime === undefined ? '?' : describeLifetime(event.lifetime)}${event.source === 'remembered' ? ', measured earlier' : ''}`;
  return `keepalive every ${seconds(event.keepaliveMs)}, registration lifetime ${seconds(event.lifetimeMs)}: ${why}`;
}
