/**
 * The way out of `listen`, `connect`, `expose` and `forward`: `--broker` as a WebSocket
 * URL, `--http-proxy`, the automatic web fallback, or a SOCKS5 proxy (`--socks5`).
 */
import type { HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import { parseBrokerList } from '../peer/brokers.js';
import type { Dialer } from '../peer/dialer.js';
import type { Socks5Proxy } from '../peer/socks5.js';
import { parseHttpProxy } from '../peer/web/http-proxy.js';
import { isBrokerUrl, parseBrokerUrl, WebFallbackDialer, webSocketDialer } from '../peer/web/dialer.js';
import type { Reporter } from './output.js';
import { socks5Option } from './proxy.js';

/** The web options of `listen`, `connect`, `expose` and `forward`. */
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

/** The options of a peer command that choose its way out. */
export interface RouteCommandOptions extends WebCommandOptions {
  broker: string;
  /** --socks5 [USER:PASS@]HOST:PORT (else SOCKS_PROXY / ALL_PROXY). */
  socks5?: string;
}

/** The brokers, and the peer options (`dialer` or `socks5`) that carry the connections to them. */
export interface PeerRoute {
  readonly brokers: HostPort[];
  readonly options: { dialer?: Dialer; socks5?: Socks5Proxy };
}

/**
 * The way out `options` ask for: a SOCKS5 proxy when one is given (flag or environment;
 * then a ws:// or wss:// `--broker` or `--http-proxy` is refused with ERR_INVALID_ARGUMENT,
 * a tunnel through a tunnel is not offered), else the web dialer of {@link brokerRoute}.
 */
export function peerRoute(options: RouteCommandOptions, brokerCa: string | undefined, out: Reporter): PeerRoute {
  const proxy = socks5Option(options.socks5, out);
  if (proxy.socks5 === undefined) {
    const { brokers, dialer } = brokerRoute(options.broker, options, brokerCa, out);
    return { brokers, options: { dialer } };
  }
  if (isBrokerUrl(options.broker) || options.httpProxy !== undefined) {
    throw new NattravError(ErrorCode.InvalidArgument, '--socks5 with a ws:// or wss:// --broker or --http-proxy: give one way out (the SOCKS5 proxy, or the web)');
  }
  return { brokers: parseBrokerList(options.broker, '--broker'), options: proxy };
}
