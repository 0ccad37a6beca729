/**
 * Moving a LAN host from one site to another (a laptop carried from home to the office): its
 * link to its router is deleted, a new one is plugged into the other site's LAN bridge, and
 * the host gets an address there and a default route via that router. Its namespace, and the
 * processes in it, stay: what they see is their interface going away and coming back with
 * another address, behind another NAT.
 */
import { ErrorCode, NattravError } from '../errors.js';
import { ip, ipIn } from './netns.js';
import { formatIpv4, parseIpv4, type PlannedSite } from './plan.js';
import type { LabHost } from './types.js';

/** A moved host's address in its new LAN: the router's address plus this plus the number of moves so far (past the planned hosts). */
const MOVED_HOST_OFFSET = 20;

/**
 * Moves `host` (a LAN host of this lab, alone on its own LAN or on a bridge) onto `to`'s LAN,
 * which must be a bridge (a site with `hosts` of 2 or more); `move` numbers the moves (its
 * address and the router-side interface name). Returns the host with its new address.
 */
export async function moveHostTo(host: LabHost, to: PlannedSite, move: number): Promise<LabHost> {
  if (to.router === undefined || to.lanAddress === undefined || to.hosts.length < 2) {
    throw new NattravError(ErrorCode.InvalidArgument, `moveHost: site "${to.name}" has no LAN bridge to plug a host into; give it a NAT and hosts: 2 or more`);
  }
  const router = parseIpv4(to.lanAddress) as number;
  const address = formatIpv4(router + MOVED_HOST_OFFSET + move);
  const port = `mv${move}`;
  // Deleting one end of a veth deletes both: the old router loses its side with it.
  await ipIn(host.ns, ['link', 'del', 'eth0']);
  await ip(['link', 'add', port, 'netns', to.router.ns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
  await ipIn(to.router.ns, ['link', 'set', port, 'master', 'lan0', 'up']);
  await ipIn(host.ns, ['addr', 'add', `${address}/${to.lanPrefixLength}`, 'dev', 'eth0']);
  await ipIn(host.ns, ['link', 'set', 'eth0', 'up']);
  await ipIn(host.ns, ['route', 'add', 'default', 'via', to.lanAddress]);
  return Object.freeze({ ...host, address });
}
