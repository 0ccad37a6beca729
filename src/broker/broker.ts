/**
 * The connection broker: one process, UDP and TCP on the same port.
 * UDP carries STUN Binding and registrations (see udp.ts); TCP carries Binding
 * and the exchanges of each connection attempt (see rendezvous.ts).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { Server, Socket } from 'node:net';
import { ErrorCode, NattravError } from '../errors.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import type { StunMessage } from '../wire/message.js';
import type { TransportAddress } from '../wire/types.js';
import { amplificationMode, resolveBrokerOptions, type BrokerOptions, type ResolvedBrokerOptions } from './options.js';
import { MemoryRegistry } from './registry/memory.js';
import type { Registration, Registry } from './registry/registry.js';
import { udpRequestInfo, type UdpRequestInfo } from './amplification.js';
import { buildAuth } from './auth.js';
import type { BrokerEvent } from './events.js';
import type { RegisterAuth } from './register.js';
import { RelayHub } from './relay.js';
import { Rendezvous } from './rendezvous.js';
import { handleDatagram, KNOWN_ATTRIBUTES } from './udp.js';
import { bindListeners, closeListeners, udp6Destination } from './listeners.js';
import { BrokerGuard } from './guard.js';
import { resolveLimits } from './limits.js';
import { answerBinding, socketAddress, socketKey, type Rfc5780Layout, type ServerSocketId } from './rfc5780.js';
import { NOT_PLAIN, PlainBindingAnswers } from './binding-fast.js';
import { TcpService } from './tcp.js';
import { ClusterRouting } from './cluster.js';
import { InstanceChecks } from './instances.js';
import { openWebSocketListeners, type WebSocketEndpoint, type WebSocketListener } from './websocket.js';
import { toTransportAddress } from '../common/endpoint.js';
import { WorkerRouter, workerBrokerId, type RouteCounts } from './workers/worker-router.js';
import { WorkerRegistry } from './workers/ipc-stores.js';
import type { AnswerSource } from './rendezvous.js';
import { otherFamilyBroker, type AddressFamilyName } from './family.js';

export type { BrokerEvent } from './events.js';

/** One endpoint the broker listens on, UDP and TCP (see {@link Broker.addresses}). */
export interface BrokerEndpoint {
  readonly address: string;
  readonly port: number;
  /** RFC 5780 §3: on the alternate address. */
  readonly alternateIp: boolean;
  /** RFC 5780 §3: on the alternate port. */
  readonly alternatePort: boolean;
}

/** Said at start in open mode, as loudly as a log line can. */
export const OPEN_MODE_WARNING =
  'OPEN MODE: registrations are NOT authenticated; anyone can register or take over any URI. Use only on a closed network.';

/** A running (or not yet started) broker. Emits 'event' ({@link BrokerEvent}), 'listening', 'error', 'close'. */
export class Broker extends EventEmitter {
  readonly #options: ResolvedBrokerOptions;
  readonly #registry: Registry;
  readonly #ownsRegistry: boolean;
  readonly #rendezvous: Rendezvous;
  readonly #relay: RelayHub;
  /** Rate limits, caps and anti-amplification (guard.ts). */
  readonly #guard: BrokerGuard;
  readonly #auth: RegisterAuth;
  /** Checks of a URI's holder before another instance of its key takes it (instances.ts). */
  readonly #instances: InstanceChecks;
  /** Accepting and serving TCP, STARTTLS, the connections' deadlines, control connections (tcp.ts). */
  readonly #tcpService: TcpService;
  /** Connection requests to recipients registered through other brokers of a cluster (cluster.ts); undefined without a bus. */
  readonly #cluster: ClusterRouting | undefined;
  /** Answers to plain UDP Binding requests, learnt from the full path (binding-fast.ts). */
  readonly #plainBindings = new PlainBindingAnswers(KNOWN_ATTRIBUTES);
  /** With `--workers`: this worker's routes to the others (workers/worker-router.ts). */
  readonly #router: WorkerRouter | undefined;
  /** UDP sockets by `socketKey` (rfc5780.ts); the primary one also carries the broker's own requests. */
  #udp = new Map<string, UdpSocket>();
  /** The UDP sockets bound to an IPv6 address (dual-stack when bound to "::"). */
  readonly #udp6 = new WeakSet<UdpSocket>();
  #tcp: readonly Server[] = [];
  #webSockets: readonly WebSocketListener[] = [];
  #layout: Rfc5780Layout | undefined;
  #state: 'idle' | 'starting' | 'listening' | 'closed' = 'idle';
  /** Settles when a listen() in progress has finished (bound everything, or closed what it bound). */
  #starting: Promise<void> = Promise.resolve();
  #address: { address: string; port: number } | undefined;

