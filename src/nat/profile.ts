/**
 * What NAT behaviour discovery (RFC 5780) found out about the path to a
 * server, in RFC 4787 terms, and the classic (RFC 3489) name for it.
 */

/** RFC 4787 §4.1 (mapping) and §5 (filtering) behaviours; RFC 5780 §4.3/§4.4 tell them apart. */
export type Behaviour = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent';

/**
 * How the NAT picks the public port of a new mapping (RFC 4787 §4.2), judged
 * from several fresh local sockets: the local port kept, the previous mapping's
 * port plus a fixed `step`, or anything else.
 */
export type PortAllocation = { kind: 'preserving' } | { kind: 'sequential'; step: number } | { kind: 'random' };

/** TCP behaviour, from TCP Binding requests sent over connections from one local port. */
export interface TcpProfile {
  /** No TCP connection to the server could be made. */
  blocked: boolean;
  /** Mapping behaviour (RFC 5382 §4.1), when it could be measured. */
  mapping?: Behaviour;
  /** Port allocation of new TCP mappings, when it could be measured. */
  allocation?: PortAllocation;
}

/** The result of {@link discoverNat}. Absent fields could not be measured (the reason is in `notes`). */
export interface NatProfile {
  /** No UDP Binding response came back at all. */
  udpBlocked: boolean;
  /** The mapped address equals a local address and port: no NAT in the way. */
  isPublic: boolean;
  /** The public (server-reflexive) IP address. */
  publicAddress?: string;
  /** UDP mapping behaviour (RFC 5780 §4.3). */
  mapping?: Behaviour;
  /** UDP filtering behaviour (RFC 5780 §4.4). */
  filtering?: Behaviour;
  /** UDP port allocation of new mappings. */
  allocation?: PortAllocation;
  /** Whether a packet to our own public endpoint comes back to us (RFC 5780 §4.5). */
  hairpinning?: boolean;
  /** TCP behaviour, unless TCP probing was switched off. */
  tcp?: TcpProfile;
  /** Why a field is missing, one line each (for example a server without OTHER-ADDRESS). */
  notes?: string[];
}

/** The classic names of NAT types (RFC 3489 §5), plus the nattrav lab's sequential symmetric. */
export type ClassicNatName =
  | 'UDP blocked'
  | 'open internet'
  | 'full cone'
  | 'restricted cone'
  | 'port-restricted cone'
  | 'symmetric'
  | 'symmetric sequential'
  | 'unknown';

/**
 * The classic name for a profile: endpoint-independent mapping is a cone, named
 * by its filtering; any other mapping is symmetric (sequential when its port
 * allocation is predictable).
 */
export function describeNat(profile: NatProfile): ClassicNatName {
  if (profile.udpBlocked) return 'UDP blocked';
  if (profile.isPublic) return 'open internet';
  if (profile.mapping === undefined) return 'unknown';
  if (profile.mapping !== 'endpoint-independent') {
    return profile.allocation?.kind === 'sequential' ? 'symmetric sequential' : 'symmetric';
  }
  switch (profile.filtering) {
    case 'endpoint-independent':
      return 'full cone';
    case 'address-dependent':
      return 'restricted cone';
    case 'address-and-port-dependent':
      return 'port-restricted cone';
    default:
      return 'unknown';
  }
}

/** "sequential (step 1)", "preserving", "random". */
export function formatAllocation(allocation: PortAllocation): string {
  return allocation.kind === 'sequential' ? `sequential (step ${allocation.step})` : allocation.kind;
}
