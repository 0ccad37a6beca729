/**
 * `nattrav connect --udp` and `nattrav listen --udp`: a datagram channel instead of a
 * TCP stream. One line of stdin is one datagram (without its newline); each datagram
 * received is one line on stdout. EOF on stdin closes the channel (the peer's side
 * closes too); the peer closing ends the command with 0. Exit codes as for TCP.
 */
import { createInterface } from 'node:readline';
// Only what these commands run (as commands.ts): the public API (index.js) would load everything.
import { formatEndpoint, type HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import { connectDatagram } from '../peer/datagram/connect.js';
import type { DatagramChannel } from '../peer/datagram/channel.js';
import { bypassesProxy, socks5FromEnvironment } from '../peer/socks5.js';
import { isBrokerUrl } from '../peer/web/dialer.js';
import { checkTarget, familyOption, registerListener, security, traceReporter, withdraw, type ConnectCommandOptions, type ListenCommandOptions } from './commands.js';
import type { Reporter } from './output.js';
import { reportNotConnected } from './pipe.js';
import type { StopSignals } from './signals.js';

/**
 * Options that cannot work with --udp, by the reason; also a SOCKS5 proxy the environment
 * names (SOCKS_PROXY / ALL_PROXY, unless NO_PROXY exempts every broker): the TCP commands
 * would hide our address behind it, and UDP would go around it. HTTPS_PROXY / HTTP_PROXY
 * serve only the web route, which TCP takes after direct TCP failed, and --udp has none.
 */
export function refuseWithUdp(options: { socks5?: string; httpProxy?: string; broker: string; allow?: string[]; expectKey?: string; identity?: string }, brokers: readonly HostPort[], env: NodeJS.ProcessEnv = process.env): void {
  const fromEnv = socks5FromEnvironment(env);
  const problem =
    options.socks5 !== undefined || options.httpProxy !== undefined || isBrokerUrl(options.broker)
      ? 'a proxy or a ws:// broker carries no UDP'
      : options.allow !== undefined || options.expectKey !== undefined || options.identity !== undefined
        ? 'a datagram channel proves no TLS identity (drop --allow / --expect-key / --identity)'
        : fromEnv !== undefined && brokers.some((broker) => !bypassesProxy(broker.host, fromEnv.noProxy ?? []))
          ? 'the environment names a SOCKS5 proxy (SOCKS_PROXY / ALL_PROXY), and a datagram channel would go around it over plain UDP, revealing your address; unset it, or list the broker in NO_PROXY'
          : undefined;
  if (problem !== undefined) throw new NattravError(ErrorCode.InvalidArgument, `--udp: ${problem}`);
}

/** The channel's facts for the 'connected' / 'accepted' events. */
function channelFields(channel: DatagramChannel): Record<string, unknown> {
  const info = channel.nattrav;
  return {
    transport: 'udp',
    path: info?.path,
    uri: info?.uri,
    local: formatEndpoint(channel.address()),
    remote: formatEndpoint(channel.remoteAddress()),
    ...(info === undefined ? {} : { public: formatEndpoint(info.publicEndpoint), setupMs: info.setupMs, attempts: info.attempts }),
  };
}

/** Reports a closed channel with its counters (`dropped.foreign`: datagrams from other hosts). */
function reportClosed(channel: DatagramChannel, why: string, out: Reporter): void {
  const { sent, received, dropped } = channel.stats;
  out.event('closed', { reason: why, sent, received, dropped }, `datagram channel closed (${why}): ${sent} sent, ${received} received, ${dropped.foreign + dropped.replayed + dropped.invalid} dropped`);
}

/** Pipes stdin lines to `channel` and its datagrams to stdout lines until EOF, the peer's close, a failure or a stop signal; returns the exit code. */
function pipeLines(channel: DatagramChannel, stop: StopSignals, out: Reporter): Promise<number> {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
    let done = false;
    const finish = (code: number, why: string): void => {
      if (done) return;
      done = true;
      process.stdout.off('error', onOutputError);
      lines.close();
      channel.close();
      reportClosed(channel, why, out);
      resolve(code);
    };
    let inputEnded = false;
    let peerEnded = false;
    channel.on('message', (msg: Buffer) => process.stdout.write(Buffer.concat([msg, Buffer.from('\n')])));
    // Our reader went away (`... --udp | head -1`): nothing received can be delivered any more, as pipe.ts does for TCP.
    function onOutputError(err: Error): void {
      finish(out.error(new Error(`cannot write to stdout: ${err.message}; the rest of the data was not delivered`)), 'stdout-error');
    }
    process.stdout.on('error', onOutputError);
    channel.on('error', (err: Error) => finish(out.error(err), 'broken'));
    // Like TCP: the peer's end stops its datagrams, ours keeps going until our input ends.
    channel.on('end', () => (peerEnded = true));
    channel.on('close', () => finish(0, inputEnded && peerEnded ? 'both sides ended' : 'closed by the peer'));
    lines.on('line', (line: string) => {
      if (done) return;
      try {
        channel.send(line);
      } catch (err) {
        finish(out.error(err), 'send failed');
      }
    });
    // End of input ends our side only: the peer's answers still arrive until it ends too.
    lines.on('close', () => {
      inputEnded = true;
      if (!done) channel.end();
    });
    stop.signal.addEventListener('abort', () => finish(stop.exitCode ?? 1, 'interrupted'), { once: true });
  });
}

