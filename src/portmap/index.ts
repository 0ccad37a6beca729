/**
 * Port mapping on the local gateway: PCP (RFC 6887), NAT-PMP (RFC 6886) and UPnP IGD v1/v2,
 * behind one {@link PortMapper}. The codecs are exported for tools and tests.
 */
export { PortMapper, PORTMAP_DEFAULTS, systemPortMapperIo } from './mapper.js';
export type { GatewayInfo, GatewayProbe, MapOptions, ProbeScope, PortMapperEvent, PortMapperIo, PortMapperOptions, PortMapping } from './mapper.js';
export { PORTMAP_PROTOCOLS } from './types.js';
export type { GrantedMapping, MapRequest, MappedTransport, MappingBackend, PortMapProtocol } from './types.js';
export { DISCOVERY_BUDGET_MS, defaultGateway, parseDefaultGateway, probePmp } from './discover.js';
export type { PmpProbeResult } from './discover.js';
export type { MappingState } from './renewal.js';
