/**
 * The real miniupnpd (Debian miniupnpd-nftables 2.3.1) on a lab site's NAT router, for the
 * port-mapping lab tests: its config file in a temporary directory, its nftables table
 * (`inet miniupnpd`, the chains its nft_init.sh would make: Debian's helper is broken), the
 * router's own ruleset opened where miniupnpd needs it, start and stop by PID, and a teardown
 * that removes all of it.
 *
 * miniupnpd refuses to forward when its WAN address looks private or reserved (203.0.113.0/24
 * is), unless STUN shows the address is public and unfiltered: so it is pointed at the lab
 * broker's RFC 5780 STUN service, whose answers (also from the alternate address and port)
 * the router's input chain must let in.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Lab } from '../../src/lab/lab.js';
import type { LabSite } from '../../src/lab/types.js';

/**
 * What miniupnpd serves in one run: UPnP IGD only (v2, or v1 with `force_igd_desc_v1`), or
 * NAT-PMP and PCP (2.3.1 has one switch for both).
 */
export type MiniupnpdMode = 'upnp' | 'upnp-igd1' | 'pmp';

/** The miniupnpd binary of the Debian package. */
export const MINIUPNPD = '/usr/sbin/miniupnpd';
/** Its HTTP (UPnP) port, fixed so captures and logs are stable. */
export const MINIUPNPD_HTTP_PORT = 5000;
/** The shortest NAT-PMP/PCP lease it grants, s (its default, 120, would make the tests slow). */
export const MINIUPNPD_MIN_LIFETIME_S = 10;
/** STUN (up to 2 x 3 s of waiting for answers from the alternate address) before it serves. */
export const MINIUPNPD_START_TIMEOUT_MS = 30_000;

const TABLE = 'miniupnpd';

/** The chains miniupnpd adds its rules to, in a table of its own (policy accept: the lab's `ip nattrav` table filters). */
const RULESET = `table inet ${TABLE} {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
`;

function config(mode: MiniupnpdMode, lab: Lab): string {
  return `ext_ifname=wan0
listening_ip=lan0
http_port=${MINIUPNPD_HTTP_PORT}
enable_upnp=${mode === 'pmp' ? 'no' : 'yes'}
enable_natpmp=${mode === 'pmp' ? 'yes' : 'no'}
force_igd_desc_v1=${mode === 'upnp-igd1' ? 'yes' : 'no'}
ext_perform_stun=yes
ext_stun_host=${lab.broker.address}
ext_stun_port=3478
upnp_table_name=${TABLE}
upnp_nat_table_name=${TABLE}
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
min_lifetime=${MINIUPNPD_MIN_LIFETIME_S}
secure_mode=yes
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
allow 1024-65535 192.168.0.0/16 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`;
}

/** One miniupnpd on a site's router; {@link Miniupnpd.close} undoes everything {@link Miniupnpd.create} did. */
export class Miniupnpd {
  #child: ChildProcess | undefined;
  #log = '';
  /** Rules added to the lab's `ip nattrav` table: chain and handle, deleted at close. */
  readonly #added: Array<{ chain: string; handle: string }> = [];

  private constructor(
    readonly lab: Lab,
    readonly site: LabSite,
    readonly mode: MiniupnpdMode,
    readonly dir: string,
  ) {}

