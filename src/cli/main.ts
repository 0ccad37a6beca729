#!/usr/bin/env node
/**
 * The `nattrav` command. Thin: parses argv, calls the library, prints.
 * Progress and events go to stderr (human text, or JSON lines with --json);
 * stdout carries a command's result (netcheck, ca, lab matrix, demo) or, for
 * listen/connect, application data only. Exit codes: see output.ts / README.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { LOG_FORMATS, LOG_LEVELS, maxWorkers, parseProtocols } from './option-values.js';
import { addCaCommand } from './ca.js';
import { addConfig } from './config.js';
import type { BrokerCommandOptions } from './broker.js';
import type { ConnectCommandOptions, ListenCommandOptions } from './commands.js';
import type { ExposeCommandOptions } from './expose.js';
import type { ForwardCommandOptions } from './forward.js';
import type { LabMatrixOptions } from './lab.js';
import type { PortmapCommandOptions } from './portmap.js';
// Each command's body is loaded when that command runs (lazy.ts).
import { brokerCommand, connectCommand, connectDatagramCommand, demoCommand, exposeCommand, forwardCommand, labMatrixCommand, listenCommand, listenDatagramCommand, netcheckCommand, portmapCommand } from './lazy.js';
import { createRequire } from 'node:module';
import { ExitCode, Reporter } from './output.js';
import { StopSignals } from './signals.js';
import { examples } from './help.js';
import { BROKER_URL_HELP, HTTP_PROXY_HELP } from './web.js';
import { collect } from './repeatable.js';

/** The version in package.json. */
function packageVersion(): string {
  const pkg = createRequire(import.meta.url)('../../../package.json') as { version?: string };
  return pkg.version ?? 'unknown';
}

function wholeNumber(value: string): string {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a whole number');
  return value;
}

function positiveInteger(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError('expected a positive whole number of milliseconds');
  return value;
}

function positiveCount(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return value;
}

function portNumber(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 65535) throw new InvalidArgumentError('expected a port number 1..65535');
  return value;
}

/** `--workers N` (from the flag, NATTRAV_WORKERS or the config file): 1 to four per core. */
function workerCount(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > maxWorkers()) {
    throw new InvalidArgumentError(`expected a whole number from 1 to ${maxWorkers()} (four per core on this machine)`);
  }
  return value;
}

function ipv4Address(value: string): string {
  if (!/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(value)) throw new InvalidArgumentError('expected an IPv4 address such as 192.168.1.1');
  return value;
}

