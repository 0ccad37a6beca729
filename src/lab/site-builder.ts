/**
 * Builds one site of a lab: its link to the internet (optionally through a delay line), its
 * carrier-grade NAT, its NAT router and its LAN hosts. {@link Lab} supplies the environment
 * (namespace creation that teardown tracks, process spawning that is killed by PID at close).
 *
 * ```
 *   br0 --[delay]-- (cgn: wan0 <public> [masquerade] lan0 100.64.i.1) -- router wan0 100.64.i.2
 *   br0 --[delay]-- router wan0 <public>
 *   router [nft NAT] lan0 <lan>.1 -- host eth0 <lan>.2          (one host: a veth)
 *   router [nft NAT] lan0 = bridge -- l1..lN -- hosts <lan>.2..  (several hosts)
 * ```
 *
 * With IPv6 (ipv6.ts) the router's wan0 and lan0 and the hosts also get IPv6 addresses, and
 * the router an IPv6 firewall; with `ipv6: 'only'` they get nothing else (no IPv4, no NAT).
 */
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ErrorCode, NattravError } from '../errors.js';
import { DELAY_IFACES, ensureDelayLine } from './delayline.js';
import { addAddress6, firewall6Ruleset, ROUTER6_SYSCTLS, siteAddress6, waitForPrefixRoute } from './ipv6.js';
import { natRuleset, portRestrictedRuleset } from './nat.js';
import { ip, ipIn, nftLoad, sysctl } from './netns.js';
import { CGN_PREFIX_LENGTH, PUBLIC_PREFIX_LENGTH, type PlannedSite } from './plan.js';
import type { LabHost } from './types.js';

/** A delay line prints `ready` within milliseconds; this only catches one that cannot start. */
const delayLineReadyTimeoutMs = 10_000;

/** Kernel settings of a namespace holding a bridge: bridged frames skip the IPv4 hooks (br_netfilter is built in). */
export const BRIDGE_SYSCTLS = {
  'net.bridge.bridge-nf-call-iptables': 0,
  'net.bridge.bridge-nf-call-ip6tables': 0,
  'net.bridge.bridge-nf-call-arptables': 0,
} as const;

/** Routers forward and never send ICMP redirects (hairpinned flows leave on the interface they came in on). */
const routerSysctls = {
  'net.ipv4.ip_forward': 1,
  'net.ipv4.conf.all.send_redirects': 0,
  'net.ipv4.conf.default.send_redirects': 0,
} as const;

/** What {@link buildSite} needs from the lab. */
export interface SiteBuildEnv {
  /** The namespace holding the internet bridge `br0`. */
  readonly internetNs: string;
  /** Creates a namespace (recorded for teardown) with `lo` up. */
  addNamespace(ns: string): Promise<void>;
  /** Throws if the build was aborted. */
  check(): void;
  /** Spawns a tracked process inside `ns` (killed by PID at close). */
  spawn(ns: string, command: string, args: string[], options: SpawnOptions): ChildProcess;
  /** The broker's IPv6 address (what an `ipv6: 'blocked'` site may still reach, see SiteOptions.ipv6ToBroker). */
  readonly brokerAddress6: string;
}

/**
 * Puts the namespace `ns` on the internet: a veth from the bridge port `v-<tag>` to `iface`
 * holding `addresses` (IPv4) and `addresses6` (IPv6). With `delayMs > 0` the veth ends in
 * `wraw` instead, and a delay line joins it to a second veth pair `wdly` -- `iface`.
 */
