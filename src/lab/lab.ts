/**
 * The network-namespace NAT lab.
 *
 * Topology (IPv4; IPv6 where asked for):
 *
 * ```
 *   inet namespace: bridge br0 = the "internet", 203.0.113.0/24 and 2001:db8::/64
 *     |-- broker          203.0.113.2 and alternate 203.0.113.3 (RFC 5780 needs two addresses); 2001:db8::2
 *     |-- public hosts    203.0.113.4, .5, ...; 2001:db8::4, ::5, ...
 *     |-- site i, nat none: the host itself at 203.0.113.(10 * (i + 1))
 *     `-- site i, NAT:    router wan0 203.0.113.(10 * (i + 1)) [nftables NAT]
 *                          router lan0 <lanSubnet>.1  ---  host eth0 <lanSubnet>.2 (default via .1)
 * ```
 *
 * A site with IPv6 (`SiteOptions.ipv6`, see `ipv6.ts`) also gets router wan0
 * 2001:db8::<10 * (i + 1)> and LAN 2001:db8:<i + 1>::/64 behind a stateful IPv6 firewall (no
 * NAT); an `ipv6: 'only'` site has no IPv4 at all. The broker, the public hosts and every IPv6
 * router route each IPv6 site's LAN prefix via its router.
 *
 * Sites may add a carrier-grade NAT in front of the router, several LAN hosts on a bridge,
 * hairpinning, and a one-way delay on their internet link (a userspace delay line): see
 * `site-builder.ts` and `delayline.ts`.
 *
 * Every namespace is named `ntlab-<pid>-<4 hex>-<role>`, so {@link cleanupStaleLabs} can find
 * the ones whose owner died. Deleting a namespace deletes its interfaces, routes, conntrack
 * table and nftables rulesets, so teardown is: kill processes by PID, delete namespaces.
 */
import { execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NattravError } from '../errors.js';
import { addRoutes6, backboneRoutes } from './ipv6.js';
import { addNamespace, deleteNamespace, ipIn, namespacePids, nft, nftLoad, sysctl } from './netns.js';
import { planLab, type LabPlan, type PlannedSite } from './plan.js';
import { attachToInternet, BRIDGE_SYSCTLS, buildSite, type SiteBuildEnv } from './site-builder.js';
import { ProcessTracker } from './procs.js';
import { moveHostTo } from './move.js';
import type {
  LabHost, LabOptions, LabRunOptions, LabRunResult, LabSite, TrafficCounterOptions, TrafficCounterReader, TrafficCounts,
} from './types.js';

/** The bridge in the internet namespace. */
const BRIDGE = 'br0';

/** Kernel settings of the internet namespace: bridged frames must not pass the IPv4/IPv6/ARP netfilter hooks (br_netfilter is built in). */
const internetSysctls = BRIDGE_SYSCTLS;

/** A network lab of namespaces, veths, a bridge and NAT routers; see the module comment. */
export class Lab {
  /** Labs not closed yet, torn down synchronously if the process exits without closing them. */
  static readonly #open = new Set<Lab>();
  static #exitHookInstalled = false;

  /** `<pid>-<4 hex>`: the part of every namespace name that identifies this lab. */
  readonly id: string;
  /** The broker host, 203.0.113.2 (alternate address 203.0.113.3) and 2001:db8::2. */
  readonly broker: LabHost;
  readonly #plan: LabPlan;
  readonly #created: string[] = [];
  readonly #procs = new ProcessTracker();
  #home: string | undefined;
  #closing: Promise<void> | undefined;
  #counters = 0;
  #moves = 0;

  private constructor(plan: LabPlan) {
    this.#plan = plan;
    this.id = plan.id;
    this.broker = plan.broker;
  }

  /** Builds a lab. On any failure half-way it tears down what it made, then throws. */
  static async create(options: LabOptions): Promise<Lab> {
    const plan = planLab(options);
    const lab = new Lab(plan);
    Lab.#open.add(lab);
    Lab.#installExitHook();
    try {
      await lab.#build(options.signal);
    } catch (error) {
      await lab.close().catch(() => {});
      throw error;
    }
    return lab;
  }

  /** The extra public host called `name` (203.0.113.4, .5, ... in the order of `publicHosts`). */
  publicHost(name: string): LabHost {
    const host = this.#plan.publicHosts.get(name);
    if (host === undefined) {
      throw new NattravError(ErrorCode.InvalidArgument, `no public host "${name}" in this lab; it has: ${[...this.#plan.publicHosts.keys()].join(', ') || 'none'}`);
    }
    return host;
  }

  /** The site called `name`. */
  site(name: string): LabSite {
    const site = this.#plan.sites.get(name);
    if (site === undefined) {
      throw new NattravError(ErrorCode.InvalidArgument, `no site "${name}" in this lab; it has: ${[...this.#plan.sites.keys()].join(', ') || 'none'}`);
    }
    return site;
  }

