/**
 * The {@link PortMapper}: one interface over PCP, NAT-PMP and UPnP IGD. It discovers which
 * protocols the gateway speaks (within {@link DISCOVERY_BUDGET_MS}), maps a port with a lease
 * through the best one (falling back to the next on failure), renews at half the lease after
 * checking the gateway still holds the mapping (re-adding it after a gateway reboot, reported
 * as `readded`), and deletes every mapping on close. Time and the protocol clients are
 * injected ({@link PortMapperIo}) so the schedule is tested on a fake clock.
 */
import { EventEmitter } from 'node:events';
import { debuglog } from 'node:util';
import { ErrorCode, NattravError } from '../errors.js';
import { systemClock, type Clock, type TimerHandle } from '../common/clock.js';
import { DISCOVERY_BUDGET_MS, defaultGateway, probePmp, type PmpProbeResult } from './discover.js';
import { openGatewayLink } from './link.js';
import { PmpClient } from './pmp-client.js';
import { nextStep, renewAtMs, retryAtMs, type MappingState } from './renewal.js';
import { UpnpClient, searchIgd } from './upnp.js';
import { PORTMAP_PROTOCOLS, type GrantedMapping, type MapRequest, type MappedTransport, type MappingBackend, type PortMapProtocol } from './types.js';

/** `NODE_DEBUG=nattrav:portmap`: what the gateway answered, and why a mapping or renewal failed. */
const debug = debuglog('nattrav:portmap');

/** What {@link PortMapper.discover} found. */
export interface GatewayInfo {
  /** The gateway asked (the default route's, unless given), or undefined when there is none. */
  readonly gateway: string | undefined;
  /** The protocols that answered within the budget, most preferred first. */
  readonly protocols: PortMapProtocol[];
  /** The external address, when a protocol told it. */
  readonly externalAddress?: string;
}

/** A mapping the mapper holds. */
export interface PortMapping {
  /** The protocol that made it. */
  readonly protocol: PortMapProtocol;
  /** `tcp` or `udp`. */
  readonly transport: MappedTransport;
  /** Our local port. */
  readonly internalPort: number;
  /** The gateway's external address. */
  readonly externalAddress: string;
  /** The external port forwarded to us. */
  readonly externalPort: number;
  /** The lease granted, seconds (0: permanent). */
  readonly lifetimeSeconds: number;
  /** Where it is in its life. */
  readonly state: MappingState;
}

/** Events of a {@link PortMapper} (`'event'`). */
export interface PortMapperEvent {
  /** mapped: made; renewed: lease extended; readded: the gateway had lost it and it was made again; renew-failed: will retry; deleted. */
  readonly type: 'mapped' | 'renewed' | 'readded' | 'renew-failed' | 'deleted';
  /** The mapping, as it is after the event. */
  readonly mapping: PortMapping;
  /** Why, for renew-failed. */
  readonly error?: Error;
}

/** The I/O a mapper uses; tests pass fakes. */
export interface PortMapperIo {
  /** The gateway when none is given (default: the default route's). */
  defaultGateway(): Promise<string | undefined>;
  /** Probes the gateway; resolves within `budgetMs` with what answered and a backend factory per protocol. */
  probe(gateway: string, budgetMs: number, scope: ProbeScope, signal?: AbortSignal): Promise<GatewayProbe>;
}

/** What a probe may send. */
export interface ProbeScope {
  /** The protocols wanted: NAT-PMP/PCP requests go out only for `pcp`/`nat-pmp`, SSDP only for `upnp`. */
  readonly protocols: readonly PortMapProtocol[];
  /** Also search by SSDP multicast on the LAN (not only unicast to the gateway): when the gateway was not given explicitly. */
  readonly multicast: boolean;
}

/** The result of {@link PortMapperIo.probe}. */
export interface GatewayProbe {
  /** What answered. */
  readonly answered: GatewayInfo;
  /** A client of `protocol` on the gateway (`signal` aborts its set-up: UPnP fetches the device description). */
  open(protocol: PortMapProtocol, signal?: AbortSignal): Promise<MappingBackend>;
  /** Releases what the probe holds and no client took over. */
  close(): void;
}

const NO_GATEWAY: GatewayProbe = {
  answered: { gateway: undefined, protocols: [] },
  open: () => Promise.reject(new NattravError(ErrorCode.PortMapping, 'no IPv4 default gateway to ask for a port mapping')),
  close: () => undefined,
};

