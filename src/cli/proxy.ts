/**
 * `--socks5 [USER:PASS@]HOST:PORT` of listen, connect, expose and forward, and the
 * environment's SOCKS5 proxy (SOCKS_PROXY / ALL_PROXY with NO_PROXY, as curl reads them)
 * when the flag is not given. The proxy is reported on stderr without its password.
 */
import { describeProxy, parseSocks5Proxy, socks5FromEnvironment, type Socks5Proxy } from '../peer/socks5.js';
import type { Reporter } from './output.js';

/** The peer option `socks5` for `flag` (the --socks5 value) or the environment; `{}` for a direct connect. */
export function socks5Option(flag: string | undefined, out: Reporter, env: NodeJS.ProcessEnv = process.env): { socks5?: Socks5Proxy } {
  const fromEnv = socks5FromEnvironment(env);
  const proxy = flag === undefined ? fromEnv : { ...parseSocks5Proxy(flag, '--socks5'), ...(fromEnv?.noProxy === undefined ? {} : { noProxy: fromEnv.noProxy }) };
  if (proxy === undefined) return {};
  const source = flag === undefined ? 'the environment (SOCKS_PROXY / ALL_PROXY)' : '--socks5';
  out.event('proxy', { type: 'socks5', proxy: describeProxy(proxy), source }, `through SOCKS5 proxy ${describeProxy(proxy)} (from ${source}); only TCP passes it`);
  return { socks5: proxy };
}
