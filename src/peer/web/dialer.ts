/**
 * Dialers (../dialer.ts) for networks that pass only the web: a WebSocket to the
 * broker (`wss://HOST[:PORT][/PATH]` or `ws://...`), directly or through an HTTP
 * CONNECT proxy (http-proxy.ts), carrying what a TCP connection to the broker
 * carries; and the fallback dialer, which tries plain TCP first and, when the broker
 * cannot be reached that way (refused, or no answer within WEB_FALLBACK_DELAY_MS while
 * TCP keeps trying), `wss://HOST:443/` and then `ws://HOST:80/`, each step bounded in
 * time, reporting the step that worked.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { formatEndpoint, type HostPort } from '../../common/endpoint.js';
import { abortError } from '../../common/signal.js';
import { webSocketAsSocket } from '../../common/websocket-stream.js';
import { WS_MAX_PAYLOAD } from '../../common/websocket-limits.js';
import { ErrorCode, NattravError } from '../../errors.js';
import { brokerCertificateProblem } from '../../security/issued.js';
import { DIRECT_DIALER, type Dialer } from '../dialer.js';
import { connectThroughProxy, maskUrl, proxyFor } from './http-proxy.js';

/** One step (TCP or proxy tunnel, TLS, WebSocket upgrade) of reaching the broker over the web: 5 s, like a direct TCP connect. */
export const WEB_STEP_TIMEOUT_MS = 5_000;
/**
 * How long plain TCP to the broker may stay unanswered before the web steps start beside
 * it (happy-eyeballs style; TCP keeps trying until its own limit and wins if it answers
 * first). Past the first SYN retransmission (1 s), so one lost SYN does not send a peer
 * to the web route, which is relay-only; a firewall that drops TCP costs this, not 5 s.
 */
export const WEB_FALLBACK_DELAY_MS = 1_500;

/** How the web dialers reach and trust the broker. */
export interface WebDialerOptions {
  /** The CA (PEM) that issued the broker's certificate, for wss; else the system's CAs. The certificate must name a broker either way. */
  readonly brokerCa?: string;
  /** HTTP CONNECT proxy URL (`http://[USER:PASSWORD@]HOST:PORT`); `false`: none; undefined: from `env` like curl. */
  readonly httpProxy?: string | false;
  /** Where HTTPS_PROXY, HTTP_PROXY and NO_PROXY are read. @default process.env */
  readonly env?: NodeJS.ProcessEnv;
  /** Limit on each step of one dial, in ms. @default WEB_STEP_TIMEOUT_MS */
  readonly stepTimeoutMs?: number;
  /** The ports {@link WebFallbackDialer} tries for wss and ws. @default { wss: 443, ws: 80 } */
  readonly fallbackPorts?: { readonly wss: number; readonly ws: number };
  /** {@link WebFallbackDialer}: how long TCP may stay unanswered before the web steps start beside it. @default WEB_FALLBACK_DELAY_MS */
  readonly fallbackDelayMs?: number;
  /** {@link WebFallbackDialer}: the plain TCP dialer (tests inject a silent one). @default DIRECT_DIALER */
  readonly tcpDialer?: Dialer;
}

/** A checked broker URL. */
export interface BrokerUrl {
  readonly url: URL;
  readonly secure: boolean;
  /** The host and port the URL names (443 for wss, 80 for ws by default). */
  readonly broker: HostPort;
}

/** True when `text` is meant as a WebSocket URL (starts with ws:// or wss://). */
export function isBrokerUrl(text: string): boolean {
  return /^wss?:\/\//i.test(text);
}

/** Parses `wss://HOST[:PORT][/PATH]` or `ws://...`; throws ERR_INVALID_ARGUMENT naming the URL and what is wrong. */
export function parseBrokerUrl(text: string): BrokerUrl {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new NattravError(ErrorCode.InvalidArgument, `broker URL ${maskUrl(text)}: not a URL (pass wss://HOST[:PORT][/PATH] or ws://...)`);
  }
  if (url.protocol !== 'wss:' && url.protocol !== 'ws:') {
    throw new NattravError(ErrorCode.InvalidArgument, `broker URL ${maskUrl(text)}: the scheme must be wss:// or ws://, got ${url.protocol}`);
  }
  if (url.hostname === '') throw new NattravError(ErrorCode.InvalidArgument, `broker URL ${maskUrl(text)}: no host`);
  if (url.username !== '' || url.password !== '' || url.hash !== '') {
    throw new NattravError(ErrorCode.InvalidArgument, `broker URL ${maskUrl(text)}: no user, password or #fragment (the broker authenticates peers by their keys)`);
  }
  const secure = url.protocol === 'wss:';
  return { url, secure, broker: { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port === '' ? (secure ? 443 : 80) : Number(url.port) } };
}

