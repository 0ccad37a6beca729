/**
 * A recipient's port mapping (path `portmap`): a TCP listener on a port of its own, a mapping
 * of that port on the gateway (PortMapper: PCP, NAT-PMP or UPnP IGD; renewed, re-added after a
 * gateway reboot), and the mapped endpoint to register. Inbound connections on the listener go
 * to the attempts that wait for one (strategies/portmap.ts); the attempt's Hello and TLS then
 * authenticate them as on every path. It is an optimisation: every failure is a debug line
 * (`NODE_DEBUG=nattrav:portmap`) and the endpoint stays undefined, so today's strategies run.
 *
 * Network rule: nothing is sent to a gateway while the broker we registered with is a loopback
 * address (tests, a broker on this host), unless the gateway is given explicitly
 * ({@link portmapAllowed}).
 */
import { EventEmitter } from 'node:events';
import { createServer, isIP, type Server, type Socket } from 'node:net';
import { debuglog } from 'node:util';
import type { Clock } from '../common/clock.js';
import { systemClock } from '../common/clock.js';
import { PortMapper, type PortMapperEvent, type PortMapperIo, type PortMapping } from '../portmap/mapper.js';
import { PORTMAP_PROTOCOLS, type PortMapProtocol } from '../portmap/types.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { TransportAddress } from '../wire/types.js';
import type { InboundClaim, MappedInbound } from './strategies/types.js';

const debug = debuglog('nattrav:portmap');

/**
 * How long the agent's discovery waits for the gateway's answers, in ms. The agent runs in the
 * background after registering, so a slow gateway delays no connection; 250 ms (what a command
 * that waits on the answer allows) lost a busy miniupnpd's SSDP answer in the lab.
 */
export const AGENT_DISCOVERY_BUDGET_MS = 2_000;
/** After a failed discovery or mapping, the agent asks again after this long, doubling up to {@link AGENT_RETRY_MAX_MS}. */
export const AGENT_RETRY_INITIAL_MS = 60_000;
/** The longest wait between two tries of the agent (a gateway that speaks nothing is asked hourly). */
export const AGENT_RETRY_MAX_MS = 3_600_000;

/** Port-mapping settings of a recipient (`ServerOptions.portmap`). */
export interface PortmapSettings {
  /** The gateway to ask (also lifts the loopback rule). @default the IPv4 default route's gateway */
  readonly gateway?: string;
  /** The protocols to try, in order. @default ['pcp', 'nat-pmp', 'upnp'] */
  readonly protocols?: readonly PortMapProtocol[];
  /** The lease asked for, in seconds (renewed at half of it). @default 7200 */
  readonly lifetimeSeconds?: number;
  /** The gateway I/O (tests pass fakes). @default real sockets */
  readonly io?: PortMapperIo;
  /** How long discovery waits for the gateway's answers, ms. @default {@link AGENT_DISCOVERY_BUDGET_MS} */
  readonly discoveryBudgetMs?: number;
  /** @default the system clock */
  readonly clock?: Clock;
}

/**
 * `ServerOptions.portmap` checked: false (off), or the settings (true and undefined: defaults).
 * Throws ERR_INVALID_ARGUMENT naming what is wrong.
 */
export function checkPortmapOption(value: unknown): PortmapSettings | false {
  if (value === false) return false;
  if (value === undefined || value === true) return {};
  const bad = (what: string): NattravError => new NattravError(ErrorCode.InvalidArgument, `portmap: ${what}`);
  if (value === null || typeof value !== 'object') throw bad(`expected true, false or { gateway, protocols, lifetimeSeconds }, got ${String(value)}`);
  const settings = value as PortmapSettings;
  if (settings.gateway !== undefined && (typeof settings.gateway !== 'string' || isIP(settings.gateway) !== 4)) {
    throw bad(`gateway must be an IPv4 address, got ${JSON.stringify(settings.gateway)}`);
  }
  const protocols: unknown = settings.protocols;
  if (protocols !== undefined && (!Array.isArray(protocols) || protocols.length === 0 || protocols.some((p) => !PORTMAP_PROTOCOLS.includes(p as PortMapProtocol)))) {
    throw bad(`protocols must be a non-empty list of ${PORTMAP_PROTOCOLS.join(', ')}, got ${JSON.stringify(protocols)}`);
  }
  const lifetime = settings.lifetimeSeconds;
  if (lifetime !== undefined && (typeof lifetime !== 'number' || !Number.isInteger(lifetime) || lifetime < 1)) {
    throw bad(`lifetimeSeconds must be a positive whole number of seconds, got ${String(lifetime)}`);
  }
  return settings;
}

/** Whether a broker address is loopback (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const plain = host.replace(/^\[|\]$/g, '').replace(/^::ffff:/i, '');
  if (plain === 'localhost') return true;
  if (isIP(plain) === 4) return plain.startsWith('127.');
  return isIP(plain) === 6 && /^(0*:)*:?0*1$/.test(plain);
}

/**
 * The network rule: port mapping runs unless turned off, and never towards the machine's
 * gateway while the broker we registered with is on loopback, unless a gateway is given.
 */
export function portmapAllowed(settings: PortmapSettings | false, brokerAddress: string): boolean {
  if (settings === false) return false;
  return settings.gateway !== undefined || !isLoopbackHost(brokerAddress);
}

/**
 * Emits 'change' (the endpoint to register changed: mapped, re-added, moved, or gone) and
 * 'event' (PortMapperEvent, for logs).
 */