  /** Every site, in the order they were given. */
  get sites(): LabSite[] {
    return [...this.#plan.sites.values()];
  }

  /** Every extra public host, in the order they were given. */
  get publicHosts(): LabHost[] {
    return [...this.#plan.publicHosts.values()];
  }

  /**
   * Moves a LAN host onto the LAN of site `to` (move.ts): its link to its router is replaced
   * by one into `to`'s LAN bridge (`to` needs `hosts` of 2 or more), with a new address there.
   * Its processes keep running. Returns the host with its new address.
   */
  moveHost(host: LabHost, to: string): Promise<LabHost> {
    try {
      const site = this.site(to) as PlannedSite;
      const own = this.#own(host);
      if (![...this.#plan.sites.values()].some((s) => s.router !== undefined && s.ipv6 === 'off' && s.hosts.some((h) => h.ns === own.ns))) {
        throw new NattravError(ErrorCode.InvalidArgument, `moveHost: ${own.name} is not a LAN host behind a NAT on an IPv4-only site; only those can move`);
      }
      if (site.ipv6 !== 'off') throw new NattravError(ErrorCode.InvalidArgument, `moveHost: site "${to}" has IPv6; hosts move between IPv4-only sites only`);
      return moveHostTo(own, site, ++this.#moves);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Names of the namespaces this lab has created and not yet deleted. */
  get namespaces(): string[] {
    return [...this.#created];
  }

  /**
   * A temporary home directory for the lab's processes (their keys and known keys are
   * throwaway), made on first use and removed at close(): a lab run never writes into the
   * real `~/.nattrav` (cli-process.ts startCli uses it unless given another).
   */
  get home(): string {
    if (this.closed) throw new NattravError(ErrorCode.Closed, `lab ${this.id} is closed`);
    this.#home ??= mkdtempSync(join(tmpdir(), 'nattrav-lab-home-'));
    return this.#home;
  }

  /** True once {@link Lab.close} has been called. */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** Spawns `ip netns exec <ns> command ...args`; the process is tracked and killed by PID at close(). */
  spawn(host: LabHost, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    return this.#procs.spawn(this.#own(host).ns, command, args, options);
  }

  /** Runs to completion inside the host's namespace; rejects with NattravError(Lab) on non-zero exit unless allowFailure. */
  run(host: LabHost, command: string, args: string[], options: LabRunOptions = {}): Promise<LabRunResult> {
    try {
      return this.#procs.run(this.#own(host).ns, command, args, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Installs an nftables byte/packet counter on all IPv4 traffic (and IPv6 with
   * `options.ipv6`) entering and leaving the host (except on `lo`); returns a reader.
   */
  async trafficCounter(host: LabHost, options: TrafficCounterOptions = {}): Promise<TrafficCounterReader> {
    const { ns } = this.#own(host);
    const table = `nattrav_count${++this.#counters}`;
    const family = options.ipv6 === true ? 'inet' : 'ip';
    await nftLoad(ns, `table ${family} ${table} {
  counter bytes_in {
  }
  counter bytes_out {
  }
  chain count_in {
    type filter hook prerouting priority raw - 10; policy accept;
    iifname != "lo" counter name "bytes_in"
  }
  chain count_out {
    type filter hook postrouting priority srcnat + 50; policy accept;
    oifname != "lo" counter name "bytes_out"
  }
}
`);
    return async (): Promise<TrafficCounts> => {
      const input = await readCounter(ns, family, table, 'bytes_in');
      const output = await readCounter(ns, family, table, 'bytes_out');
      return { packetsIn: input.packets, bytesIn: input.bytes, packetsOut: output.packets, bytesOut: output.bytes };
    };
  }

  /** Idempotent: kills tracked processes by PID (SIGTERM, then SIGKILL after 2 s), deletes every namespace it created. */
  close(): Promise<void> {
    this.#closing ??= this.#teardown();
    return this.#closing;
  }

  /** Same as {@link Lab.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #own(host: LabHost): LabHost {
    if (this.closed) throw new NattravError(ErrorCode.Closed, `lab ${this.id} is closed`);
    if (typeof host !== 'object' || host === null || !this.#created.includes(host.ns)) {
      throw new NattravError(ErrorCode.InvalidArgument, `host ${JSON.stringify(host?.name)} is not part of lab ${this.id}; pass a host from lab.broker, lab.publicHost() or lab.site()`);
    }
    return host;
  }

  async #build(signal: AbortSignal | undefined): Promise<void> {
    // The signal is checked between steps, never handed to the commands: killing an
    // `ip netns add` that already made its namespace would leak a namespace teardown never saw.
    const check = (): void => {
      if (signal?.aborted === true) {
        throw new NattravError(ErrorCode.Aborted, `Lab.create was aborted; lab ${this.id} was torn down`, { cause: signal.reason });
      }
    };
    const inet = this.#plan.internetNs;
    check();
    await this.#addNamespace(inet);
    await sysctl(inet, internetSysctls);
    await ipIn(inet, ['link', 'add', BRIDGE, 'type', 'bridge']);
    await ipIn(inet, ['link', 'set', BRIDGE, 'up']);

    const env: SiteBuildEnv = {
      internetNs: inet,
      addNamespace: (ns) => this.#addNamespace(ns),
      check,
      spawn: (ns, command, args, options) => this.#procs.spawn(ns, command, args, options),
      brokerAddress6: this.broker.address6 ?? '',
    };
    const publicHost = async (host: LabHost, tag: string): Promise<void> => {
      check();
      await this.#addNamespace(host.ns);
      await attachToInternet(env, host.ns, tag, 'eth0', [host.address, ...(host.alternateAddress === undefined ? [] : [host.alternateAddress])], 0, host.address6 === undefined ? [] : [host.address6]);
    };
    const site = (planned: PlannedSite): Promise<void> => buildSite(env, planned);

    // Hosts are independent of each other once the bridge exists; build them concurrently,
    // but let every branch finish before reporting, so teardown sees all it made.
    const results = await Promise.allSettled([
      publicHost(this.broker, 'brk'),
      ...[...this.#plan.publicHosts.values()].map((host, i) => publicHost(host, `p${i}`)),
      ...[...this.#plan.sites.values()].map(site),
    ]);
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    check();
    await this.#routeIpv6();
    check();
  }

  /** Every backbone node with IPv6 routes each IPv6 site's LAN prefix via that site's router (ipv6.ts). */
  async #routeIpv6(): Promise<void> {
    const sites = [...this.#plan.sites.values()];
    if (!sites.some((site) => site.ipv6 !== 'off')) return;
    const nodes = [
      { ns: this.broker.ns, own: undefined },
      ...[...this.#plan.publicHosts.values()].map((host) => ({ ns: host.ns, own: undefined })),
      ...sites.flatMap((site) => (site.ipv6 === 'off' || site.router === undefined ? [] : [{ ns: site.router.ns, own: site.lanPrefix6 }])),
    ];
    await Promise.all(nodes.map((node) => addRoutes6(node.ns, backboneRoutes(sites, node.own))));
  }

  async #addNamespace(ns: string): Promise<void> {
    await addNamespace(ns);
    this.#created.push(ns);
    await ipIn(ns, ['link', 'set', 'lo', 'up']);
  }

  async #teardown(): Promise<void> {
    await this.#procs.killAll();
    const failures: string[] = [];
    // Hosts and routers first, the internet last (its bridge ports vanish with their peers).
    for (const ns of [...this.#created].reverse()) {
      try {
        // Anything still inside (children of tracked processes) would keep the namespace
        // alive after its name is gone: kill it by PID.
        for (const pid of await namespacePids(ns)) killPid(pid);
        await deleteNamespace(ns);
        this.#created.splice(this.#created.indexOf(ns), 1);
      } catch (error) {
        failures.push(error instanceof Error ? error.message : String(error));
      }
    }
    Lab.#open.delete(this);
    if (this.#home !== undefined) rmSync(this.#home, { recursive: true, force: true });
    if (failures.length > 0) {
      throw new NattravError(ErrorCode.Lab, `closing lab ${this.id} left namespaces behind: ${failures.join('; ')}`);
    }
  }

  /** Last resort when the process exits with the lab open: SIGKILL by PID, delete namespaces, synchronously. */
  #closeSync(): void {
    this.#procs.killAllSync();
    for (const ns of [...this.#created].reverse()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        for (const pid of pids.split(/\s+/).filter((word) => /^\d+$/.test(word))) killPid(Number(pid));
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // Nothing more can be done while exiting; cleanupStaleLabs() will find it later.
      }
    }
    this.#created.length = 0;
  }

  static #installExitHook(): void {
    if (Lab.#exitHookInstalled) return;
    Lab.#exitHookInstalled = true;
    process.once('exit', () => {
      for (const lab of Lab.#open) lab.#closeSync();
    });
  }
}

function killPid(pid: number): void {
  if (pid === process.pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

async function readCounter(ns: string, family: 'ip' | 'inet', table: string, name: string): Promise<{ packets: number; bytes: number }> {
  const text = await nft(ns, ['-j', 'list', 'counter', family, table, name]);
  const parsed: unknown = JSON.parse(text);
  const items = (parsed as { nftables?: unknown }).nftables;
  if (Array.isArray(items)) {
    for (const item of items) {
      const counter = (item as { counter?: { packets?: unknown; bytes?: unknown } }).counter;
      if (counter !== undefined && typeof counter.packets === 'number' && typeof counter.bytes === 'number') {
        return { packets: counter.packets, bytes: counter.bytes };
      }
    }
  }
  throw new NattravError(ErrorCode.Lab, `nft -j list counter ${family} ${table} ${name} in ${ns} returned no counter: ${text.slice(0, 200)}`);
}
