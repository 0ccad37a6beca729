/**
 * SOCKS5 (RFC 1928, username/password RFC 1929) as a {@link Dialer}: the peer reaches
 * the broker, and other peers' public endpoints, with the proxy's CONNECT. The client
 * side of the protocol is the `socks` package's; here: parsing the proxy's address,
 * reaching the proxy ourselves (so an abort or an unreachable proxy is reported as
 * such), and turning the package's errors into NattravErrors that never show the password.
 */
import { lookup } from 'node:dns/promises';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { abortError } from '../common/signal.js';
import { maskUrlPassword } from '../common/url.js';
import { ErrorCode, NattravError } from '../errors.js';
import { BROKER_CONNECT_TIMEOUT_MS, DIRECT_DIALER, type Dialer } from './dialer.js';

/** A SOCKS5 proxy, as the peer option `socks5` takes it. */
export interface Socks5Proxy {
  readonly host: string;
  readonly port: number;
  /** RFC 1929 username; with `password`, the only method offered. */
  readonly username?: string;
  readonly password?: string;
  /**
   * Let the proxy resolve target names (`socks5h://`); false resolves them here first
   * (`socks5://`, and `--socks5`, as curl does). Addresses are passed as they are. @default false
   */
  readonly remoteDns?: boolean;
  /** Targets reached directly, not through the proxy (NO_PROXY syntax: names, `.domain` suffixes, addresses, `*`). @default none */
  readonly noProxy?: readonly string[];
}

/** The proxy for messages: `host:port`, with the user but never the password. */
export function describeProxy(proxy: Socks5Proxy): string {
  const where = formatEndpoint({ address: proxy.host, port: proxy.port });
  return proxy.username === undefined ? where : `${proxy.username}@${where}`;
}

/**
 * Parses `[USER:PASS@]HOST:PORT` or a `socks5://` / `socks5h://` URL (userinfo
 * percent-decoded). `what` names the source in errors (`--socks5`, `ALL_PROXY`); the
 * password never appears in them. ERR_INVALID_ARGUMENT when it does not parse.
 */
export function parseSocks5Proxy(text: string, what: string): Socks5Proxy {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  const fail = (why: string): NattravError =>
    new NattravError(ErrorCode.InvalidArgument, `${what}: ${why} in ${JSON.stringify(maskUrlPassword(text))}; expected [USER:PASS@]HOST:PORT or socks5://[USER:PASS@]HOST:PORT (socks5h:// lets the proxy resolve names)`);
  const kind = scheme?.[1]?.toLowerCase();
  if (kind !== undefined && kind !== 'socks5' && kind !== 'socks5h') throw fail(`unsupported scheme ${kind}://`);
  const rest = kind === undefined ? text : text.slice((scheme?.[0] ?? '').length).replace(/\/$/, '');
  const at = rest.lastIndexOf('@');
  const userinfo = at === -1 ? undefined : rest.slice(0, at);
  const hostPort = at === -1 ? rest : rest.slice(at + 1);
  const match = /^(?:\[([^\]]+)\]|([^:[\]/]+)):(\d{1,5})$/.exec(hostPort);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (host === undefined || !(port >= 1 && port <= 65535)) throw fail('no HOST:PORT (port 1-65535)');
  let credentials: { username: string; password: string } | undefined;
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    if (colon <= 0) throw fail('credentials must be USER:PASS');
    const decode = (s: string): string => (kind === undefined ? s : decodeURIComponent(s));
    credentials = { username: decode(userinfo.slice(0, colon)), password: decode(userinfo.slice(colon + 1)) };
    // RFC 1929: one length byte each.
    if (Buffer.byteLength(credentials.username) > 255 || Buffer.byteLength(credentials.password) > 255) throw fail('user and password are at most 255 bytes each (RFC 1929)');
  }
  return { host, port, ...credentials, remoteDns: kind === 'socks5h' };
}

/** Whether NO_PROXY-style `patterns` exempt `host` from the proxy. */
export function bypassesProxy(host: string, patterns: readonly string[]): boolean {
  const name = host.toLowerCase().replace(/^\[|\]$/g, '');
  return patterns.some((raw) => {
    const pattern = raw.trim().toLowerCase().replace(/:\d+$/, '');
    if (pattern === '') return false;
    if (pattern === '*') return true;
    const bare = pattern.replace(/^\*?\./, '');
    return name === bare || name.endsWith(`.${bare}`);
  });
}

