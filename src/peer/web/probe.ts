/**
 * Whether the broker can be reached over the web when UDP and TCP cannot (for
 * `netcheck`): a Binding over `wss://HOST:443/`, then `ws://HOST:80/`, through the
 * same dialers (and HTTP CONNECT proxy) as the peer's fallback.
 */
import type { HostPort } from '../../common/endpoint.js';
import { NattravError } from '../../errors.js';
import { encodeMessage } from '../../wire/codec.js';
import { MessageClass, Method } from '../../wire/constants.js';
import { StunMessage } from '../../wire/message.js';
import { getXorMappedAddress } from '../../wire/nattrav.js';
import { readOneMessage } from '../sockets.js';
import { webSocketDialer, type WebDialerOptions } from './dialer.js';

/** What {@link probeWeb} found: the URL that answered and the address the broker saw, or why each step failed. */
export type WebProbe =
  | { readonly reachable: true; readonly via: string; readonly publicEndpoint: string }
  | { readonly reachable: false; readonly reasons: readonly string[] };

/** Tries wss then ws to `broker.host` (ports from `options.fallbackPorts`, default 443 and 80); never rejects except on abort. */
export async function probeWeb(broker: HostPort, options: WebDialerOptions, signal: AbortSignal): Promise<WebProbe> {
  const host = broker.host.includes(':') ? `[${broker.host}]` : broker.host;
  const ports = options.fallbackPorts ?? { wss: 443, ws: 80 };
  const reasons: string[] = [];
  for (const via of [`wss://${host}:${ports.wss}/`, `ws://${host}:${ports.ws}/`]) {
    try {
      const socket = await webSocketDialer(via, options).dial(broker, signal);
      try {
        const request = StunMessage.request(Method.Binding);
        socket.write(encodeMessage(request));
        const answer = await readOneMessage(socket, signal);
        const mapped = answer.cls === MessageClass.SuccessResponse ? getXorMappedAddress(answer) : undefined;
        if (mapped === undefined) throw new Error('the Binding got no address back');
        return { reachable: true, via, publicEndpoint: `${mapped.address.includes(':') ? `[${mapped.address}]` : mapped.address}:${mapped.port}` };
      } finally {
        socket.destroy();
      }
    } catch (err) {
      if (signal.aborted) throw err;
      reasons.push(`${via}: ${err instanceof NattravError || err instanceof Error ? err.message : String(err)}`);
    }
  }
  return { reachable: false, reasons };
}
