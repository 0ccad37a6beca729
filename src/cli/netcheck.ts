/**
 * The `netcheck` command: NAT behaviour discovery against a broker (or any
 * RFC 5780 STUN server). The profile is the result, on stdout; a broker that
 * answers on neither UDP nor TCP is discoverNat's ERR_BROKER_UNREACHABLE (exit 4).
 */
import { describeNat, discoverNat, formatAllocation, type NatProfile } from '../index.js';
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

/** `nattrav netcheck --broker HOST:PORT [--no-tcp]`: prints the NAT profile on stdout (one `netcheck` JSON line with --json). */
export async function netcheckCommand(options: { broker: string; tcp?: boolean }, out: Reporter): Promise<number> {
  const controller = new AbortController();
  abortOnSignal(controller);
  const profile = await discoverNat({ server: options.broker, signal: controller.signal, tcp: options.tcp !== false });
  out.result('netcheck', { name: describeNat(profile), ...profile }, humanLines(profile).join('\n'));
  return ExitCode.Ok;
}