/** A {@link Dialer} through a SOCKS5 proxy, which names the proxy (a recipient also holds a BIND there: socks5-bind.ts). */
export interface Socks5Dialer extends Dialer {
  readonly kind: 'socks5';
  readonly proxy: Socks5Proxy;
}

/** Whether `dialer` goes through a SOCKS5 proxy of ours ({@link socks5Dialer}). */
export function isSocks5Dialer(dialer: Dialer | undefined): dialer is Socks5Dialer {
  return dialer?.kind === 'socks5' && typeof (dialer as Partial<Socks5Dialer>).proxy === 'object';
}

/**
 * The dialer for `proxy`: CONNECT through it (targets `noProxy` names are dialled
 * directly). Errors: ERR_PROXY when the proxy cannot be reached, refuses our
 * credentials, or speaks no SOCKS5 we accept; ERR_BROKER_UNREACHABLE when the proxy
 * cannot reach the target (its reply names why).
 */
export function socks5Dialer(proxy: Socks5Proxy): Socks5Dialer {
  return {
    kind: 'socks5',
    proxy,
    dial: (target, signal) => (bypassesProxy(target.host, proxy.noProxy ?? []) ? DIRECT_DIALER.dial(target, signal) : dialThrough(proxy, target, signal)),
  };
}

async function dialThrough(proxy: Socks5Proxy, target: HostPort, signal: AbortSignal): Promise<Socket> {
  let host = target.host;
  if (proxy.remoteDns !== true && isIP(host) === 0) {
    try {
      host = (await lookup(host)).address;
    } catch (err) {
      throw new NattravError(ErrorCode.BrokerUnreachable, `cannot resolve ${target.host}`, { cause: err, address: target.host, port: target.port });
    }
  }
  const socket = await reachProxy(proxy, signal);
  const onAbort = (): void => {
    socket.destroy();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    // Loaded when a proxy is first used: most peers never go through one.
    const { SocksClient } = await import('socks');
    await SocksClient.createConnection({
      proxy: { host: proxy.host, port: proxy.port, type: 5, ...(proxy.username === undefined ? {} : { userId: proxy.username, password: proxy.password ?? '' }) },
      command: 'connect',
      destination: { host, port: target.port },
      timeout: BROKER_CONNECT_TIMEOUT_MS,
      existing_socket: socket,
    });
    await takeOver(socket);
    return socket;
  } catch (err) {
    socket.destroy();
    if (signal.aborted) throw abortError(signal);
    throw socksError(err, proxy, { host, port: target.port });
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * Takes the socket back from the `socks` package in the state a fresh socket is in. The
 * package hands over bytes that followed the proxy's reply in the same read (the other
 * peer may speak first) as a synthetic 'data' event on the next macrotask, and resumes
 * the socket then: a consumer reading with 'readable' would miss them, and data arriving
 * before a consumer listens would be dropped. So: catch that event, pause, put the bytes
 * back with unshift, and let the stream's flowing state return to "not decided" (adding
 * and removing a 'readable' listener does that on the next tick), so the next consumer's
 * 'data' or 'readable' listener starts the flow and sees every byte.
 */
export async function takeOver(socket: Socket): Promise<void> {
  const excess: Buffer[] = [];
  const collect = (chunk: Buffer): void => {
    excess.push(chunk);
  };
  socket.on('data', collect);
  // The package's own setImmediate was queued before this one.
  await new Promise((resolve) => setImmediate(resolve));
  socket.off('data', collect);
  socket.pause();
  if (excess.length > 0) socket.unshift(Buffer.concat(excess));
  const none = (): void => undefined;
  socket.on('readable', none);
  socket.off('readable', none);
  await new Promise((resolve) => process.nextTick(resolve));
}

/** A TCP connection to the proxy itself; ERR_PROXY when it cannot be made. */
export function reachProxy(proxy: Socks5Proxy, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    // The relay keeps a broker connection as the peer connection, which half-closes like TCP.
    const socket = netConnect({ host: proxy.host, port: proxy.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    const finish = (err: Error | undefined): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      if (err === undefined) {
        resolve(socket);
        return;
      }
      socket.destroy();
      reject(err);
    };
    const onAbort = (): void => finish(abortError(signal));
    const onError = (err: Error & { code?: string }): void =>
      finish(new NattravError(ErrorCode.Proxy, `SOCKS5 proxy unreachable: ${describeProxy(proxy)} (${err.code ?? err.message})`, { cause: err, address: proxy.host, port: proxy.port }));
    const timer = setTimeout(
      () => finish(new NattravError(ErrorCode.Proxy, `SOCKS5 proxy unreachable: no answer from ${describeProxy(proxy)} within ${BROKER_CONNECT_TIMEOUT_MS} ms`, { address: proxy.host, port: proxy.port })),
      BROKER_CONNECT_TIMEOUT_MS,
    );
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', onError);
    socket.once('connect', () => finish(undefined));
  });
}