/** A dialer that opens a WebSocket to `url` whatever target it is asked for (the broker the URL names). */
export function webSocketDialer(url: string | BrokerUrl, options: WebDialerOptions = {}): Dialer {
  const parsed = typeof url === 'string' ? parseBrokerUrl(url) : url;
  return { kind: parsed.secure ? 'wss' : 'ws', dial: (_target, signal) => openWebSocket(parsed, options, signal) };
}

/** An event of {@link WebFallbackDialer}: the broker `broker` is reached through `via` from now on. */
export interface WebFallbackEvent {
  readonly broker: string;
  /** The URL that worked. */
  readonly via: string;
  /** Why plain TCP (and any earlier step) failed. */
  readonly reasons: readonly string[];
}

/**
 * Plain TCP first; when the broker cannot be reached that way (ERR_BROKER_UNREACHABLE),
 * or TCP has not answered within `fallbackDelayMs` (it keeps trying, and wins if it
 * answers first), `wss://HOST:443/` then `ws://HOST:80/`; the connection that loses is closed. The way that worked is kept for that broker;
 * `kind` is 'direct' until a web step was chosen, then that step's kind (so the peer
 * stops sending mapping probes). Fails with ERR_BROKER_UNREACHABLE listing every step.
 */
export class WebFallbackDialer implements Dialer {
  readonly #options: WebDialerOptions;
  readonly #onFallback: ((event: WebFallbackEvent) => void) | undefined;
  readonly #chosen = new Map<string, Dialer>();
  /** Per broker, the steps of the last dial that went through them (see stepsTried). */
  readonly #tried = new Map<string, string[]>();
  #kind = 'direct';

  constructor(options: WebDialerOptions = {}, onFallback?: (event: WebFallbackEvent) => void) {
    this.#options = options;
    this.#onFallback = onFallback;
  }

  /** See the class comment. */
  get kind(): string {
    return this.#kind;
  }

  /** The steps of the last dial to `target` that went through them (TCP, wss, ws), each with why it failed or that it was cut off. */
  stepsTried(target: HostPort): readonly string[] {
    return this.#tried.get(formatEndpoint({ address: target.host, port: target.port })) ?? [];
  }

