/** `--broker` as a WebSocket URL, `--http-proxy`, and the automatic web fallback, for `listen` and `connect`. */
import type { HostPort } from '../common/endpoint.js';
import { parseBrokerList } from '../peer/brokers.js';
import type { Dialer } from '../peer/dialer.js';
import { parseHttpProxy } from '../peer/web/http-proxy.js';
import { isBrokerUrl, parseBrokerUrl, WebFallbackDialer, webSocketDialer } from '../peer/web/dialer.js';
import type { Reporter } from './output.js';

/** The web options of `listen` and `connect`. */
export interface WebCommandOptions {
  /** `--http-proxy URL`: an HTTP CONNECT proxy for ws/wss to the broker (else HTTPS_PROXY / HTTP_PROXY / NO_PROXY). */
  httpProxy?: string;
}

/** Commander help of `--http-proxy`. */
export const HTTP_PROXY_HELP = 'HTTP CONNECT proxy for WebSocket connections to the broker, http://[USER:PASSWORD@]HOST:PORT (default: HTTPS_PROXY / HTTP_PROXY, minus NO_PROXY)';

/** Commander help of `--broker` about URLs. */
export const BROKER_URL_HELP = '; or wss://HOST[:PORT][/PATH] or ws://... to reach it over WebSocket (HOST:PORT falls back to wss://HOST:443 then ws://HOST:80 when TCP fails)';

/**
 * The brokers and the dialer `--broker` and `--http-proxy` ask for: a ws:// or wss://
 * URL gets a WebSocket dialer; HOST:PORT (one or several) the fallback dialer, whose
 * switch to the web is reported on `out` as a `web-fallback` event. Bad values are
 * ERR_INVALID_ARGUMENT naming the flag (credentials masked).
 */
export function brokerRoute(broker: string, options: WebCommandOptions, brokerCa: string | undefined, out: Reporter): { brokers: HostPort[]; dialer: Dialer } {
  if (options.httpProxy !== undefined) parseHttpProxy(options.httpProxy, '--http-proxy');
  const web = { ...(brokerCa === undefined ? {} : { brokerCa }), ...(options.httpProxy === undefined ? {} : { httpProxy: options.httpProxy }) };
  if (isBrokerUrl(broker)) {
    const url = parseBrokerUrl(broker);
    return { brokers: [url.broker], dialer: webSocketDialer(url, web) };
  }
  const brokers = parseBrokerList(broker, '--broker');
  const dialer = new WebFallbackDialer(web, (event) =>
    out.event('web-fallback', { broker: event.broker, via: event.via, reasons: event.reasons }, `broker ${event.broker} unreachable over TCP; using ${event.via} (${event.reasons.join('; ')})`),
  );
  return { brokers, dialer };
}