/** The `socks` package's error as a NattravError: the proxy's fault (ERR_PROXY), or the target's. */
export function socksError(err: unknown, proxy: Socks5Proxy, target: HostPort): NattravError {
  const message = err instanceof Error ? err.message : String(err);
  const where = formatEndpoint({ address: target.host, port: target.port });
  const context = { cause: err, address: proxy.host, port: proxy.port };
  if (/Authentication failed/i.test(message)) {
    return new NattravError(ErrorCode.Proxy, `SOCKS5 proxy ${describeProxy(proxy)} refused our username/password (RFC 1929)`, context);
  }
  if (/no accepted authentication type/i.test(message)) {
    const offered = proxy.username === undefined ? 'no authentication (it wants a username and password: --socks5 USER:PASS@HOST:PORT)' : 'username/password or none';
    return new NattravError(ErrorCode.Proxy, `SOCKS5 proxy ${describeProxy(proxy)} accepts none of the methods we offer (${offered})`, context);
  }
  const rejected = /rejected connection - (\w+)/i.exec(message)?.[1];
  if (rejected !== undefined) {
    return new NattravError(ErrorCode.BrokerUnreachable, `unreachable through SOCKS5 proxy ${describeProxy(proxy)}: ${where} (the proxy answered ${rejected})`, { cause: err, address: target.host, port: target.port });
  }
  return new NattravError(ErrorCode.Proxy, `SOCKS5 proxy ${describeProxy(proxy)} failed connecting to ${where}: ${message}`, context);
}

/**
 * The SOCKS5 proxy the environment names, as curl reads it: `SOCKS_PROXY`, else
 * `ALL_PROXY` (lower-case names too), when it is a `socks5://` or `socks5h://` URL
 * (`SOCKS_PROXY` may also be a bare `[USER:PASS@]HOST:PORT`); other schemes are for
 * other proxies and are left alone. `NO_PROXY` lists the targets reached directly.
 */
export function socks5FromEnvironment(env: NodeJS.ProcessEnv): Socks5Proxy | undefined {
  const read = (name: string): string | undefined => {
    const value = env[name] ?? env[name.toLowerCase()];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };
  const candidates: Array<[string, string | undefined]> = [['SOCKS_PROXY', read('SOCKS_PROXY')], ['ALL_PROXY', read('ALL_PROXY')]];
  for (const [name, value] of candidates) {
    if (value === undefined) continue;
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
    if (scheme === undefined ? name !== 'SOCKS_PROXY' : scheme !== 'socks5' && scheme !== 'socks5h') continue;
    const noProxy = read('NO_PROXY')?.split(',').filter((p) => p.trim() !== '');
    return { ...parseSocks5Proxy(value, name), ...(noProxy === undefined ? {} : { noProxy }) };
  }
  return undefined;
}

/**
 * The dialer the peer options select: `dialer` as given, or a SOCKS5 dialer for
 * `socks5` (a proxy or its `[USER:PASS@]HOST:PORT` / URL text); undefined for a direct
 * connect. ERR_INVALID_ARGUMENT for both at once or a proxy that does not parse.
 */
export function dialerFromOptions(options: { readonly dialer?: Dialer; readonly socks5?: string | Socks5Proxy }): Dialer | undefined {
  if (options.socks5 === undefined) return options.dialer;
  if (options.dialer !== undefined) throw new NattravError(ErrorCode.InvalidArgument, 'socks5 and dialer: give one of them (socks5 makes a dialer)');
  const proxy = typeof options.socks5 === 'string' ? parseSocks5Proxy(options.socks5, 'socks5') : options.socks5;
  if (typeof proxy !== 'object' || proxy === null || typeof proxy.host !== 'string' || !Number.isInteger(proxy.port) || proxy.port < 1 || proxy.port > 65535) {
    throw new NattravError(ErrorCode.InvalidArgument, 'socks5: expected "[USER:PASS@]HOST:PORT", a socks5:// URL, or { host, port, username?, password? }');
  }
  return socks5Dialer(proxy);
}