export async function attachToInternet(env: SiteBuildEnv, ns: string, tag: string, iface: string, addresses: readonly string[], delayMs: number, addresses6: readonly string[] = []): Promise<void> {
  const port = `v-${tag}`;
  const delayed = delayMs > 0;
  await ip(['link', 'add', port, 'netns', env.internetNs, 'type', 'veth', 'peer', 'name', delayed ? DELAY_IFACES.raw : iface, 'netns', ns]);
  await ipIn(env.internetNs, ['link', 'set', port, 'master', 'br0', 'up']);
  if (delayed) {
    await ipIn(ns, ['link', 'add', DELAY_IFACES.inner, 'type', 'veth', 'peer', 'name', iface]);
    // The delay line's ends must be wires, not interfaces of this host: by default Linux answers
    // ARP for any of its addresses on any interface, and `wraw` would then take traffic for the
    // host's address straight from the bridge, around the delay.
    await sysctl(ns, { [`net.ipv6.conf.${DELAY_IFACES.raw}.disable_ipv6`]: 1, [`net.ipv6.conf.${DELAY_IFACES.inner}.disable_ipv6`]: 1 });
    for (const end of [DELAY_IFACES.raw, DELAY_IFACES.inner]) await ipIn(ns, ['link', 'set', end, 'arp', 'off', 'up']);
  }
  for (const address of addresses) await ipIn(ns, ['addr', 'add', `${address}/${PUBLIC_PREFIX_LENGTH}`, 'dev', iface]);
  for (const address of addresses6) await addAddress6(ns, iface, address);
  await ipIn(ns, ['link', 'set', iface, 'up']);
  if (delayed) await startDelayLine(env, ns, delayMs);
}

async function startDelayLine(env: SiteBuildEnv, ns: string, delayMs: number): Promise<void> {
  const binary = await ensureDelayLine();
  const micros = String(Math.round(delayMs * 1000));
  const child = env.spawn(ns, binary, [micros, DELAY_IFACES.raw, DELAY_IFACES.inner], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-2000);
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new NattravError(ErrorCode.Lab, `the delay line in ${ns} did not start within ${delayLineReadyTimeoutMs} ms: ${stderr}`)), delayLineReadyTimeoutMs);
      lines.once('line', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new NattravError(ErrorCode.Lab, `the delay line in ${ns} exited (${String(code)}) before it was ready: ${stderr}`));
      });
    });
  } finally {
    lines.close();
    child.stdout?.resume();
  }
}

/** Builds `planned` (not `none` sites: those are public hosts, see {@link Lab}). */
export async function buildSite(env: SiteBuildEnv, planned: PlannedSite): Promise<void> {
  const tag = `s${planned.index}`;
  if (planned.ipv6 === 'only' && planned.router !== undefined) {
    // No NAT and no IPv4: the router is the IPv6 firewall.
    const router = planned.router;
    env.check();
    await env.addNamespace(router.ns);
    await sysctl(router.ns, ROUTER6_SYSCTLS);
    await attachToInternet(env, router.ns, tag, 'wan0', [], planned.delayMs, router.address6 === undefined ? [] : [router.address6]);
    await buildLan(env, planned, router);
    await buildFirewall6(env, planned, router);
    return;
  }
  if (planned.router === undefined || planned.nat === 'none') {
    env.check();
    await env.addNamespace(planned.host.ns);
    await attachToInternet(env, planned.host.ns, tag, 'eth0', [planned.host.address], planned.delayMs);
    return;
  }
  const router = planned.router;
  env.check();
  await env.addNamespace(router.ns);
  if (planned.ipv6 !== 'off') await sysctl(router.ns, ROUTER6_SYSCTLS);
  const wan6 = router.address6 === undefined ? [] : [router.address6];
  if (planned.cgn !== undefined && planned.cgnLanAddress !== undefined) {
    // The carrier's NAT holds the public address (and the delay); the home router sits in 100.64.i.0/24 behind it.
    const cgn = planned.cgn;
    await env.addNamespace(cgn.ns);
    await attachToInternet(env, cgn.ns, tag, 'wan0', [cgn.address], planned.delayMs);
    await ip(['link', 'add', 'lan0', 'netns', cgn.ns, 'type', 'veth', 'peer', 'name', 'wan0', 'netns', router.ns]);
    await ipIn(cgn.ns, ['addr', 'add', `${planned.cgnLanAddress}/${CGN_PREFIX_LENGTH}`, 'dev', 'lan0']);
    await ipIn(cgn.ns, ['link', 'set', 'lan0', 'up']);
    await ipIn(router.ns, ['addr', 'add', `${router.address}/${CGN_PREFIX_LENGTH}`, 'dev', 'wan0']);
    await ipIn(router.ns, ['link', 'set', 'wan0', 'up']);
    await ipIn(router.ns, ['route', 'add', 'default', 'via', planned.cgnLanAddress]);
    await sysctl(cgn.ns, routerSysctls);
    env.check();
    await nftLoad(cgn.ns, portRestrictedRuleset({ wan: 'wan0', lan: 'lan0', wanAddress: cgn.address }));
  } else {
    await attachToInternet(env, router.ns, tag, 'wan0', [router.address], planned.delayMs, wan6);
  }
  await buildLan(env, planned, router);
  await sysctl(router.ns, routerSysctls);
  env.check();
  await nftLoad(router.ns, natRuleset(planned.nat, { wan: 'wan0', lan: 'lan0', wanAddress: router.address, hairpin: planned.hairpin }));
  if (planned.ipv6 !== 'off') await buildFirewall6(env, planned, router);
}