  constructor(options: BrokerOptions = {}) {
    super();
    const resolved = resolveBrokerOptions(options);
    const amplification = amplificationMode(resolved);
    this.#options = resolved;
    this.#ownsRegistry = options.registry === undefined;
    const registry = options.registry ?? new MemoryRegistry();
    // A worker's registrations name it, so requests for its control connections come to it.
    this.#registry = options.workerLink === undefined ? registry : new WorkerRegistry(registry, workerBrokerId(options.workerLink.prefix, options.workerLink.slot));
    // Another live process of a key is asked before a proof takes its URI (instances.ts), the way connection requests go.
    const instances = new InstanceChecks({
      send: (registration, message, key) => this.#notify(registration, message, key),
      clock: resolved.clock,
      ...(options.workerLink === undefined ? {} : { transactionId: () => (this.#router as WorkerRouter).transactionId() }),
    });
    this.#instances = instances;
    this.#auth = { ...buildAuth(resolved), instances };
    this.#guard = new BrokerGuard(resolveLimits(options.limits), (report) => this.emit('event', { type: 'limited', ...report } satisfies BrokerEvent), { amplification });
    this.#relay = new RelayHub(
      { maxBytes: resolved.relayMaxBytes, maxDurationMs: resolved.relayMaxDurationMs },
      (channel, message) => channel.send(message, { software: resolved.software, fingerprint: true }),
      (ended) => this.emit('event', { type: 'relay-ended', ...ended } satisfies BrokerEvent),
      (attemptId) => this.emit('event', { type: 'relay-started', attemptId } satisfies BrokerEvent),
    );
    const workerLink = options.workerLink;
    const router = (): WorkerRouter | undefined => this.#router;
    const bus = resolved.bus;
    this.#cluster =
      bus === undefined
        ? undefined
        : new ClusterRouting({
            bus,
            registry: this.#registry,
            sessionKeyFor: async (uri) => (await this.#auth.sessions.byUri(uri))?.key,
            sendUdp: (bytes, to) => this.#sendEncodedUdp(bytes, to),
            sendControl: (uri, bytes) => this.#tcpService.control(uri)?.sendEncoded(bytes) ?? false,
            acknowledge: (response, source) => this.#acknowledge(response, source),
            now: () => resolved.clock.now(),
            dropped: (reason, from) => this.emit('event', { type: 'warning', message: `dropped a connection request relayed by broker ${from}: ${reason}` } satisfies BrokerEvent),
          });
    this.#rendezvous = new Rendezvous({
      clock: resolved.clock,
      joinAt: (registration) => (this.#cluster?.isRemote(registration) === true ? this.#joinAddress() : undefined),
      nextSequence: async (uri) => {
        const session = await this.#auth.sessions.byUri(uri);
        if (session !== undefined) return this.#auth.sessions.nextRequestSequence(session);
        // Open mode: the workers of one broker still count together (the recipient ignores the number anyway).
        return workerLink === undefined ? undefined : workerLink.nextSequence(uri);
      },
      foreignAnswer: (response, source) => {
        if (this.#instances.answered(response)) return;
        // With --workers, the worker that relayed the request may be another one.
        if (this.#cluster?.answered(response, source) === false) this.#router?.foreignAnswer(response, source);
      },
      ...(workerLink === undefined ? {} : { transactionId: () => (router() as WorkerRouter).transactionId(), history: workerLink.history }),
      authorizeRelay: (attemptId, secret) => this.#relay.authorize(attemptId, secret),
      sessionKeyFor: async (uri) => (await this.#auth.sessions.byUri(uri))?.key,
      alternatePort: () => this.#layout?.alternatePort,
      registry: this.#registry,
      notify: (registration, message, key) => this.#notify(registration, message, key),
      reply: (channel, message) => channel.send(message, { software: this.#options.software, fingerprint: true }),
      recipientTimeoutMs: resolved.recipientTimeoutMs,
      probeTimeoutMs: resolved.probeTimeoutMs,
      maxPendingAttempts: resolved.maxPendingAttempts,
      emit: (event) => {
        if (event.type === 'attempt') router()?.own(event.attemptId);
        this.emit('event', event);
      },
      limits: this.#guard.limits,
      limited: (report) => this.#guard.limited(report),
    });
    this.#router =
      options.workerLink === undefined
        ? undefined
        : new WorkerRouter(options.workerLink, {
            rendezvous: this.#rendezvous,
            relay: this.#relay,
            software: resolved.software,
            control: (uri) => this.#tcpService.control(uri),
            adoptRelay: (socket, attemptId, role, request, early) => this.#tcpService.adoptRelay(socket, attemptId, role, request, early),
            clusterAnswered: (response, source) => void this.#cluster?.answered(response, source),
          });
    this.#tcpService = new TcpService({
      options: resolved,
      registry: this.#registry,
      auth: this.#auth,
      guard: this.#guard,
      rendezvous: this.#rendezvous,
      relay: this.#relay,
      emit: (event) => this.emit('event', event),
      withdrawn: (uri, transport) => this.#withdrawn(uri, transport),
      alternatePort: () => this.#layout?.alternatePort,
      ...(bus === undefined ? {} : { brokerId: bus.id }),
      acknowledge: (message, source) => this.#acknowledge(message, source),
      ...(workerLink === undefined ? {} : { router: router() }),
    });
  }

  /** This broker's bus ID in a cluster (what its registrations record), or undefined on its own. */
  get busId(): string | undefined {
    return this.#cluster?.id;
  }

  /** JOIN-AT for recipients registered through other brokers: the configured address, with the bound port when it was 0. */
  #joinAddress(): TransportAddress | undefined {
    const join = this.#options.joinAddress;
    if (join === undefined) return undefined;
    const port = join.port !== 0 ? join.port : this.#layout?.port;
    return port === undefined ? undefined : toTransportAddress(join.host, port);
  }

  /** The announced address of the family other than `family` on our port (OTHER-FAMILY-BROKER), if any. */
  #otherFamilyBroker(family: AddressFamilyName): TransportAddress | undefined {
    const port = this.#layout?.port;
    return port === undefined ? undefined : otherFamilyBroker(this.#options.announce, family, port);
  }

  /** The registry this broker uses. */
  get registry(): Registry {
    return this.#registry;
  }

  /** Connections being relayed right now. */
  get activeRelays(): number {
    return this.#relay.active;
  }

  /** Application bytes relayed since the broker was made, both directions, relays still running included. */
  get relayedBytes(): number {
    return this.#relay.bytesRelayed;
  }

  /** True from the moment {@link Broker.listen} resolved until {@link Broker.close} is called. */
  get listening(): boolean {
    return this.#state === 'listening';
  }

  /** Mapping-probe records held for attempts in progress. */
  get probeRecords(): number {
    return this.#rendezvous.probeRecords;
  }

  /** Attempts waiting for their recipient or being scheduled. */
  get pendingAttempts(): number {
    return this.#rendezvous.pending;
  }

  /** The bound address; throws before {@link Broker.listen} resolved. */
  address(): { address: string; port: number } {
    if (this.#address === undefined) throw new NattravError(ErrorCode.Closed, 'the broker is not listening');
    return { ...this.#address };
  }

  /** Every endpoint listened on (UDP and TCP each): primary, alternate port, and with an alternate address both of its ports. */
  addresses(): BrokerEndpoint[] {
    const layout = this.#layout;
    if (layout === undefined || this.#state !== 'listening') throw new NattravError(ErrorCode.Closed, 'the broker is not listening');
    return [...this.#udp.keys()].map((key) => {
      const id: ServerSocketId = { alternateIp: key.startsWith('alt-ip'), alternatePort: key.endsWith('alt-port') };
      return { ...socketAddress(layout, id), ...id };
    });
  }

  /**
   * Binds UDP and TCP on the primary port and the alternate port (and on both
   * ports of the alternate address, if any), then starts serving. Resolves with
   * the primary address.
   */
  async listen(): Promise<{ address: string; port: number }> {
    if (this.#state === 'listening' && this.#address !== undefined) return this.address();
    if (this.#state !== 'idle') throw new NattravError(ErrorCode.Closed, `cannot listen: the broker is ${this.#state}`);
    this.#state = 'starting';
    const starting = this.#start();
    // close() waits for this, so that nothing is left bound once it resolved.
    this.#starting = starting.then(() => undefined, () => undefined);
    return starting;
  }

  async #start(): Promise<{ address: string; port: number }> {
    const { host, port, alternateHost, alternatePort } = this.#options;
    let lastError: unknown;
    try {
      // Each socket is checked as soon as it is bound: a close() meanwhile closes it at once and stops the binding.
      const bound = await bindListeners(
        { host, port, ...(alternateHost === undefined ? {} : { alternateHost }), ...(alternatePort === undefined ? {} : { alternatePort }) },
        {
          udp: (h, p, id) => this.#openWhileStarting(() => this.#bindUdp(h, p, id), (socket) => closeListeners([socket], [])),
          tcp: (h, p) => this.#openWhileStarting(() => this.#tcpService.listen(h, p), (server) => closeListeners([], [server])),
        },
      );
      const webSockets = await this.#openWebSockets().catch(async (err: unknown) => {
        await closeListeners(bound.udp.values(), bound.tcp);
        if (this.#state === 'starting') this.#state = 'idle';
        throw err;
      });
      if (this.#state !== 'starting') {
        await Promise.all([closeListeners(bound.udp.values(), bound.tcp), ...webSockets.map((ws) => ws.close())]);
        throw closedWhileStarting();
      }
      this.#webSockets = webSockets;
      this.#udp = new Map(bound.udp);
      this.#tcp = bound.tcp;
      this.#layout = bound.layout;
      this.#address = { address: host, port: bound.layout.port };
      this.#state = 'listening';
      this.emit('event', {
        type: 'listening',
        address: host,
        port: bound.layout.port,
        alternatePort: bound.layout.alternatePort,
        ...(alternateHost === undefined ? {} : { alternateAddress: alternateHost }),
        security: this.#auth.mode === 'open' ? 'open' : this.#options.cert === undefined ? 'authenticated' : 'authenticated+tls',
      } satisfies BrokerEvent);
      if (this.#auth.mode === 'open') {
        this.emit('event', { type: 'warning', message: OPEN_MODE_WARNING } satisfies BrokerEvent);
      }
      this.emit('listening');
      return this.address();
    } catch (err) {
      if (err instanceof NattravError) throw err;
      lastError = err;
    }
    this.#state = 'idle';
    throw listenError(lastError, host, port, alternateHost);
  }

  /** Stops serving, drops every exchange, and closes the registry and session table it created. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#rendezvous.close();
    this.#relay.close();
    this.#tcpService.close();
    // A listen() in progress closes what it bound as soon as its bind returns.
    await this.#starting;
    await Promise.all([closeListeners(this.#udp.values(), this.#tcp), ...this.#webSockets.map((ws) => ws.close())]);
    if (this.#ownsRegistry) await this.#registry.close();
    if (this.#options.sessions === undefined) await this.#auth.sessions.close();
    this.emit('close');
  }

  /** Same as {@link Broker.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The WebSocket listeners (option `webSockets`) with their bound ports; empty before listen() resolved. */
  webSocketEndpoints(): WebSocketEndpoint[] {
    return this.#webSockets.map((ws) => ({ ...ws.endpoint }));
  }

  #openWebSockets(): Promise<WebSocketListener[]> {
    const { cert, key, webSockets } = this.#options;
    const ctx = { ...(cert === undefined ? {} : { cert }), ...(key === undefined ? {} : { key }), accept: (socket: Socket) => this.#tcpService.accept(socket), warn: (message: string) => this.emit('event', { type: 'warning', message } satisfies BrokerEvent) };
    return openWebSocketListeners(webSockets, ctx, (open) => this.#openWhileStarting(open, (listener) => listener.close()));
  }

  /**
   * Opens one socket or server for listen(), checking the state before and after:
   * once close() was called it opens nothing more, and closes what it just opened
   * before throwing ERR_CLOSED (so bindListeners stops and close() finds nothing bound).
   */
  async #openWhileStarting<T>(open: () => Promise<T>, close: (opened: T) => Promise<void>): Promise<T> {
    if (this.#state !== 'starting') throw closedWhileStarting();
    const opened = await open();
    if (this.#state !== 'starting') {
      await close(opened);
      throw closedWhileStarting();
    }
    return opened;
  }

  #bindUdp(host: string, port: number, id: ServerSocketId): Promise<UdpSocket> {
    return new Promise((resolve, reject) => {
      const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
      if (host.includes(':')) this.#udp6.add(socket);
      socket.once('error', reject);
      // Workers of one broker share the primary's socket (Node cluster): not exclusive there.
      socket.bind({ address: host, port, exclusive: this.#options.workerLink === undefined }, () => {
        socket.off('error', reject);
        socket.on('error', (err) => this.emit('error', err));
        socket.on('message', (data, rinfo) => {
          if (!this.#guard.admitDatagram(data, rinfo.address)) return;
          const shape = this.#state === 'listening' ? this.#plainBindings.shape(data, rinfo.family, id) : NOT_PLAIN;
          if (shape !== NOT_PLAIN && this.#plainBindings.send(shape, data, socket, rinfo.address, rinfo.port)) {
            if (this.listenerCount('event') > 0) {
              this.emit('event', { type: 'binding', transport: 'udp', remote: { family: 'IPv4', address: rinfo.address, port: rinfo.port } } satisfies BrokerEvent);
            }
            return;
          }
          void handleDatagram(
            {
              registry: this.#registry,
              maxLifetimeMs: this.#options.maxLifetimeMs,
              now: Date.now,
              auth: this.#auth,
              reply: (request, response, to, options, verified) => this.#replyUdp(socket, response, to, options, udpRequestInfo(request, data), verified),
              binding: (request, remote) => this.#answerBinding(id, request, remote, udpRequestInfo(request, data), shape),
              admitRegister: (request, remote) => this.#guard.admitRegister(request, remote.address),
              onResponse: (message, remote) => this.#acknowledge(message, { transport: 'udp', from: remote }),
              onRegistered: (uri, publicEndpoint, lifetimeMs, refresh, secondFamily) => {
                // A second family is the same registration: the caps count its first family's source.
                if (secondFamily !== true) this.#guard.registered(uri, publicEndpoint.address, lifetimeMs);
                this.emit('event', { type: 'registered', uri, publicEndpoint, lifetimeMs, refresh, ...(secondFamily === true ? { secondFamily } : {}) } satisfies BrokerEvent);
              },
              otherFamilyBroker: (family) => this.#otherFamilyBroker(family),
              onWithdrawn: (uri, transport) => this.#withdrawn(uri, transport),
              alternatePort: () => this.#layout?.alternatePort,
              onBinding: (remote) => this.emit('event', { type: 'binding', transport: 'udp', remote } satisfies BrokerEvent),
              ...(this.#cluster === undefined ? {} : { brokerId: this.#cluster.id }),
            },
            data,
            rinfo.address,
            rinfo.port,
          ).catch(() => undefined); // handleDatagram never throws; this only keeps a bug from ending the process
        });
        resolve(socket);
      });
    });
  }

  /** Sends from the primary UDP socket (the broker's own requests, e.g. ConnectionRequest). */
  #sendUdp(message: StunMessage, to: TransportAddress, options?: EncodeOptions): void {
    const primary = this.#udp.get(socketKey({ alternateIp: false, alternatePort: false }));
    if (primary !== undefined) this.#sendUdpFrom(primary, message, to, options);
  }

  /** Sends bytes already encoded (a request relayed by another broker: cluster.ts) from the primary UDP socket. */
  #sendEncodedUdp(bytes: Uint8Array, to: TransportAddress): void {
    const primary = this.#udp.get(socketKey({ alternateIp: false, alternatePort: false }));
    if (primary !== undefined && this.#state === 'listening') this.#sendTo(primary, bytes, to);
  }

  #sendUdpFrom(socket: UdpSocket, message: StunMessage, to: TransportAddress, options: EncodeOptions = {}): void {
    if (this.#state !== 'listening') return;
    const bytes = encodeMessage(message, { software: this.#options.software, fingerprint: true, ...options });
    this.#sendTo(socket, bytes, to);
  }

  /** Sends `bytes` to `to` from `socket`; a udp6 socket reaches an IPv4 peer at its IPv4-mapped address. */
  #sendTo(socket: UdpSocket, bytes: Uint8Array, to: TransportAddress): void {
    socket.send(bytes, to.port, this.#udp6.has(socket) ? udp6Destination(to.address) : to.address, () => undefined);
  }

  /** Answers a UDP request, no larger than the anti-amplification rule allows (amplification.ts). */
  #replyUdp(socket: UdpSocket, message: StunMessage, to: TransportAddress, options: EncodeOptions | undefined, request: UdpRequestInfo, verified = false): void {
    if (this.#state !== 'listening') return;
    const bytes = this.#guard.fitUdp(message, { software: this.#options.software, fingerprint: true, ...options }, request, to.address, verified);
    if (bytes !== undefined) this.#sendTo(socket, bytes, to);
  }

  /**
   * RFC 5780 §6.1: answers a UDP Binding from the socket CHANGE-REQUEST asks for (see rfc5780.ts).
   * A plain request's answer (`shape`, binding-fast.ts) is kept for the next ones of its shape.
   */
  #answerBinding(arrivedOn: ServerSocketId, request: StunMessage, remote: TransportAddress, info: UdpRequestInfo, shape: number): void {
    if (this.#layout === undefined || this.#state !== 'listening') return;
    const answer = answerBinding(request, arrivedOn, remote, this.#layout);
    const socket = this.#udp.get(socketKey(answer.from));
    if (socket === undefined) return;
    let drew = false;
    const bytes = this.#guard.fitUdp(answer.response, { software: this.#options.software, fingerprint: true }, info, answer.to.address, false, () => {
      drew = true;
    });
    this.#plainBindings.learn(shape, bytes, drew);
    if (bytes !== undefined) this.#sendTo(socket, bytes, answer.to);
  }

  /** Sends `message` (a ConnectionRequest, or an instance check) to the recipient of `registration`, the way its registration came. */
  #notify(registration: Registration, message: StunMessage, key: Buffer | undefined): void {
    const resolved = this.#options;
    // Integrity under the recipient's session key: only this broker can ask it to connect.
    const options = key === undefined ? {} : { integritySha256Key: key };
    if (this.#cluster?.isRemote(registration) === true) {
      // The broker that took the registration sends it (cluster.ts), from the address the recipient's NAT expects.
      this.#cluster.relay(registration, encodeMessage(message, { software: resolved.software, fingerprint: true, ...options }));
    } else if (registration.transport === 'tcp') {
      const control = this.#tcpService.control(registration.uri);
      if (control !== undefined) control.send(message, { software: resolved.software, fingerprint: true, ...options });
      // With --workers another worker may hold the control connection.
      else this.#router?.notifyControl(registration, encodeMessage(message, { software: resolved.software, fingerprint: true, ...options }));
    } else {
      this.#sendUdp(message, registration.publicEndpoint, options);
    }
  }

  /** An answer to a ConnectionRequest: to the rendezvous here, or (`--workers`) to the worker that sent the request. */
  #acknowledge(message: StunMessage, source: AnswerSource): void {
    if (this.#router?.acknowledge(message, source) !== true) this.#rendezvous.acknowledge(message, source);
  }

  /** Cross-worker traffic this worker routed or served (`--workers`; undefined in a single process). */
  get routeCounts(): RouteCounts | undefined {
    return this.#router === undefined ? undefined : { ...this.#router.counts };
  }

  /** A registration was withdrawn by its holder: free its place under the caps and say so. */
  #withdrawn(uri: string, transport: 'udp' | 'tcp'): void {
    this.#guard.unregistered(uri);
    this.emit('event', { type: 'withdrawn', uri, transport } satisfies BrokerEvent);
  }
}

/** Creates a broker; call {@link Broker.listen} to start it. */
export function createBroker(options: BrokerOptions = {}): Broker {
  return new Broker(options);
}

function closedWhileStarting(): NattravError {
  return new NattravError(ErrorCode.Closed, 'the broker was closed while it was starting');
}

/**
 * The error for a failed bind, naming the address and port that failed (the primary or
 * the alternate one): ERR_ADDRESS_IN_USE for a port in use, else ERR_INVALID_ARGUMENT.
 */
function listenError(err: unknown, host: string, port: number, alternateHost: string | undefined): NattravError {
  const sys = (err ?? {}) as NodeJS.ErrnoException & { address?: string; port?: number; hostname?: string };
  const code = sys.code ?? String(err);
  const address = sys.address ?? sys.hostname ?? host;
  const failedPort = sys.port ?? port;
  const which = alternateHost !== undefined && address === alternateHost ? 'the alternate address ' : '';
  const where = `${which}${address}:${failedPort}`;
  if (code === 'EADDRINUSE') {
    return new NattravError(ErrorCode.AddressInUse, `cannot listen on ${where}: port ${failedPort} is in use (the broker needs UDP and TCP on it)`, { cause: err, address, port: failedPort });
  }
  const why = code === 'EADDRNOTAVAIL' ? 'not an address of this host' : code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? 'no such host' : code === 'EACCES' ? 'permission denied' : 'failed';
  return new NattravError(ErrorCode.InvalidArgument, `cannot listen on ${where}: ${why} (${code})`, { cause: err, address, port: failedPort });
}