  /** Writes the config, creates the nftables chains, opens the router's ruleset for STUN answers and mapped flows. */
  static async create(lab: Lab, site: LabSite, mode: MiniupnpdMode): Promise<Miniupnpd> {
    if (site.router === undefined) throw new Error(`site ${site.name} has no NAT router`);
    const dir = await mkdtemp(join(tmpdir(), 'nattrav-miniupnpd-'));
    const daemon = new Miniupnpd(lab, site, mode, dir);
    try {
      await writeFile(join(dir, 'miniupnpd.conf'), config(mode, lab));
      await writeFile(join(dir, 'miniupnpd.nft'), RULESET);
      const router = site.router;
      await lab.run(router, 'nft', ['-f', join(dir, 'miniupnpd.nft')]);
      // STUN answers from the broker's two addresses and ports reach miniupnpd on the router itself.
      await daemon.#addRule('insert', 'input', ['iifname', 'wan0', 'ip', 'saddr', `${lab.broker.address}/31`, 'udp', 'sport', '3478-3479', 'accept']);
      // Inbound flows miniupnpd's prerouting dnat'ed to the LAN pass the router's forward chain.
      await daemon.#addRule('add', 'forward', ['iifname', 'wan0', 'oifname', 'lan0', 'ct', 'status', 'dnat', 'accept']);
    } catch (err) {
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  async #addRule(verb: 'add' | 'insert', chain: string, rule: string[]): Promise<void> {
    const router = this.site.router as NonNullable<LabSite['router']>;
    const { stdout } = await this.lab.run(router, 'nft', ['--echo', '--handle', verb, 'rule', 'ip', 'nattrav', chain, ...rule]);
    const handle = /# handle (\d+)/.exec(stdout)?.[1];
    if (handle === undefined) throw new Error(`nft did not echo the handle of the rule added to ${chain}: ${stdout}`);
    this.#added.push({ chain, handle });
  }

  /** Everything miniupnpd wrote (it logs to stderr in the foreground). */
  get log(): string {
    return this.#log;
  }

  /** Starts miniupnpd in the foreground and resolves once it serves (its "listening" log line). */
  async start(): Promise<void> {
    if (this.#child !== undefined) throw new Error('miniupnpd is already running');
    const router = this.site.router as NonNullable<LabSite['router']>;
    const child = this.lab.spawn(router, MINIUPNPD, ['-d', '-f', join(this.dir, 'miniupnpd.conf'), '-P', join(this.dir, 'miniupnpd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    const ready = this.mode === 'pmp' ? /Listening for NAT-PMP\/PCP traffic/ : /HTTP listening on port/;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`miniupnpd did not serve within ${MINIUPNPD_START_TIMEOUT_MS} ms:\n${this.#log.slice(-2000)}`)), MINIUPNPD_START_TIMEOUT_MS);
      const onData = (chunk: Buffer): void => {
        this.#log += chunk.toString('utf8');
        if (ready.test(this.#log)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`miniupnpd exited with ${String(code)}:\n${this.#log.slice(-2000)}`));
      });
    });
    if (/port forwarding is (now )?disabled|Port forwarding is impossible/i.test(this.#log)) throw new Error(`miniupnpd serves but will not forward:\n${this.#log.slice(-2000)}`);
  }

  /**
   * Stops miniupnpd by PID and flushes its chains, like a gateway reboot: every mapping is
   * gone (miniupnpd keeps no lease file here, so it comes back with none and a new epoch).
   */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    const router = this.site.router as NonNullable<LabSite['router']>;
    for (const chain of ['miniupnpd', 'prerouting_miniupnpd', 'postrouting_miniupnpd']) {
      await this.lab.run(router, 'nft', ['flush', 'chain', 'inet', TABLE, chain], { allowFailure: true });
    }
  }

  /** The rules miniupnpd holds now (its dnat chain), as nft lists them. */
  async redirects(): Promise<string> {
    const router = this.site.router as NonNullable<LabSite['router']>;
    return (await this.lab.run(router, 'nft', ['list', 'chain', 'inet', TABLE, 'prerouting_miniupnpd'])).stdout;
  }

  /** Stops miniupnpd, deletes its table and the rules added to the router's, removes the temporary directory. */
  async close(): Promise<void> {
    try {
      await this.stop();
      const router = this.site.router;
      if (router !== undefined && !this.lab.closed) {
        await this.lab.run(router, 'nft', ['delete', 'table', 'inet', TABLE], { allowFailure: true });
        for (const { chain, handle } of this.#added.splice(0)) {
          await this.lab.run(router, 'nft', ['delete', 'rule', 'ip', 'nattrav', chain, 'handle', handle], { allowFailure: true });
        }
      }
    } finally {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}