/** `nattrav connect URI --udp --broker HOST:PORT`: opens a datagram channel and pipes lines. */
export async function connectDatagramCommand(uri: string, options: ConnectCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const brokers = checkTarget(uri, options.broker);
  familyOption(options);
  refuseWithUdp(options, brokers);
  const { brokerCa } = await security(options);
  const onTrace = traceReporter(out);
  let channel: DatagramChannel;
  try {
    channel = await connectDatagram({
      broker: brokers,
      uri,
      signal: stop.signal,
      ...(options.timeout === undefined ? {} : { timeoutMs: Number(options.timeout) }),
      ...(options.verbose === true ? { onTrace } : {}),
      ...(brokerCa === undefined ? {} : { brokerCa }),
      onBrokerFailed: ({ broker, error }) => out.event('broker-failed', { broker, code: error.code, message: error.message }, `broker ${broker} did not answer (${error.message}); trying the next`),
    });
  } catch (err) {
    if (stop.exitCode !== undefined) {
      reportNotConnected(out, 'interrupted');
      return stop.exitCode;
    }
    const code = out.error(err);
    reportNotConnected(out, 'not-connected');
    return code;
  }
  out.event('connected', channelFields(channel), `datagram channel to ${uri}: path ${channel.nattrav?.path ?? '?'}, ${formatEndpoint(channel.address())} -> ${formatEndpoint(channel.remoteAddress())}`);
  return pipeLines(channel, stop, out);
}

/** `nattrav listen URI --udp --broker HOST:PORT [--echo]`: takes datagram channels; the first is piped to lines (or every one echoed). */
export async function listenDatagramCommand(uri: string, options: ListenCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const brokers = checkTarget(uri, options.broker);
  refuseWithUdp(options, brokers);
  const { brokerCa } = await security(options);
  const { createServer } = await import('../peer/server.js');
  const server = createServer({
    broker: brokers,
    uri,
    // The channel is protected by the attempt secret; TCP connections are not served.
    tls: false,
    portmap: false,
    ...(brokerCa === undefined ? {} : { brokerCa }),
    ...(options.keyDir === undefined ? {} : { keyDir: options.keyDir }),
    ...(options.once === true ? { once: true } : {}),
    ...(options.keepalive === undefined ? {} : { keepaliveMs: Number(options.keepalive) }),
    ...(options.keepaliveMax === undefined ? {} : { keepaliveMaxMs: Number(options.keepaliveMax) }),
    ...(options.takeover === true ? { takeover: true } : {}),
    ...(options.dualStack === false ? { dualStack: false } : {}),
  });
  server.on('connection', (socket: { destroy(): void }) => socket.destroy());
  // Another process with our key took the URI over: the server closed; we end with its error (exit 13).
  const takenOver = new Promise<NattravError>((resolve) => server.once('takenOver', resolve));
  let first: ((channel: DatagramChannel) => void) | undefined;
  const firstChannel = new Promise<DatagramChannel>((resolve) => (first = resolve));
  server.on('datagram', (channel: DatagramChannel) => {
    out.event('accepted', channelFields(channel), `accepted a ${channel.nattrav?.path ?? '?'} datagram channel from ${formatEndpoint(channel.remoteAddress())}`);
    channel.on('error', () => undefined);
    if (options.echo === true) {
      channel.on('message', (msg: Buffer) => channel.writable && channel.send(msg));
      // Everything echoed: end our side too, which closes the channel.
      channel.on('end', () => channel.end());
      channel.on('close', () => reportClosed(channel, 'echo channel closed', out));
      return;
    }
    if (first === undefined) {
      channel.close();
      return;
    }
    first(channel);
    first = undefined;
  });
  const ended = await registerListener(server, { ...options, tls: false }, options.echo === true, takenOver, out, stop);
  if (ended !== undefined) return ended;
  const winner = await Promise.race([firstChannel, stop.wait(), takenOver]);
  if (winner instanceof NattravError) {
    await withdraw(server);
    return out.error(winner);
  }
  if (typeof winner === 'string') {
    await withdraw(server);
    reportNotConnected(out, 'interrupted');
    return stop.exitCode as number;
  }
  const code = await pipeLines(winner, stop, out);
  await withdraw(server);
  return code;
}
