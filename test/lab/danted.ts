/**
 * The real danted (Debian dante-server) on a lab site's NAT router, for the SOCKS5 lab
 * test: it listens on the router's LAN address and goes out from its WAN address, with
 * username/password (RFC 1929) checked against a system user the helper creates under a
 * unique name. The router's forward chain then drops everything from the LAN to the WAN,
 * so the proxy is the site's only way out. BIND is allowed (`bind` and `bindreply`, from
 * anyone: a BIND request for 0.0.0.0:0 takes a connection from any address the rules let in),
 * and the router's input chain lets new TCP connections from the WAN reach the ports danted
 * binds for it (the kernel's ephemeral range, where danted's BIND ports come from), as an
 * administrator offering BIND would; `{ bind: false }` blocks BIND instead (`socks block`).
 * {@link Danted.close} kills danted by PID, removes the rules, the user and the temporary directory.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Lab } from '../../src/lab/lab.js';
import type { LabSite } from '../../src/lab/types.js';

const run = promisify(execFile);

/** The danted binary of the Debian package. */
export const DANTED = '/usr/sbin/danted';
/** The port danted listens on (the SOCKS default). */
export const DANTED_PORT = 1080;

/** The ports danted binds for a BIND: the router's ephemeral range (net.ipv4.ip_local_port_range's default). */
export const BIND_PORTS = '32768-60999';

function config(site: LabSite, bind: boolean): string {
  return `logoutput: stderr
internal: ${site.lanAddress as string} port = ${DANTED_PORT}
external: wan0
clientmethod: none
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass {
  from: 0.0.0.0/0 to: 0.0.0.0/0
}
${bind ? '' : 'socks block {\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  command: bind\n}\n'}socks pass {
  from: 0.0.0.0/0 to: 0.0.0.0/0
  command: connect bind bindreply
}
`;
}

/** One danted on a site's router and the system user it checks; close() undoes everything. */
export class Danted {
  #child: ChildProcess | undefined;
  #log = '';
  #ruleHandle: string | undefined;
  #bindRuleHandle: string | undefined;
  #userCreated = false;

  private constructor(
    readonly lab: Lab,
    readonly site: LabSite,
    readonly dir: string,
    /** The system user danted checks (unique per run), and its password. */
    readonly username: string,
    readonly password: string,
  ) {}

  /** Creates the user, writes the config, starts danted, and closes the router's LAN -> WAN forwarding. */
  static async start(lab: Lab, site: LabSite, options: { readonly bind?: boolean } = {}): Promise<Danted> {
    const bind = options.bind ?? true;
    if (site.router === undefined || site.lanAddress === undefined) throw new Error(`site ${site.name} has no NAT router`);
    const dir = await mkdtemp(join(tmpdir(), 'nattrav-danted-'));
    const daemon = new Danted(lab, site, dir, `ntsocks${randomBytes(4).toString('hex')}`, randomBytes(9).toString('base64url'));
    try {
      await run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', daemon.username]);
      daemon.#userCreated = true;
      await new Promise<void>((resolve, reject) => {
        const child = execFile('chpasswd', (err) => (err === null ? resolve() : reject(err)));
        child.stdin?.end(`${daemon.username}:${daemon.password}\n`);
      });
      const pidFile = join(dir, 'danted.pid');
      await writeFile(join(dir, 'danted.conf'), config(site, bind));
      const router = site.router;
      // Everything from the LAN to the WAN is dropped: the proxy on the router is the only way out.
      const { stdout } = await lab.run(router, 'nft', ['--echo', '--handle', 'insert', 'rule', 'ip', 'nattrav', 'forward', 'iifname', 'lan0', 'oifname', 'wan0', 'drop']);
      daemon.#ruleHandle = /# handle (\d+)/.exec(stdout)?.[1];
      if (bind) {
        // Initiators elsewhere connect to the address danted bound: let new connections to those ports in.
        const accepted = await lab.run(router, 'nft', ['--echo', '--handle', 'insert', 'rule', 'ip', 'nattrav', 'input', 'iifname', 'wan0', 'tcp', 'dport', BIND_PORTS, 'ct', 'state', 'new', 'accept']);
        daemon.#bindRuleHandle = /# handle (\d+)/.exec(accepted.stdout)?.[1];
      }
      const child = lab.spawn(router, DANTED, ['-f', join(dir, 'danted.conf'), '-p', pidFile, '-N', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      daemon.#child = child;
      child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (daemon.#log += chunk));
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (daemon.#log += chunk));
      await daemon.#listening();
    } catch (err) {
      await daemon.close();
      throw err;
    }
    return daemon;
  }

  /** `USER:PASS@LAN:1080`, as --socks5 takes it. */
  get proxy(): string {
    return `${this.username}:${this.password}@${this.site.lanAddress as string}:${DANTED_PORT}`;
  }

  /** What danted logged, for failure messages. */
  get log(): string {
    return this.#log;
  }

  /** Waits until danted accepts TCP on its port (polled from the LAN host, at most 20 s). */
  async #listening(): Promise<void> {
    const probe = `const s = require('node:net').connect(${DANTED_PORT}, '${this.site.lanAddress as string}');
s.on('connect', () => process.exit(0)); s.on('error', () => process.exit(1)); setTimeout(() => process.exit(1), 1000);`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.#child?.exitCode !== null && this.#child?.exitCode !== undefined) throw new Error(`danted exited (${this.#child.exitCode}): ${this.#log}`);
      const result = await this.lab.run(this.site.host, process.execPath, ['-e', probe], { allowFailure: true, timeoutMs: 5_000 });
      if (result.code === 0) return;
      if (Date.now() > deadline) throw new Error(`danted did not listen within 20 s: ${this.#log}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /** Kills danted by PID, removes the forward rule, the user and the directory; safe to call twice. */
  async close(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child?.pid !== undefined && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 3_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    if (this.#ruleHandle !== undefined && this.site.router !== undefined && !this.lab.closed) {
      await this.lab.run(this.site.router, 'nft', ['delete', 'rule', 'ip', 'nattrav', 'forward', 'handle', this.#ruleHandle], { allowFailure: true });
      this.#ruleHandle = undefined;
    }
    if (this.#bindRuleHandle !== undefined && this.site.router !== undefined && !this.lab.closed) {
      await this.lab.run(this.site.router, 'nft', ['delete', 'rule', 'ip', 'nattrav', 'input', 'handle', this.#bindRuleHandle], { allowFailure: true });
      this.#bindRuleHandle = undefined;
    }
    if (this.#userCreated) {
      await run('userdel', [this.username]).catch(() => undefined);
      this.#userCreated = false;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
