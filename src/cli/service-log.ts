/** The per-connection log of `expose` and `forward`, printed by the Reporter (stderr). */
import type { ServiceEvent } from '../index.js';
import type { Reporter } from './output.js';

/** Prints one entry of the per-connection log: human text, or its fields as a JSON line. */
export function reportServiceEvent(out: Reporter, event: ServiceEvent): void {
  const { type, ...fields } = event;
  switch (event.type) {
    case 'accepted':
      out.event(type, fields, `#${event.id} accepted from ${event.from}${event.path === undefined ? '' : ` (${event.path})`}`);
      return;
    case 'connected':
      out.event(type, fields, `#${event.id} connected to ${event.peer} (${event.path}) in ${event.setupMs} ms`);
      return;
    case 'closed': {
      const side = event.side === undefined ? '' : ` on the ${event.side} side`;
      const why = event.message === undefined ? '' : `: ${event.message}`;
      out.event(type, fields, `#${event.id} closed (${event.reason}${side}): ${event.bytesIn} bytes in, ${event.bytesOut} bytes out, ${event.durationMs} ms, peer ${event.peer}${why}`);
      return;
    }
  }
}