/** Options of {@link createPortMapper}. */
export interface PortMapperOptions {
  /** The gateway to ask. @default the IPv4 default route's gateway */
  gateway?: string;
  /** The protocols to try, in order of preference. @default ['pcp', 'nat-pmp', 'upnp'] */
  protocols?: readonly PortMapProtocol[];
  /** How long discovery waits for answers, ms. @default 250 */
  discoveryBudgetMs?: number;
  /** The lease asked for, seconds (the gateway may change it). @default 7200 (RFC 6886 §3.3) */
  lifetimeSeconds?: number;
  /** @default systemClock */
  clock?: Clock;
  /** @default real sockets */
  io?: PortMapperIo;
}

/** Defaults of {@link PortMapperOptions}. */
export const PORTMAP_DEFAULTS = { protocols: PORTMAP_PROTOCOLS, discoveryBudgetMs: DISCOVERY_BUDGET_MS, lifetimeSeconds: 7200 } as const;

/** What map() is asked. */
export interface MapOptions {
  /** @default 'tcp' */
  transport?: MappedTransport;
  /** The external port wanted; 0: any (the gateway usually gives the internal port when free). @default 0 */
  externalPort?: number;
  /** Overrides {@link PortMapperOptions.lifetimeSeconds}. */
  lifetimeSeconds?: number;
  /** Aborts the request (the mapping is then not made). */
  signal?: AbortSignal;
}

interface Held {
  request: MapRequest;
  backend: MappingBackend;
  granted: GrantedMapping;
  grantedAtMs: number;
  state: MappingState;
  failures: number;
  timer: TimerHandle | undefined;
}

/** The real I/O: a UDP link to the gateway for PCP/NAT-PMP, SSDP for UPnP. */
export const systemPortMapperIo: PortMapperIo = {
  defaultGateway,
  async probe(gateway, budgetMs, scope, signal) {
    const link = await openGatewayLink(gateway);
    const noPmp = { pcp: false, natPmp: false } as const;
    const wantsPmp = scope.protocols.includes('pcp') || scope.protocols.includes('nat-pmp');
    const [pmp, igd] = await Promise.all([
      wantsPmp ? probePmp(link, systemClock, budgetMs) : Promise.resolve<PmpProbeResult>(noPmp),
      scope.protocols.includes('upnp') ? searchIgd({ budgetMs, gateway, multicast: scope.multicast, signal }) : Promise.resolve(undefined),
    ]);
    const protocols: PortMapProtocol[] = [...(pmp.pcp ? ['pcp' as const] : []), ...(pmp.natPmp ? ['nat-pmp' as const] : []), ...(igd === undefined ? [] : ['upnp' as const])];
    let linkUsed = false;
    return {
      close: () => {
        if (!linkUsed) link.close();
      },
      answered: { gateway, protocols, ...(pmp.externalAddress === undefined ? {} : { externalAddress: pmp.externalAddress }) },
      async open(protocol, openSignal) {
        if (protocol === 'upnp') {
          if (igd === undefined) throw new NattravError(ErrorCode.PortMapping, `UPnP: no IGD answered on ${gateway}`, { address: gateway });
          return UpnpClient.open(igd.location, openSignal);
        }
        const own = linkUsed ? await openGatewayLink(gateway) : link;
        linkUsed = true;
        return new PmpClient({ link: own, gateway, protocol });
      },
    };
  },
};

/** Port mapping on the gateway; see the module comment. Events: `'event'` ({@link PortMapperEvent}). */
export class PortMapper extends EventEmitter {
  readonly #clock: Clock;
  readonly #io: PortMapperIo;
  readonly #options: PortMapperOptions;
  readonly #held = new Set<Held>();
  #probe: Promise<GatewayProbe> | undefined;
  #backends = new Map<PortMapProtocol, Promise<MappingBackend>>();
  #closed = false;

  constructor(options: PortMapperOptions = {}) {
    super();
    for (const p of options.protocols ?? []) {
      if (!PORTMAP_PROTOCOLS.includes(p)) throw new NattravError(ErrorCode.InvalidArgument, `unknown port-mapping protocol "${String(p)}"; use ${PORTMAP_PROTOCOLS.join(', ')}`);
    }
    if (options.lifetimeSeconds !== undefined && (!Number.isInteger(options.lifetimeSeconds) || options.lifetimeSeconds < 1)) {
      throw new NattravError(ErrorCode.InvalidArgument, `lifetimeSeconds must be a positive whole number of seconds, got ${options.lifetimeSeconds}`);
    }
    this.#options = { ...options };
    this.#clock = options.clock ?? systemClock;
    this.#io = options.io ?? systemPortMapperIo;
  }

