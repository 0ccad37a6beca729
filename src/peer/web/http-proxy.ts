/**
 * HTTP CONNECT proxies for the peer's web transport: which proxy to use for a URL
 * (`--http-proxy`, else the HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment like
 * curl), and opening a tunnel through one (RFC 9110 §9.3.6). Credentials in a proxy
 * URL go to the proxy as Basic auth and are masked in every message.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { abortError } from '../../common/signal.js';
import { ErrorCode, NattravError } from '../../errors.js';

/** Most bytes of a proxy's answer head before the tunnel (a status line and a few headers). */
const MAX_ANSWER_HEAD_BYTES = 16 * 1024;

/** A parsed proxy: where it listens and its Basic credentials, if any. */
export interface HttpProxy {
  readonly host: string;
  readonly port: number;
  /** `user:password` (decoded), for Proxy-Authorization: Basic. */
  readonly credentials?: string;
  /** The URL with its password masked, for messages. */
  readonly display: string;
}

/** `url` with any password replaced by `***` (and a bare user kept), for messages. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^@/]*)@/i, (_all, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return `${scheme}${colon < 0 ? userinfo : `${userinfo.slice(0, colon)}:***`}@`;
  });
}

/** Parses `http://[user:pass@]host[:port]` (port 80 by default; 3128 is common); throws ERR_INVALID_ARGUMENT naming `what`, the URL masked. */
export function parseHttpProxy(text: string, what: string): HttpProxy {
  const display = maskUrl(text);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: not a URL: ${display} (pass http://[USER:PASSWORD@]HOST:PORT)`);
  }
  if (url.protocol !== 'http:') {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: only http:// proxies (HTTP CONNECT) are supported, got ${display}`);
  }
  if (url.hostname === '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '') {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: pass http://[USER:PASSWORD@]HOST:PORT with no path, got ${display}`);
  }
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? 80 : Number(url.port),
    ...(user === '' && password === '' ? {} : { credentials: `${user}:${password}` }),
    display,
  };
}

/** True when NO_PROXY (`*`, or comma-separated hosts and domain suffixes, curl's rules) exempts `host`. */
export function bypassesProxy(host: string, noProxy: string | undefined): boolean {
  if (noProxy === undefined) return false;
  const name = host.toLowerCase().replace(/^\[|\]$/g, '');
  return noProxy
    .split(/[\s,]+/)
    .map((entry) => entry.trim().toLowerCase().replace(/^\*?\./, '').replace(/:\d+$/, ''))
    .filter((entry) => entry !== '')
    .some((entry) => entry === '*' || name === entry || name.endsWith(`.${entry}`));
}

/**
 * The proxy for a connection to `host` over `secure` (wss) or plain (ws) WebSocket:
 * `explicit` (`--http-proxy`; `false` means none), else from `env` like curl:
 * https_proxy / HTTPS_PROXY for wss, http_proxy / HTTP_PROXY for ws, unless
 * no_proxy / NO_PROXY exempts `host`. Empty variables count as unset.
 */
export function proxyFor(host: string, secure: boolean, explicit: string | false | undefined, env: NodeJS.ProcessEnv): HttpProxy | undefined {
  if (explicit === false) return undefined;
  if (explicit !== undefined) return parseHttpProxy(explicit, '--http-proxy');
  const pick = (...names: string[]): [string, string] | undefined => {
    for (const name of names) {
      const value = env[name];
      if (value !== undefined && value !== '') return [name, value];
    }
    return undefined;
  };
  const found = secure ? pick('https_proxy', 'HTTPS_PROXY') : pick('http_proxy', 'HTTP_PROXY');
  if (found === undefined || bypassesProxy(host, pick('no_proxy', 'NO_PROXY')?.[1])) return undefined;
  return parseHttpProxy(found[1], found[0]);
}

/**
 * Opens a tunnel to `host:port` through `proxy` with CONNECT, within `timeoutMs`
 * and until `signal` aborts; resolves with the socket carrying the tunnel. Rejects
 * with ERR_BROKER_UNREACHABLE naming the proxy (masked) and its answer.
 */
export function connectThroughProxy(proxy: HttpProxy, host: string, port: number, signal: AbortSignal, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    const socket = netConnect({ host: proxy.host, port: proxy.port, allowHalfOpen: true });
    let head = Buffer.alloc(0);
    const fail = (why: string, cause?: unknown): void => {
      cleanup();
      socket.destroy();
      reject(new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: HTTP proxy ${proxy.display}: CONNECT ${authority}: ${why}`, cause === undefined ? {} : { cause }));
    };
    const onAbort = (): void => {
      cleanup();
      socket.destroy();
      reject(abortError(signal));
    };
    const onError = (err: Error & { code?: string }): void => fail(err.code ?? err.message, err);
    const onClose = (): void => fail('the proxy closed the connection before answering');
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_ANSWER_HEAD_BYTES) fail(`answer head over ${MAX_ANSWER_HEAD_BYTES} bytes`);
        return;
      }
      const status = /^HTTP\/1\.[01] (\d{3})([^\r\n]*)/.exec(head.subarray(0, end).toString('latin1'));
      if (status === null) return fail('not an HTTP answer');
      if (status[1] !== '200') return fail(`${status[1]}${status[2] ?? ''}${status[1] === '407' ? (proxy.credentials === undefined ? ' (the proxy wants credentials: http://USER:PASSWORD@HOST:PORT)' : ' (wrong credentials)') : ''}`);
      // Nothing may come through the tunnel before we spoke (a TLS ClientHello or an HTTP upgrade goes first).
      if (head.length > end + 4) return fail('bytes after the answer before the tunnel was used');
      cleanup();
      resolve(socket);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.off('data', onData);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('data', onData);
    socket.once('connect', () => {
      const auth = proxy.credentials === undefined ? '' : `Proxy-Authorization: Basic ${Buffer.from(proxy.credentials).toString('base64')}\r\n`;
      socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
    });
  });
}