  async dial(target: HostPort, signal: AbortSignal): Promise<Socket> {
    const key = formatEndpoint({ address: target.host, port: target.port });
    const known = this.#chosen.get(key);
    this.#tried.delete(key);
    if (known !== undefined) return known.dial(target, signal);
    const host = target.host.includes(':') ? `[${target.host}]` : target.host;
    const ports = this.#options.fallbackPorts ?? { wss: 443, ws: 80 };
    const wss = `wss://${host}:${ports.wss}/`;
    const ws = `ws://${host}:${ports.ws}/`;
    const tcpDialer = this.#options.tcpDialer ?? DIRECT_DIALER;
    const webSteps: Array<[string, Dialer]> = [
      [wss, webSocketDialer(wss, this.#options)],
      [ws, webSocketDialer(ws, this.#options)],
    ];
    const run: Run = { tcp: [], web: [], view: [] };
    this.#tried.set(key, run.view);
    const race = new AbortController();
    const stop = (): void => race.abort(signal.reason);
    signal.addEventListener('abort', stop, { once: true });
    const delay = this.#options.fallbackDelayMs ?? WEB_FALLBACK_DELAY_MS;
    const tcpDone = step('tcp', tcpDialer, target, race.signal, run, run.tcp);
    // The web steps start when TCP failed, or when it stayed unanswered for `delay`; never after TCP connected.
    const webStart = Promise.race([tcpDone.then((won) => (won === undefined ? 'failed' : 'connected')), sleepUnless(delay, race.signal).then(() => 'waited')]);
    const webDone = webStart.then((why) => {
      if (why === 'connected') return undefined;
      if (!race.signal.aborted) return webChain(webSteps, target, race.signal, run);
      if (!signal.aborted) return undefined;
      for (const [via] of webSteps) run.web.push(`${via}: not tried`);
      note(run);
      return undefined;
    });
    try {
      const winner = await firstSocket([tcpDone, webDone]);
      if (winner !== undefined) {
        const [via, dialer, socket] = winner;
        this.#chosen.set(key, dialer);
        this.#kind = dialer.kind;
        // The way still trying is cut off (finally); if it connects anyway, firstSocket closes it.
        if (dialer !== tcpDialer) {
          if (run.tcp.length === 0) run.tcp.push(`tcp: no answer within ${delay} ms (given up when ${via} answered)`);
          note(run);
          this.#onFallback?.({ broker: key, via, reasons: [...run.view] });
        }
        return socket;
      }
      if (signal.aborted) throw abortError(signal);
      if (run.fatal !== undefined) throw run.fatal;
      throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable over TCP and over the web: ${run.view.join('; ')}`, { address: target.host, port: target.port });
    } finally {
      signal.removeEventListener('abort', stop);
      race.abort(new Error('another way to the broker won'));
    }
  }
}

/** The steps of one fallback dial: TCP's and the web steps' reasons, and `view`, both in that order (stepsTried). */
interface Run {
  readonly tcp: string[];
  readonly web: string[];
  readonly view: string[];
  /** A step failed for another reason than an unreachable broker (e.g. a broker certificate refused): that error is the dial's. */
  fatal?: unknown;
}

function note(run: Run): void {
  run.view.splice(0, run.view.length, ...run.tcp, ...run.web);
}

/** One way to the broker; undefined (and a reason in `reasons`) when it fails or is cut off. */
async function step(via: string, dialer: Dialer, target: HostPort, signal: AbortSignal, run: Run, reasons: string[]): Promise<Won | undefined> {
  const started = performance.now();
  try {
    return [via, dialer, await dialer.dial(target, signal)];
  } catch (err) {
    if (signal.aborted) reasons.push(`${via}: cut off after ${Math.round(performance.now() - started)} ms (${abortError(signal).message})`);
    else {
      reasons.push(`${via}: ${err instanceof Error ? err.message : String(err)}`);
      if (!(err instanceof NattravError) || err.code !== ErrorCode.BrokerUnreachable) run.fatal ??= err;
    }
    note(run);
    return undefined;
  }
}

/** wss then ws, each after the one before failed as unreachable; the rest is "not tried" once cut off or after another failure. */
async function webChain(steps: ReadonlyArray<[string, Dialer]>, target: HostPort, signal: AbortSignal, run: Run): Promise<Won | undefined> {
  for (const [index, [via, dialer]] of steps.entries()) {
    const won = await step(via, dialer, target, signal, run, run.web);
    if (won !== undefined) return won;
    if (signal.aborted || run.fatal !== undefined) {
      for (const [next] of steps.slice(index + 1)) run.web.push(`${next}: not tried`);
      note(run);
      return undefined;
    }
  }
  return undefined;
}

/** A way to the broker that connected: its name, its dialer and the socket. */
type Won = [string, Dialer, Socket];

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The first of `ways` to connect (undefined when none did); a socket that connects after it is destroyed. */
function firstSocket(ways: ReadonlyArray<Promise<Won | undefined>>): Promise<Won | undefined> {
  return new Promise((resolve) => {
    let pending = ways.length;
    let settled = false;
    for (const way of ways) {
      void way.then((won) => {
        pending--;
        if (won !== undefined && !settled) {
          settled = true;
          resolve(won);
        } else if (won !== undefined) {
          won[2].destroy();
        } else if (pending === 0 && !settled) {
          settled = true;
          resolve(undefined);
        }
      });
    }
  });
}

/** TCP (or a proxy's tunnel), TLS for wss, then the WebSocket upgrade; each step within `stepTimeoutMs`. */
async function openWebSocket(target: BrokerUrl, options: WebDialerOptions, signal: AbortSignal): Promise<Socket> {
  const timeoutMs = options.stepTimeoutMs ?? WEB_STEP_TIMEOUT_MS;
  const { host, port } = target.broker;
  const href = target.url.href;
  const proxy = proxyFor(host, target.secure, options.httpProxy, options.env ?? process.env);
  const unreachable = (why: string, cause?: unknown): NattravError =>
    new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: ${href}${proxy === undefined ? '' : ` via HTTP proxy ${proxy.display}`}: ${why}`, { ...(cause === undefined ? {} : { cause }), address: host, port });
  const tcp = proxy === undefined ? await connectTcp(host, port, signal, timeoutMs, unreachable) : await connectThroughProxy(proxy, host, port, signal, timeoutMs);
  let transport: Socket = tcp;
  try {
    if (target.secure) transport = await startTls(tcp, host, options.brokerCa, signal, timeoutMs, unreachable);
    // Loaded when the web is first used: a peer that reaches its broker over TCP never needs it.
    const { WebSocket } = await import('ws');
    const secured = transport;
    const ws = new WebSocket(href, { createConnection: () => secured, perMessageDeflate: false, maxPayload: WS_MAX_PAYLOAD, handshakeTimeout: timeoutMs, followRedirects: false });
    await settle<void>(signal, (resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(unreachable(`HTTP ${res.statusCode ?? '?'} instead of a WebSocket (no nattrav broker at this URL?)`)));
      // on, not once: a failed WebSocket may report more than one error after the first rejected this.
      ws.on('error', (err: Error) => reject(unreachable(`WebSocket: ${err.message}`, err)));
    });
    return webSocketAsSocket(ws, secured, true);
  } catch (err) {
    transport.destroy();
    tcp.destroy();
    throw err;
  }
}

/** A TCP connection to `host:port` within `timeoutMs`. */
function connectTcp(host: string, port: number, signal: AbortSignal, timeoutMs: number, unreachable: (why: string, cause?: unknown) => NattravError): Promise<Socket> {
  const socket = netConnect({ host, port, allowHalfOpen: true });
  socket.setNoDelay(true);
  return settle<Socket>(
    signal,
    (resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.on('error', (err: Error & { code?: string }) => reject(unreachable(`TCP ${formatEndpoint({ address: host, port })}: ${err.code ?? err.message}`, err)));
    },
    timeoutMs,
    () => unreachable(`no TCP connection within ${timeoutMs} ms`),
  ).catch((err: unknown) => {
    socket.destroy();
    throw err;
  });
}

/** TLS 1.3 over `tcp` to `host`: the chain checked against `ca` (else the system's CAs), the certificate naming a broker or `host`. */
function startTls(tcp: Socket, host: string, ca: string | undefined, signal: AbortSignal, timeoutMs: number, unreachable: (why: string, cause?: unknown) => NattravError): Promise<TLSSocket> {
  const secure = tlsConnect({
    socket: tcp,
    ...(isIP(host) === 0 ? { servername: host } : {}),
    ...(ca === undefined ? {} : { ca }),
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    checkServerIdentity: (_name, peer) => {
      const problem = brokerCertificateProblem(new X509Certificate(peer.raw), host);
      return problem === undefined ? undefined : new Error(problem);
    },
  });
  return settle<TLSSocket>(
    signal,
    (resolve, reject) => {
      secure.once('secureConnect', () => resolve(secure));
      secure.on('error', (err: Error) => reject(new NattravError(ErrorCode.BrokerAuth, `broker authentication failed: ${host}:${tcp.remotePort ?? '?'} over wss: ${err.message}`, { cause: err })));
    },
    timeoutMs,
    () => unreachable(`no TLS handshake within ${timeoutMs} ms`),
  ).catch((err: unknown) => {
    secure.destroy();
    throw err;
  });
}

/** A promise that also rejects when `signal` aborts (its reason) or, with `timeoutMs`, with `onTimeout()`; listeners removed once settled. */
function settle<T>(signal: AbortSignal, run: (resolve: (value: T) => void, reject: (err: unknown) => void) => void, timeoutMs?: number, onTimeout?: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      done();
      reject(abortError(signal));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs !== undefined && onTimeout !== undefined) {
      timer = setTimeout(() => {
        done();
        reject(onTimeout());
      }, timeoutMs);
    }
    run(
      (value) => {
        done();
        resolve(value);
      },
      (err) => {
        done();
        reject(err);
      },
    );
  });
}