/** The stateful IPv6 firewall on a site's router (ipv6.ts); ROUTER6_SYSCTLS were set when its namespace was made. */
async function buildFirewall6(env: SiteBuildEnv, planned: PlannedSite, router: LabHost): Promise<void> {
  env.check();
  const blockExcept = planned.ipv6 !== 'blocked' ? undefined : planned.ipv6ToBroker ? [env.brokerAddress6] : [];
  await nftLoad(router.ns, firewall6Ruleset({ wan: 'wan0', lan: 'lan0', ...(blockExcept === undefined ? {} : { blockExcept }) }));
}

/** The LAN: one host on a veth `lan0`, or several on a bridge `lan0` in the router; IPv4, IPv6 or both. */
async function buildLan(env: SiteBuildEnv, planned: PlannedSite, router: LabHost): Promise<void> {
  const lanAddress = planned.lanAddress ?? '';
  const v4 = planned.ipv6 !== 'only';
  const router6 = planned.ipv6 === 'off' ? undefined : siteAddress6(planned.index, 1);
  const several = planned.hosts.length > 1;
  if (several) {
    await sysctl(router.ns, BRIDGE_SYSCTLS);
    await ipIn(router.ns, ['link', 'add', 'lan0', 'type', 'bridge']);
  }
  for (const [j, host] of planned.hosts.entries()) {
    await env.addNamespace(host.ns);
    const routerSide = several ? `l${j + 1}` : 'lan0';
    await ip(['link', 'add', routerSide, 'netns', router.ns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
    if (several) await ipIn(router.ns, ['link', 'set', routerSide, 'master', 'lan0', 'up']);
    if (v4) await ipIn(host.ns, ['addr', 'add', `${host.address}/${planned.lanPrefixLength}`, 'dev', 'eth0']);
    if (host.address6 !== undefined) await addAddress6(host.ns, 'eth0', host.address6);
    await ipIn(host.ns, ['link', 'set', 'eth0', 'up']);
    if (v4) await ipIn(host.ns, ['route', 'add', 'default', 'via', lanAddress]);
    if (router6 !== undefined) await ipIn(host.ns, ['-6', 'route', 'add', 'default', 'via', router6]);
  }
  if (v4) await ipIn(router.ns, ['addr', 'add', `${lanAddress}/${planned.lanPrefixLength}`, 'dev', 'lan0']);
  if (router6 !== undefined) await addAddress6(router.ns, 'lan0', router6);
  await ipIn(router.ns, ['link', 'set', 'lan0', 'up']);
  if (several && planned.lanPrefix6 !== undefined) await waitForPrefixRoute(router.ns, 'lan0', planned.lanPrefix6);
}
