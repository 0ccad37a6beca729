/**
 * The `portmap` command: which port-mapping protocols the gateway speaks (PCP, NAT-PMP, UPnP
 * IGD), its external address, and with `--map PORT` a mapping held for this run (renewed,
 * re-added after a gateway reboot, deleted when the command is stopped). Results on stdout,
 * renewals and deletion on stderr. A gateway that speaks no protocol, or refuses the mapping,
 * is ERR_PORTMAP: exit 11.
 */
import { PortMapper, formatEndpoint, type GatewayInfo, type PortMapperEvent, type PortMapperOptions, type PortMapping } from '../index.js';
import { parseProtocols } from './option-values.js';
import { ExitCode, type Reporter } from './output.js';
import type { StopSignals } from './signals.js';

/** Options of `nattrav portmap`, as commander parses them. */
export interface PortmapCommandOptions {
  /** The gateway to ask (default: the default route's). */
  gateway?: string;
  /** Protocols to try, comma-separated. */
  protocol?: string;
  /** A local port to map for the run. */
  map?: string;
  /** Map UDP instead of TCP. */
  udp?: boolean;
  /** The lease to ask for, seconds. */
  lease?: string;
}

function gatewayLines(info: GatewayInfo): string {
  return [
    `gateway: ${info.gateway ?? 'none (no IPv4 default route)'}`,
    `protocols: ${info.protocols.length === 0 ? 'none answered' : info.protocols.join(', ')}`,
    `external address: ${info.externalAddress ?? 'unknown'}`,
  ].join('\n');
}

function mappingFields(mapping: PortMapping): Record<string, unknown> {
  return { ...mapping, external: formatEndpoint({ address: mapping.externalAddress, port: mapping.externalPort }) };
}

function mappingLine(mapping: PortMapping): string {
  const lease = mapping.lifetimeSeconds === 0 ? 'permanent lease' : `lease ${mapping.lifetimeSeconds} s`;
  return `${mapping.transport} port ${mapping.internalPort} is reachable at ${formatEndpoint({ address: mapping.externalAddress, port: mapping.externalPort })} (${mapping.protocol}, ${lease})`;
}

/** `nattrav portmap [--gateway IP] [--protocol LIST] [--map PORT [--udp] [--lease S]] [--json]`. */
export async function portmapCommand(options: PortmapCommandOptions, out: Reporter, stop: StopSignals): Promise<number> {
  const mapperOptions: PortMapperOptions = {
    ...(options.gateway === undefined ? {} : { gateway: options.gateway }),
    ...(options.protocol === undefined ? {} : { protocols: parseProtocols(options.protocol) }),
    ...(options.lease === undefined ? {} : { lifetimeSeconds: Number(options.lease) }),
  };
  const mapper = new PortMapper(mapperOptions);
  try {
    const info = await mapper.discover(stop.signal);
    let external = info.externalAddress;
    if (external === undefined && info.protocols.length > 0) external = await mapper.externalAddress(stop.signal).catch(() => undefined);
    const shown: GatewayInfo = { ...info, ...(external === undefined ? {} : { externalAddress: external }) };
    out.result('portmap', { ...shown }, gatewayLines(shown));
    if (options.map === undefined) return info.protocols.length === 0 ? exitNoProtocol(out, info) : ExitCode.Ok;
    mapper.on('event', (event: PortMapperEvent) => {
      const why = event.error === undefined ? '' : `: ${event.error.message}`;
      out.event(`portmap-${event.type}`, { ...mappingFields(event.mapping), ...(event.error === undefined ? {} : { message: event.error.message }) }, `${event.type}: ${mappingLine(event.mapping)}${why}`);
    });
    const mapping = await mapper.map(Number(options.map), { transport: options.udp === true ? 'udp' : 'tcp', signal: stop.signal });
    out.result('mapping', mappingFields(mapping), mappingLine(mapping));
    out.event('holding', { internalPort: mapping.internalPort }, 'holding the mapping until SIGINT/SIGTERM; it is deleted then');
    await stop.wait();
    return stop.exitCode as number;
  } finally {
    await mapper.close();
  }
}

function exitNoProtocol(out: Reporter, info: GatewayInfo): number {
  out.event('no-portmap', { gateway: info.gateway ?? null }, `nattrav: no port-mapping protocol answered on ${info.gateway ?? 'any gateway'} within the discovery budget`);
  return ExitCode.PortMapping;
}
