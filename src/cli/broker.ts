/** The `broker` command: parse, call the library, print. */
import { createBroker, formatEndpoint, parseHostPort, type BrokerEvent } from '../index.js';
import { ExitCode, type Reporter } from './output.js';
import { readPem } from './pem.js';
import { interrupted } from './signals.js';

/** Options of `nattrav broker`. */
export interface BrokerCommandOptions {
  listen: string;
  alternate?: string;
  relayMaxBytes?: string;
  relayMaxSeconds?: string;
  ca?: string;
  cert?: string;
  key?: string;
  open?: boolean;
  strictAmplification?: boolean;
  stunCompat?: boolean;
}

/** `nattrav broker [--listen HOST:PORT] [...]`: runs until SIGINT/SIGTERM. */
export async function brokerCommand(options: BrokerCommandOptions, out: Reporter): Promise<number> {
  const { host, port } = parseHostPort(options.listen, '--listen', 3478);
  const broker = createBroker({
    host,
    port,
    ...(options.alternate === undefined ? {} : { alternateHost: options.alternate }),
    ...(options.relayMaxBytes === undefined ? {} : { relayMaxBytes: Number(options.relayMaxBytes) }),
    ...(options.relayMaxSeconds === undefined ? {} : { relayMaxDurationMs: Number(options.relayMaxSeconds) * 1000 }),
    ...(options.ca === undefined ? {} : { ca: await readPem(options.ca, '--ca') }),
    ...(options.cert === undefined ? {} : { cert: await readPem(options.cert, '--cert') }),
    ...(options.key === undefined ? {} : { key: await readPem(options.key, '--key') }),
    ...(options.open === true ? { open: true } : {}),
    ...(options.strictAmplification === true ? { strictAmplification: true } : {}),
    ...(options.stunCompat === true ? { stunCompat: true } : {}),
  });
  broker.on('event', (event: BrokerEvent) => {
    if (event.type === 'warning') {
      out.event('warning', { message: event.message }, `\n*** nattrav broker: WARNING: ${event.message} ***\n`);
      return;
    }
    const { type, ...fields } = event;
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null && 'address' in v ? formatEndpoint(v as { address: string; port: number }) : String(v)}`)
      .join(' ');
    out.event(type, JSON.parse(JSON.stringify(fields)) as Record<string, unknown>, `broker: ${type} ${text}`);
  });
  broker.on('error', (err: Error) => out.event('warning', { message: err.message }, `broker: warning: ${err.message}`));
  await broker.listen();
  await interrupted();
  await broker.close();
  return ExitCode.Ok;
}