async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(ExitCode.Ok);
  const program = new Command()
    .name('nattrav')
    .description('Direct TCP connections between peers behind NATs, through a connection broker.')
    .option('--json', 'report events as JSON lines on stderr')
    .version(packageVersion(), '-V, --version', 'print the version of nattrav')
    .exitOverride()
    .showHelpAfterError();
  const reporter = (): Reporter => new Reporter(program.opts<{ json?: boolean }>().json === true);
  const run = (fn: (out: Reporter) => Promise<number>, json?: boolean): void => {
    const out = withJson(reporter(), json);
    result = fn(out).catch((err: unknown) => out.error(err));
  };
  // Long-running commands: the first SIGINT/SIGTERM winds them down (exit 130/143), a second exits at once.
  const runStoppable = (fn: (out: Reporter, stop: StopSignals) => Promise<number>, json?: boolean): void => {
    const stop = new StopSignals();
    // The handlers stay until the process exits: a signal while the result is being flushed
    // must not kill the process with the signal instead of the command's exit code.
    run((out) =>
      fn(out, stop).catch((err: unknown) => {
        if (stop.exitCode === undefined) throw err;
        return stop.exitCode;
      }),
      json,
    );
  };

  program
    .command('broker')
    .description('run a connection broker (UDP and TCP on one port)')
    .option('--listen <host:port>', 'address to listen on', '0.0.0.0:3478')
    .option('--alternate <host[:port]>', 'second IP address of this host for RFC 5780 NAT discovery (needs a specific --listen host); :PORT sets the alternate port (default: --listen port + 1)')
    .option('--relay-max-bytes <n>', 'cut a relayed connection after this many bytes, both directions (default: 1 GiB; 0 = unlimited)', wholeNumber)
    .option('--relay-max-seconds <n>', 'cut a relayed connection after this many seconds (default: 3600; 0 = unlimited)', wholeNumber)
    .option('--max-standby <n>', 'standby exchanges (one open TCP connection per warm recipient) held at most; at the cap recipients get none (default: 10000; 0 = none; with --workers none)', wholeNumber)
    .option('--ca <file>', 'CA certificate (PEM): URIs that are not self-certifying need a certificate from it')
    .option('--cert <file>', 'the broker\'s certificate (PEM), so peers that trust its CA can authenticate it')
    .option('--key <file>', 'the broker\'s private key (PEM)')
    .option('--open', 'accept registrations without proof of key (closed networks only; warns loudly)')
    .option('--strict-amplification', 'never answer an unauthenticated UDP request with more bytes than it had (bare STUN Bindings then get no answer)')
    .option('--stun-compat', 'full RFC 5780 answers (up to 124 bytes) to small Binding requests, as coturn\'s natdiscovery expects')
    .option('--http <host:port>', 'serve a status page (/), Prometheus /metrics and /healthz over HTTP here')
    .option('--ws-listen <[ws://|wss://]host:port>', 'also serve peers over WebSocket here, for networks that pass only the web: wss with --cert/--key (e.g. :443), else ws (e.g. :80); ws:// or wss:// says which; repeatable', collect, undefined)
    .addOption(new Option('--log-format <format>', 'logs on stderr: JSON lines with time and level, or one readable line per event (default: json)').choices(LOG_FORMATS))
    .addOption(new Option('--log-level <level>', 'least severe level logged; registration refreshes and status requests are debug (default: info)').choices(LOG_LEVELS))
    .option('--json', 'the same as --log-format json')
    .option('--limit <name=value>', 'set one of the broker\'s rates, caps or timeouts, e.g. maxConnections=20000, udpRegister=50/200 (PER_SECOND/BURST), recipientTimeoutMs=8000; repeatable', collect, undefined)
    .option('--list-limits', 'print every limit\'s name, default and meaning, then exit')
    .option('--redis <url>', 'keep registrations and sessions in Redis >= 7 (redis://[user:password@]host:port or rediss://; a single server or a cluster), shared with other brokers using it: a cluster, each broker reaching the others\' recipients')
    .option('--announce <ip>', 'an address of this broker peers can reach on its port, at most one per family (with --listen [::]:PORT, which serves both): a recipient registering over one family is told the other and registers there too (dual stack); repeatable', collect, undefined)
    .option('--join-address <ip:port>', 'with --redis: where peers reach this broker, told to recipients registered through other brokers so they join its attempts (default: the --listen address, which must then be specific)')
    .option('--workers <n>', 'run N broker processes sharing the UDP and TCP ports, one per core (default: 1, one process); limits stay those of one broker', workerCount)
    .action((options: BrokerCommandOptions) => {
      // `nattrav --json broker` too. Logs follow --log-format; an error that stops the broker is a JSON line when JSON was asked for explicitly.
      const json = options.json === true || program.opts<{ json?: boolean }>().json === true;
      runStoppable((out, stop) => brokerCommand({ ...options, json }, stop), json || options.logFormat === 'json');
    })
    .addHelpText(
      'after',
      examples([
        'nattrav broker --listen 0.0.0.0:3478',
        'nattrav broker --listen [::]:3478 --announce 198.51.100.7 --announce 2001:db8::7',
        'nattrav broker --listen 203.0.113.3:3478 --alternate 203.0.113.4 --json',
        'nattrav broker --http 127.0.0.1:8080 --log-format pretty --log-level debug',
        'nattrav broker --cert broker.pem --key broker.key --ws-listen 0.0.0.0:443 --ws-listen ws://0.0.0.0:80',
        'nattrav broker --limit maxRegistrations=500000 --limit udpRegister=50/500',
        'nattrav broker --workers 4 --listen 0.0.0.0:3478',
        'NATTRAV_REDIS=rediss://broker:PASSWORD@redis.internal:6379 nattrav broker --join-address 198.51.100.7:3478',
        'nattrav broker --listen 198.51.100.8:3478 --redis redis://redis.internal:6379',
      ]),
    );

  program
    .command('listen')
    .description('register URI and accept connections (first one piped to stdin/stdout, like nc -l)')
    .argument('<uri>', 'the URI to register, e.g. nattrav://alice')
    .requiredOption('--broker <host:port>', `(required) the broker to register with; several as HOST:PORT,HOST:PORT (a cluster on one Redis): the first that answers, the next when it stops${BROKER_URL_HELP}`)
    .option('--http-proxy <url>', HTTP_PROXY_HELP)
    .option('--echo', 'echo every connection back instead of piping the first to stdio')
    .option('--udp', 'take datagram (UDP) channels instead of TCP connections: each line of stdin is one datagram, each datagram received one line on stdout')
    .option('--keepalive <ms>', 'a fixed registration refresh interval, ms (turns adaptive keepalive off; keep it under the NAT\'s UDP timeout); a lost registration is tried again at least this often', positiveInteger)
    .option('--keepalive-max <ms>', 'the longest interval adaptive keepalive may set (default 60000; by default the interval starts at 10000 and becomes 80% of the NAT mapping lifetime measured in the background, at least 5000)', positiveInteger)
    .option('--once', 'fail at once when the first registration fails (exit 4 for an unreachable broker) instead of retrying with backoff')
    .option('--takeover', 'take the URI from another running listen with the same key (it exits 13); without it this one exits 2 when another holds the URI')
    .option('--no-standby', 'decline the standby exchange the broker offers (a TCP connection kept open so each incoming attempt skips a round of messages)')
    .option('--no-dual-stack', 'register over the broker\'s first address family only (default: also over the other one, IPv6 or IPv4, when the broker and this host have it)')
    .option('--allow <uri>', 'accept only initiators that prove this identity in the TLS handshake (repeat for several)', collect, undefined)
    .option('--tls', 'TLS 1.3 with mutual authentication on every connection (the default)')
    .option('--no-tls', 'plain TCP, no end-to-end authentication (for protocols with their own security)')
    .option('--portmap', 'map the port we accept on at our gateway (PCP, NAT-PMP, UPnP IGD) and register it: path portmap (the default; never with a broker on loopback)')
    .option('--no-portmap', 'ask no gateway for a port mapping')
    .option('--identity <dir>', 'our identity: cert.pem, key.pem (and ca.pem) as written by nattrav ca issue')
    .option('--ca <file>', 'also trust certificates from this CA (PEM)')
    .option('--broker-ca <file>', 'the CA that issued the broker\'s certificate: refuse a broker that cannot prove itself')
    .option('--socks5 <[user:pass@]host:port>', 'reach the broker and peers through this SOCKS5 proxy (default: SOCKS_PROXY / ALL_PROXY socks5:// URLs, NO_PROXY honoured); registration then runs over TCP')
    .option('--key-dir <dir>', 'where a default identity\'s key is kept (default ~/.nattrav/keys)')
    .option('--json', 'report events as JSON lines on stderr')
    .action((uri: string, options: ListenCommandOptions & { json?: boolean }) =>
      runStoppable((out, stop) => (options.udp === true ? listenDatagramCommand : listenCommand)(uri, options, withJson(out, options.json), stop)),
    )
    .addHelpText('after', examples([
        'nattrav listen nattrav://alice --broker broker.example:3478 > received.bin',
        'nattrav listen nattrav://echo --broker 127.0.0.1:3478 --echo --json',
        'nattrav listen nattrav://svc --broker broker.example:3478 --echo --allow nattrav://k-<fingerprint> --allow nattrav://ops',
      ]));

  program
    .command('connect')
    .description('connect to URI and pipe stdin/stdout to the connection, like nc')
    .argument('<uri>', 'the URI to connect to')
    .requiredOption('--broker <host:port>', `(required) the broker to ask; several as HOST:PORT,HOST:PORT: tried in order while they do not answer${BROKER_URL_HELP}`)
    .option('--http-proxy <url>', HTTP_PROXY_HELP)
    .option('--timeout <ms>', 'give up after this many milliseconds', positiveInteger)
    .option('-v, --verbose', 'print each strategy as it starts, succeeds or fails')
    .option('--udp', 'open a datagram (UDP) channel instead of a TCP connection: each line of stdin is one datagram, each datagram received one line on stdout; EOF ends our side (the peer is told) and the channel closes once the peer ends too')
    .option('--ipv4', 'connect over IPv4 only (default: race IPv6 against IPv4 when the broker has both, IPv6 first)')
    .option('--ipv6', 'connect over IPv6 only (the recipient must be registered over IPv6)')
    .option('--family-delay <ms>', 'in the IPv6/IPv4 race, how long IPv4 waits for IPv6 before it starts too (default 50)', wholeNumber)
    .option('--tls', 'TLS 1.3 with mutual authentication, the recipient\'s key checked against URI (the default)')
    .option('--no-tls', 'plain TCP, no end-to-end authentication (for protocols with their own security)')
    .option('--expect-key <fingerprint>', 'the key the recipient must hold, as nattrav listen prints it (pins a plain name)')
    .option('--accept-new-key', 'accept and remember a plain name\'s key that differs from the one remembered')
    .option('--known-keys <file>', 'where keys of plain names are remembered (default ~/.nattrav/known_keys)')
    .option('--identity <dir>', 'our identity for TLS (default: a throwaway self-certifying one)')
    .option('--ca <file>', 'trust certificates from this CA (PEM)')
    .option('--broker-ca <file>', 'the CA that issued the broker\'s certificate: refuse a broker that cannot prove itself')
    .option('--socks5 <[user:pass@]host:port>', 'reach the broker and peers through this SOCKS5 proxy (default: SOCKS_PROXY / ALL_PROXY socks5:// URLs, NO_PROXY honoured); registration then runs over TCP')
    .option('--json', 'report events as JSON lines on stderr')
    .action((uri: string, options: ConnectCommandOptions & { json?: boolean }) =>
      runStoppable((out, stop) => (options.udp === true ? connectDatagramCommand : connectCommand)(uri, options, withJson(out, options.json), stop)),
    )
    .addHelpText('after', examples(['nattrav connect nattrav://alice --broker broker.example:3478 < file.bin', 'echo hello | nattrav connect nattrav://echo --broker 127.0.0.1:3478 -v']));

  program
    .command('expose')
    .description('make a local TCP service reachable by URI: every incoming peer connection is forwarded to it')
    .argument('<target>', 'the local service, [HOST:]PORT (host 127.0.0.1 when left out)')
    .argument('[uri]', 'the URI to register (default: a self-certifying nattrav://k-... URI, printed on stdout)')
    .requiredOption('--broker <host:port>', `(required) the broker to register with; several as HOST:PORT,HOST:PORT (a cluster on one Redis): the first that answers, the next when it stops${BROKER_URL_HELP}`)
    .option('--http-proxy <url>', HTTP_PROXY_HELP)
    .option('--identity <dir>', 'keep our identity here: loaded if the directory holds one, else a new self-certifying one is saved there (same URI next run)')
    .option('--tls', 'TLS 1.3 with mutual authentication on every connection (the default)')
    .option('--no-tls', 'plain TCP, no end-to-end authentication (for protocols with their own security)')
    .option('--portmap', 'map the port we accept on at our gateway (PCP, NAT-PMP, UPnP IGD) and register it: path portmap (the default; never with a broker on loopback)')
    .option('--no-portmap', 'ask no gateway for a port mapping')
    .option('--ca <file>', 'also trust certificates from this CA (PEM)')
    .option('--broker-ca <file>', 'the CA that issued the broker\'s certificate: refuse a broker that cannot prove itself')
    .option('--socks5 <[user:pass@]host:port>', 'reach the broker and peers through this SOCKS5 proxy (default: SOCKS_PROXY / ALL_PROXY socks5:// URLs, NO_PROXY honoured); registration then runs over TCP')
    .option('--key-dir <dir>', 'where the key of a plain-name URI is kept (default ~/.nattrav/keys)')
    .option('--max-connections <n>', 'peer connections carried at once; more are refused with "busy" (default 64)', positiveCount)
    .option('--max-connections-per-peer <n>', 'connections of one peer identity carried at once, so one peer cannot hold them all (default: half of --max-connections)', positiveCount)
    .option('--idle-timeout <seconds>', 'close a connection over which nothing went either way for this long (default: never)', positiveCount)
    .option('--allow <uri>', 'accept only initiators that prove this identity in the TLS handshake (repeat for several; forward --identity DIR prints its URI)', collect, undefined)
    .option('--once', 'fail at once when the first registration fails (exit 4 for an unreachable broker) instead of retrying with backoff')
    .option('--keepalive <ms>', 'a fixed registration refresh interval, ms (turns adaptive keepalive off; keep it under the NAT\'s UDP timeout); a lost registration is tried again at least this often', positiveInteger)
    .option('--keepalive-max <ms>', 'the longest interval adaptive keepalive may set (default 60000; by default the interval starts at 10000 and becomes 80% of the NAT mapping lifetime measured in the background, at least 5000)', positiveInteger)
    .option('--takeover', 'take the URI from another running expose or listen with the same key (it exits 13); without it this one exits 2 when another holds the URI')
    .option('--json', 'JSON lines: the URI on stdout, progress and one line per connection on stderr')
    .action((target: string, uri: string | undefined, options: ExposeCommandOptions & { json?: boolean }) =>
      runStoppable((out, stop) => exposeCommand(target, uri, options, withJson(out, options.json), stop)),
    )
    .addHelpText('after', examples(['nattrav expose 8080 --broker broker.example:3478', 'nattrav expose 127.0.0.1:22 --broker broker.example:3478 --identity ~/.nattrav/ssh --allow nattrav://k-<fingerprint> --json']));

  program
    .command('forward')
    .description('accept local TCP connections and carry each over its own peer connection to a service made reachable with expose')
    .argument('<uri>', 'the URI expose printed, e.g. nattrav://k-...')
    .requiredOption('--listen <[host:]port>', '(required) where to accept local connections (host 127.0.0.1 when left out; port 0: any free port)')
    .requiredOption('--broker <host:port>', `(required) the broker to ask; several as HOST:PORT,HOST:PORT: tried in order while they do not answer${BROKER_URL_HELP}`)
    .option('--http-proxy <url>', HTTP_PROXY_HELP)
    .option('--identity <dir>', 'our identity, kept here (created self-certifying when the directory holds none), so an exposer can allow it')
    .option('--tls', 'TLS 1.3 with mutual authentication, the exposer\'s key checked against URI (the default)')
    .option('--no-tls', 'plain TCP, no end-to-end authentication (for protocols with their own security)')
    .option('--expect-key <fingerprint>', 'the key the exposer must hold (pins a plain name)')
    .option('--accept-new-key', 'accept and remember a plain name\'s key that differs from the one remembered')
    .option('--known-keys <file>', 'where keys of plain names are remembered (default ~/.nattrav/known_keys)')
    .option('--ca <file>', 'trust certificates from this CA (PEM)')
    .option('--broker-ca <file>', 'the CA that issued the broker\'s certificate: refuse a broker that cannot prove itself')
    .option('--socks5 <[user:pass@]host:port>', 'reach the broker and peers through this SOCKS5 proxy (default: SOCKS_PROXY / ALL_PROXY socks5:// URLs, NO_PROXY honoured); registration then runs over TCP')
    .option('--timeout <ms>', 'give up a peer connection after this many milliseconds (default 30000)', positiveInteger)
    .option('--max-connections <n>', 'local connections carried at once; more are reset (default 32: an exposer carries 32 of one peer by default)', positiveCount)
    .option('--idle-timeout <seconds>', 'close a connection over which nothing went either way for this long (default: never)', positiveCount)
    .option('--json', 'JSON lines: the listening address on stdout, progress and one line per connection on stderr')
    .action((uri: string, options: ForwardCommandOptions & { json?: boolean }) =>
      runStoppable((out, stop) => forwardCommand(uri, options, withJson(out, options.json), stop)),
    )
    .addHelpText('after', examples(['nattrav forward nattrav://k-... --listen 8080 --broker broker.example:3478', 'nattrav forward nattrav://k-... --listen 127.0.0.1:2222 --broker 127.0.0.1:3478 --json']));

  program
    .command('netcheck')
    .description('classify the NAT between here and a broker (RFC 5780: mapping, filtering, port allocation, hairpinning, TCP)')
    .requiredOption('--broker <host:port>', '(required) the broker (or any RFC 5780 STUN server) to test against')
    .option('--no-tcp', 'skip the TCP tests (then a UDP block cannot be told from a broker that is down)')
    .option('--json', 'print the result as one JSON line on stdout')
    .option('--http-proxy <url>', HTTP_PROXY_HELP)
    .option('--lifetime', 'also measure how long the NAT keeps an idle UDP mapping (RFC 5780 4.6; takes about 1-2 minutes, up to 4 for a patient NAT)')
    .action((options: { broker: string; tcp?: boolean; httpProxy?: string; lifetime?: boolean; json?: boolean }) => run((out) => netcheckCommand(options, withJson(out, options.json))))
    .addHelpText('after', examples(['nattrav netcheck --broker broker.example:3478', 'nattrav netcheck --broker 203.0.113.3:3478 --json', 'nattrav netcheck --broker broker.example:3478 --lifetime']));

  program
    .command('portmap')
    .description('ask the gateway for port mappings (PCP, NAT-PMP, UPnP IGD): which protocols it speaks, its external address; --map holds a mapping for the run')
    .option('--gateway <ip>', 'the gateway to ask (default: the IPv4 default route\'s)', ipv4Address)
    .option('--protocol <list>', 'protocols to try, in order, comma-separated (default: pcp,nat-pmp,upnp; pcp falls back to nat-pmp by itself)', (value: string) => {
      try {
        parseProtocols(value);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
      return value;
    })
    .option('--map <port>', 'map this local port and hold the mapping (renewed, re-added after a gateway reboot) until SIGINT/SIGTERM, then delete it', portNumber)
    .option('--udp', 'map a UDP port instead of TCP')
    .option('--lease <seconds>', 'the lease to ask for; renewed at half of what the gateway grants (default 7200)', positiveCount)
    .option('--json', 'JSON lines: results on stdout, renewals and deletion on stderr')
    .action((options: PortmapCommandOptions & { json?: boolean }) => runStoppable((out, stop) => portmapCommand(options, withJson(out, options.json), stop)))
    .addHelpText('after', examples(['nattrav portmap', 'nattrav portmap --map 8080 --lease 600 --json', 'nattrav portmap --gateway 192.168.1.1 --protocol upnp']));

  program
    .command('demo')
    .description('two peers behind two NATs connect directly (network lab as root; loopback otherwise)')
    .option('--loopback', 'skip the network lab even when root')
    .option('--json', 'JSON lines: steps on stderr, the result on stdout')
    .action((options: { loopback?: boolean; json?: boolean }) => run((out) => demoCommand(options, withJson(out, options.json))))
    .addHelpText('after', examples(['nattrav demo', 'nattrav demo --loopback --json']));

  program
    .command('lab')
    .description('network-namespace NAT lab tools (root)')
    .command('matrix')
    .description('connect every NAT type to every NAT type in the lab; print a table, optionally write an HTML report')
    .option('--types <a,b,c>', 'NAT types to cross (default: all)')
    .option('--delay <ms>', 'one-way delay on every site link, ms', '0')
    .option('--repeats <n>', 'connects per pair', '1')
    .option('--report <file.html>', 'write a standalone HTML report')
    .option('--json', 'JSON lines: each cell and the summary on stdout, progress on stderr')
    .action((options: LabMatrixOptions & { json?: boolean }) => run((out) => labMatrixCommand(options, withJson(out, options.json))))
    .addHelpText('after', examples(['nattrav lab matrix --types port-restricted,symmetric', 'nattrav lab matrix --delay 25 --report matrix.html']));

  addCaCommand(program, run, withJson);
  // Environment variables and the config file for every command's options, and `nattrav config`.
  addConfig(program, run);

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
    throw err;
  }
  return result;
}

function withJson(out: Reporter, json: boolean | undefined): Reporter {
  return json === true && !out.json ? new Reporter(true) : out;
}

// A reader that went away (`nattrav listen --help | head -3`) is no crash: what is left of the
// output has nowhere to go. Commands whose stdout carries a connection's data (pipe.ts) watch
// it themselves and report the broken pipe with their own exit code.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') return;
  process.stderr.write(`nattrav: cannot write to standard output: ${err.message}\n`);
  process.exit(ExitCode.Failure);
});

// If the event loop ever empties while a command is still pending, something dropped its
// last handle without settling: say so and fail rather than exit 0 with no result.
let settled = false;
process.once('beforeExit', () => {
  if (settled) return;
  process.stderr.write('nattrav: internal error: the operation stalled with nothing left to wait for\n');
  process.exit(ExitCode.Failure);
});

main(process.argv).then(
  (code) => {
    settled = true;
    process.exitCode = code;
    // Let stdout drain, then leave even if a handle (a keepalive timer) is still open.
    setTimeout(() => process.exit(code), 50).unref();
    if (process.stdout.writableLength === 0) process.stdout.end();
  },
  (err: unknown) => {
    settled = true;
    process.stderr.write(`nattrav: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(ExitCode.Failure);
  },
);