  /** Probes once per mapper; a failed probe is tried again by the next call. */
  #probeOnce(signal?: AbortSignal): Promise<GatewayProbe> {
    if (this.#probe === undefined) {
      const probe = (async () => {
        const gateway = this.#options.gateway ?? (await this.#io.defaultGateway());
        if (gateway === undefined) return NO_GATEWAY;
        const scope = { protocols: this.#options.protocols ?? PORTMAP_DEFAULTS.protocols, multicast: this.#options.gateway === undefined };
        const probe = await this.#io.probe(gateway, this.#options.discoveryBudgetMs ?? DISCOVERY_BUDGET_MS, scope, signal);
        debug('gateway %s answered %s (asked: %s)', gateway, probe.answered.protocols.join(',') || 'nothing', scope.protocols.join(','));
        return probe;
      })();
      this.#probe = probe;
      probe.catch(() => {
        if (this.#probe === probe) this.#probe = undefined;
      });
    }
    return this.#probe;
  }

  /** Which of the wanted protocols the gateway speaks, and its external address if one told it. */
  async discover(signal?: AbortSignal): Promise<GatewayInfo> {
    this.#assertOpen();
    const { answered } = await this.#probeOnce(signal);
    const wanted = this.#options.protocols ?? PORTMAP_DEFAULTS.protocols;
    return { ...answered, protocols: wanted.filter((p) => answered.protocols.includes(p)) };
  }

  async #backend(protocol: PortMapProtocol, signal?: AbortSignal): Promise<MappingBackend> {
    let backend = this.#backends.get(protocol);
    if (backend === undefined) {
      const { open } = await this.#probeOnce(signal);
      backend = open(protocol, signal);
      this.#backends.set(protocol, backend);
      backend.catch(() => this.#backends.delete(protocol));
    }
    return backend;
  }

  /** The external address, from the most preferred protocol that tells it. */
  async externalAddress(signal?: AbortSignal): Promise<string> {
    const info = await this.discover(signal);
    if (info.externalAddress !== undefined) return info.externalAddress;
    const first = info.protocols[0];
    if (first === undefined) throw new NattravError(ErrorCode.PortMapping, `no port-mapping protocol answered on the gateway ${info.gateway ?? '(none)'}`);
    return (await this.#backend(first, signal)).externalAddress(signal);
  }

  /**
   * Maps `internalPort` through the most preferred protocol that works, and keeps the mapping
   * renewed until {@link PortMapper.unmap} or {@link PortMapper.close}. Throws the last
   * protocol's error when none could map it, ERR_PORTMAP when none answered.
   */
  async map(internalPort: number, options: MapOptions = {}): Promise<PortMapping> {
    this.#assertOpen();
    if (!Number.isInteger(internalPort) || internalPort < 1 || internalPort > 0xffff) throw new NattravError(ErrorCode.InvalidArgument, `the port to map must be 1..65535, got ${internalPort}`);
    const request: MapRequest = {
      transport: options.transport ?? 'tcp',
      internalPort,
      suggestedExternalPort: options.externalPort ?? 0,
      lifetimeSeconds: options.lifetimeSeconds ?? this.#options.lifetimeSeconds ?? PORTMAP_DEFAULTS.lifetimeSeconds,
    };
    const info = await this.discover(options.signal);
    if (info.protocols.length === 0) throw new NattravError(ErrorCode.PortMapping, `no port-mapping protocol answered on the gateway ${info.gateway ?? '(none)'}`, info.gateway === undefined ? {} : { address: info.gateway });
    const errors: Array<{ protocol: PortMapProtocol; error: unknown }> = [];
    for (const protocol of info.protocols) {
      try {
        const backend = await this.#backend(protocol, options.signal);
        const granted = await backend.add(request, undefined, options.signal);
        if (this.#closed) {
          await backend.remove(request, granted).catch(() => undefined);
          this.#assertOpen();
        }
        const held: Held = { request, backend, granted, grantedAtMs: this.#clock.now(), state: 'active', failures: 0, timer: undefined };
        this.#held.add(held);
        this.#schedule(held, renewAtMs({ lifetimeSeconds: granted.lifetimeSeconds, grantedAtMs: held.grantedAtMs }));
        this.#emit('mapped', held);
        return view(held);
      } catch (err) {
        debug('map %s/%d via %s failed: %s', request.transport, internalPort, protocol, err instanceof Error ? err.message : String(err));
        if (this.#closed) throw err;
        errors.push({ protocol, error: err });
      }
    }
    if (errors.length === 1) throw errors[0]?.error;
    const why = errors.map((e) => `${e.protocol}: ${e.error instanceof Error ? e.error.message : String(e.error)}`).join('; ');
    throw new NattravError(ErrorCode.PortMapping, `no protocol could map ${request.transport} port ${internalPort} on ${info.gateway ?? 'the gateway'} (${why})`, { cause: errors.at(-1)?.error, ...(info.gateway === undefined ? {} : { address: info.gateway }) });
  }

  /** The mappings held now. */
  get mappings(): PortMapping[] {
    return [...this.#held].map(view);
  }

  #schedule(held: Held, atMs: number): void {
    this.#clock.clearTimeout(held.timer);
    held.timer = this.#clock.setTimeout(() => void this.#renew(held), Math.max(0, atMs - this.#clock.now()));
  }

  /** 1. Check the gateway still holds it. 2. Renew (or re-add) with the same nonce/port. 3. Schedule the next. */
  async #renew(held: Held): Promise<void> {
    held.state = nextStep(held.state, 'timer');
    if (held.state === 'closed') return;
    try {
      const stillThere = await held.backend.exists(held.request, held.granted);
      const granted = await held.backend.add(held.request, held.granted);
      if (closed(held)) {
        // Deleted while this renewal was on the wire: the renewal may have made it again.
        await held.backend.remove(held.request, granted).catch(() => undefined);
        return;
      }
      held.granted = granted;
      held.grantedAtMs = this.#clock.now();
      held.failures = 0;
      held.state = nextStep(held.state, 'renewed');
      this.#schedule(held, renewAtMs({ lifetimeSeconds: granted.lifetimeSeconds, grantedAtMs: held.grantedAtMs }));
      this.#emit(stillThere && !granted.gatewayReset ? 'renewed' : 'readded', held);
    } catch (err) {
      if (closed(held)) return;
      held.failures++;
      held.state = nextStep(held.state, 'failed');
      this.#schedule(held, retryAtMs({ lifetimeSeconds: held.granted.lifetimeSeconds, grantedAtMs: held.grantedAtMs }, held.failures, this.#clock.now()));
      debug('renewing %s/%d via %s failed (%d in a row): %s', held.request.transport, held.request.internalPort, held.backend.protocol, held.failures, err instanceof Error ? err.message : String(err));
      this.#emit('renew-failed', held, err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Deletes one mapping on the gateway and stops renewing it. */
  async unmap(mapping: PortMapping, signal?: AbortSignal): Promise<void> {
    const held = [...this.#held].find((h) => h.request.internalPort === mapping.internalPort && h.request.transport === mapping.transport);
    if (held === undefined) return;
    await this.#delete(held, signal);
  }

  async #delete(held: Held, signal?: AbortSignal): Promise<void> {
    held.state = nextStep(held.state, 'close');
    this.#clock.clearTimeout(held.timer);
    this.#held.delete(held);
    await held.backend.remove(held.request, held.granted, signal);
    this.#emit('deleted', held);
  }

  /** Deletes every mapping (best effort, each bounded by its request limit), then closes the clients. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#held].map((held) => this.#delete(held)));
    for (const backend of await Promise.allSettled(this.#backends.values())) {
      if (backend.status === 'fulfilled') backend.value.close();
    }
    const probe = await this.#probe?.catch(() => undefined);
    probe?.close();
  }

  /** `await using mapper = new PortMapper()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #emit(type: PortMapperEvent['type'], held: Held, error?: Error): void {
    const event: PortMapperEvent = { type, mapping: view(held), ...(error === undefined ? {} : { error }) };
    this.emit('event', event);
  }

  #assertOpen(): void {
    if (this.#closed) throw new NattravError(ErrorCode.Closed, 'the port mapper is closed');
  }
}

/** Read through a function: the state may change while a renewal awaits. */
function closed(held: Held): boolean {
  return held.state === 'closed';
}

function view(held: Held): PortMapping {
  return {
    protocol: held.backend.protocol,
    transport: held.request.transport,
    internalPort: held.request.internalPort,
    externalAddress: held.granted.externalAddress,
    externalPort: held.granted.externalPort,
    lifetimeSeconds: held.granted.lifetimeSeconds,
    state: held.state,
  };
}