export class PortmapAgent extends EventEmitter implements MappedInbound {
  readonly #settings: PortmapSettings;
  readonly #clock: Clock;
  readonly #claims = new Set<InboundClaim>();
  #server: Server | undefined;
  #mapper: PortMapper | undefined;
  #mapping: PortMapping | undefined;
  /** When the lease of {@link #mapping} runs out, on the clock. */
  #validUntil = 0;
  #started = false;
  #closed: Promise<void> | undefined;
  /** The wait before the next try after a failure, and its timer. */
  #retryMs = AGENT_RETRY_INITIAL_MS;
  #retry: ReturnType<Clock['setTimeout']> | undefined;

  constructor(settings: PortmapSettings) {
    super();
    this.#settings = settings;
    this.#clock = settings.clock ?? systemClock;
  }

  /** The mapped endpoint to register, while its lease lasts. */
  get endpoint(): TransportAddress | undefined {
    const mapping = this.#mapping;
    if (mapping === undefined || this.#clock.now() >= this.#validUntil) return undefined;
    return { family: 'IPv4', address: mapping.externalAddress, port: mapping.externalPort };
  }

  /** The mapping held now, if any. */
  get mapping(): PortMapping | undefined {
    return this.#mapping;
  }

  /**
   * Listens and maps, in the background; never rejects (failures are debug lines). Once; a
   * failed discovery or mapping is tried again later ({@link AGENT_RETRY_INITIAL_MS}, doubling).
   */
  async start(): Promise<void> {
    if (this.#started || this.#closed !== undefined) return;
    this.#started = true;
    await this.#try();
  }

  async #try(): Promise<void> {
    this.#retry = undefined;
    try {
      const server = this.#server ?? (await listen());
      if (this.#closed !== undefined) {
        server.close();
        return;
      }
      if (this.#server === undefined) {
        this.#server = server;
        server.on('connection', (socket) => this.#offer(socket));
      }
      const port = (server.address() as { port: number }).port;
      const mapper = new PortMapper({
        ...(this.#settings.gateway === undefined ? {} : { gateway: this.#settings.gateway }),
        ...(this.#settings.protocols === undefined ? {} : { protocols: this.#settings.protocols }),
        ...(this.#settings.lifetimeSeconds === undefined ? {} : { lifetimeSeconds: this.#settings.lifetimeSeconds }),
        ...(this.#settings.io === undefined ? {} : { io: this.#settings.io }),
        discoveryBudgetMs: this.#settings.discoveryBudgetMs ?? AGENT_DISCOVERY_BUDGET_MS,
        clock: this.#clock,
      });
      this.#mapper = mapper;
      mapper.on('event', (event: PortMapperEvent) => this.#onEvent(event));
      await mapper.map(port, { transport: 'tcp' });
      this.#retryMs = AGENT_RETRY_INITIAL_MS;
    } catch (err) {
      if (this.#closed !== undefined) return;
      debug('no port mapping, today\'s strategies run; asking again in %d s: %s', this.#retryMs / 1000, err instanceof Error ? err.message : String(err));
      const failed = this.#mapper;
      this.#mapper = undefined;
      await failed?.close().catch(() => undefined);
      if (this.#closed !== undefined) return;
      this.#retry = this.#clock.setTimeout(() => void this.#try(), this.#retryMs);
      this.#retryMs = Math.min(this.#retryMs * 2, AGENT_RETRY_MAX_MS);
    }
  }

  /** Offers inbound connections to `claim` until the returned function is called. */
  claim(claim: InboundClaim): () => void {
    this.#claims.add(claim);
    return () => this.#claims.delete(claim);
  }

  /** Deletes the mapping on the gateway and stops listening. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      if (this.#retry !== undefined) this.#clock.clearTimeout(this.#retry);
      this.#server?.close();
      this.#claims.clear();
      await this.#mapper?.close().catch((err: unknown) => debug('deleting the mapping failed: %s', err instanceof Error ? err.message : String(err)));
    })();
    return this.#closed;
  }

  #onEvent(event: PortMapperEvent): void {
    this.emit('event', event);
    if (this.#closed !== undefined) return;
    const before = this.endpoint;
    if (event.type === 'mapped' || event.type === 'renewed' || event.type === 'readded') {
      this.#mapping = event.mapping;
      this.#validUntil = this.#clock.now() + event.mapping.lifetimeSeconds * 1000;
      if (event.mapping.lifetimeSeconds === 0) this.#validUntil = Number.POSITIVE_INFINITY;
    } else if (event.type === 'deleted') {
      this.#mapping = undefined;
    } else {
      debug('renewing the mapping failed (advertised until its lease ends): %s', event.error?.message ?? 'unknown');
    }
    const after = this.endpoint;
    if (event.type === 'readded' || !sameEndpoint(before, after)) this.emit('change', after);
  }

  /** An inbound connection: the first attempt that claims it takes it; nobody's is closed. */
  #offer(socket: Socket): void {
    socket.on('error', () => undefined);
    for (const claim of this.#claims) {
      if (claim(socket)) return;
    }
    debug('inbound connection from %s:%d on the mapped port matches no attempt', socket.remoteAddress, socket.remotePort);
    socket.destroy();
  }
}

function sameEndpoint(a: TransportAddress | undefined, b: TransportAddress | undefined): boolean {
  return a?.address === b?.address && a?.port === b?.port;
}

/** A listener on an ephemeral IPv4 port of every interface (the gateway forwards to our LAN address). */
function listen(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true });
    server.once('error', reject);
    server.listen({ host: '0.0.0.0', port: 0 }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
