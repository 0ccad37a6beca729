/**
 * Types shared by the port-mapping protocols and the {@link PortMapper} above them.
 */

/** The protocols a gateway may speak to open a port for us. */
export type PortMapProtocol = 'pcp' | 'nat-pmp' | 'upnp';

/** Every {@link PortMapProtocol}, in the order they are preferred. */
export const PORTMAP_PROTOCOLS: readonly PortMapProtocol[] = ['pcp', 'nat-pmp', 'upnp'];

/** The transport protocol of a mapping. */
export type MappedTransport = 'tcp' | 'udp';

/** What a backend is asked to map. */
export interface MapRequest {
  /** `tcp` or `udp`. */
  readonly transport: MappedTransport;
  /** Our local port the gateway forwards to. */
  readonly internalPort: number;
  /** The external port wanted (0: any); a renewal asks for the one it holds. */
  readonly suggestedExternalPort: number;
  /** Requested lease in seconds (> 0). */
  readonly lifetimeSeconds: number;
}

/** What the gateway granted. */
export interface GrantedMapping {
  /** The gateway's external (public) IPv4 address. */
  readonly externalAddress: string;
  /** The external port the gateway forwards. */
  readonly externalPort: number;
  /** Granted lease in seconds (the gateway may shorten or lengthen the request). */
  readonly lifetimeSeconds: number;
  /**
   * True when the answer showed the gateway had lost its mapping state since our last
   * exchange with it (NAT-PMP/PCP epoch going backwards): the mapping was made anew.
   */
  readonly gatewayReset: boolean;
}

/**
 * One protocol's client for one gateway: what the {@link PortMapper} drives. Every method
 * has its own deadline; the caller's signal aborts it.
 */
export interface MappingBackend {
  /** Which protocol this speaks (for PCP it may change to `nat-pmp` after a version fallback). */
  readonly protocol: PortMapProtocol;
  /** The gateway's address (for reports). */
  readonly gateway: string;
  /** The gateway's external IPv4 address. */
  externalAddress(signal?: AbortSignal): Promise<string>;
  /** Creates or renews a mapping; `previous` is the grant being renewed, if any. */
  add(request: MapRequest, previous: GrantedMapping | undefined, signal?: AbortSignal): Promise<GrantedMapping>;
  /** False when the gateway no longer holds the mapping (it rebooted, or it was removed). */
  exists(request: MapRequest, granted: GrantedMapping, signal?: AbortSignal): Promise<boolean>;
  /** Deletes the mapping on the gateway. */
  remove(request: MapRequest, granted: GrantedMapping, signal?: AbortSignal): Promise<void>;
  /** Releases sockets; idempotent. */
  close(): void;
}
