/**
 * The `netcheck` command: NAT behaviour discovery against a broker (or any
 * RFC 5780 STUN server). The profile is the result, on stdout; a broker that
 * answers on neither UDP nor TCP is discoverNat's ERR_BROKER_UNREACHABLE (exit 4).
 */
import { ErrorCode, NattravError, describeNat, discoverNat, formatAllocation, measureNatLifetime, parseHostPort, type NatProfile } from '../index.js';
import { describeLifetime, lifetimeFields } from './lifetime-text.js';
import { parseHttpProxy } from '../peer/web/http-proxy.js';
import { probeWeb, type WebProbe } from '../peer/web/probe.js';
import { ExitCode, type Reporter } from './output.js';

/** Human lines for a profile, one fact each. */
function humanLines(profile: NatProfile): string[] {
  const lines = [`NAT type: ${describeNat(profile)}`];
  if (profile.udpBlocked) {
    // discoverNat reports this only when TCP got through.
    lines.push('UDP: no answer from the server, while TCP reaches it (UDP is blocked on the way)');
  } else {
    lines.push(`public address: ${profile.publicAddress ?? '?'}${profile.isPublic ? ' (no NAT)' : ''}`);
    lines.push(`UDP mapping: ${profile.mapping ?? 'not measured'}`);
    lines.push(`UDP filtering: ${profile.filtering ?? 'not measured'}`);
    lines.push(`UDP port allocation: ${profile.allocation === undefined ? 'not measured' : formatAllocation(profile.allocation)}`);
    if (profile.hairpinning !== undefined) lines.push(`hairpinning: ${profile.hairpinning ? 'yes' : 'no'}`);
  }
  if (profile.tcp !== undefined) {
    if (profile.tcp.blocked) lines.push('TCP: no connection to the server (blocked)');
    else {
      lines.push(`TCP mapping: ${profile.tcp.mapping ?? 'not measured'}`);
      lines.push(`TCP port allocation: ${profile.tcp.allocation === undefined ? 'not measured' : formatAllocation(profile.tcp.allocation)}`);
    }
  }
  for (const note of profile.notes ?? []) lines.push(`note: ${note}`);
  return lines;
}

/** Resolves on the first SIGINT or SIGTERM, aborting `controller`. */
function abortOnSignal(controller: AbortController): void {
  const abort = (): void => controller.abort();
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);
}

/** The human line for a web probe. */
function webLine(web: WebProbe): string {
  return web.reachable ? `web: the broker answers over ${web.via} (seen from ${web.publicEndpoint}); peers fall back to it` : `web: no answer either (${web.reasons.join('; ')})`;
}

/**
 * netcheck --lifetime: how long the NAT keeps an idle UDP mapping (about 1-2 minutes; progress
 * on stderr). A server that cannot measure it (no RESPONSE-PORT) is a line of the result, not a failure.
 */
async function lifetimeResult(broker: string, out: Reporter, signal: AbortSignal): Promise<{ fields: Record<string, unknown>; line: string }> {
  out.event('measuring', { what: 'udp-mapping-lifetime' }, 'measuring how long the NAT keeps an idle UDP mapping (about 1-2 minutes)...');
  try {
    const lifetime = await measureNatLifetime({
      server: broker,
      signal,
      onProbe: (p) => out.event('lifetime-probe', { silenceMs: p.silenceMs, alive: p.alive }, `a mapping idle ${(p.silenceMs / 1000).toFixed(1)} s ${p.alive ? 'lived' : 'was gone'}`),
    });
    return { fields: lifetimeFields(lifetime), line: `UDP mapping lifetime: ${describeLifetime(lifetime)}` };
  } catch (err) {
    if (signal.aborted || !(err instanceof NattravError)) throw err;
    return { fields: { error: { code: err.code, message: err.message } }, line: `UDP mapping lifetime: not measured (${err.message})` };
  }
}

/**
 * `nattrav netcheck --broker HOST:PORT [--no-tcp] [--http-proxy URL] [--lifetime]`: prints the NAT profile on
 * stdout (one `netcheck` JSON line with --json). When TCP is blocked, or neither UDP nor TCP
 * answers, it also tries the web fallback (wss:443, then ws:80) and reports it as `web`; a
 * broker reachable only over the web is exit 0, one reachable nowhere exit 4. With --lifetime
 * (and UDP working) it also measures the UDP mapping lifetime and reports it as `lifetime`.
 */
export async function netcheckCommand(options: { broker: string; tcp?: boolean; httpProxy?: string; lifetime?: boolean }, out: Reporter): Promise<number> {
  const controller = new AbortController();
  abortOnSignal(controller);
  if (options.httpProxy !== undefined) parseHttpProxy(options.httpProxy, '--http-proxy');
  const webOptions = options.httpProxy === undefined ? {} : { httpProxy: options.httpProxy };
  let profile: NatProfile;
  try {
    profile = await discoverNat({ server: options.broker, signal: controller.signal, tcp: options.tcp !== false });
  } catch (err) {
    if (!(err instanceof NattravError) || err.code !== ErrorCode.BrokerUnreachable) throw err;
    const web = await probeWeb(parseHostPort(options.broker, '--broker', 3478), webOptions, controller.signal);
    if (!web.reachable) throw new NattravError(err.code, `${err.message}; ${webLine(web)}`, { cause: err });
    out.result('netcheck', { name: 'web only', web }, [`NAT type: web only (neither UDP nor TCP reaches the broker)`, webLine(web)].join('\n'));
    return ExitCode.Ok;
  }
  const web = profile.tcp?.blocked === true ? await probeWeb(parseHostPort(options.broker, '--broker', 3478), webOptions, controller.signal) : undefined;
  const lines = humanLines(profile);
  if (web !== undefined) lines.push(webLine(web));
  const lifetime = options.lifetime === true && !profile.udpBlocked ? await lifetimeResult(options.broker, out, controller.signal) : undefined;
  if (lifetime !== undefined) lines.push(lifetime.line);
  out.result('netcheck', { name: describeNat(profile), ...profile, ...(web === undefined ? {} : { web }), ...(lifetime === undefined ? {} : { lifetime: lifetime.fields }) }, lines.join('\n'));
  return ExitCode.Ok;
}
