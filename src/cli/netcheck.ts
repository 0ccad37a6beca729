/** The `netcheck` command: NAT behaviour discovery against a broker (or any RFC 5780 STUN server). */
import { describeNat, discoverNat, formatAllocation, type NatProfile } from '../index.js';
import { ExitCode, type Reporter } from './output.js';

/** Human lines for a profile, one fact each. */
function humanLines(profile: NatProfile): string[] {
  const lines = [`NAT type: ${describeNat(profile)}`];
  if (profile.udpBlocked) return [...lines, 'UDP: no answer from the server (blocked)'];
  lines.push(`public address: ${profile.publicAddress ?? '?'}${profile.isPublic ? ' (no NAT)' : ''}`);
  lines.push(`UDP mapping: ${profile.mapping ?? 'not measured'}`);
  lines.push(`UDP filtering: ${profile.filtering ?? 'not measured'}`);
  lines.push(`UDP port allocation: ${profile.allocation === undefined ? 'not measured' : formatAllocation(profile.allocation)}`);
  if (profile.hairpinning !== undefined) lines.push(`hairpinning: ${profile.hairpinning ? 'yes' : 'no'}`);
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

/** `nattrav netcheck --broker HOST:PORT [--no-tcp]`: prints the NAT profile (one `netcheck` event with --json). */
export async function netcheckCommand(options: { broker: string; tcp?: boolean }, out: Reporter): Promise<number> {
  const controller = new AbortController();
  abortOnSignal(controller);
  const profile = await discoverNat({ server: options.broker, signal: controller.signal, tcp: options.tcp !== false });
  out.event('netcheck', { name: describeNat(profile), ...profile }, humanLines(profile).join('\n'));
  return ExitCode.Ok;
}
