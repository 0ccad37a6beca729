/**
 * The connection broker: one process, UDP and TCP on the same port.
 * UDP carries STUN Binding and registrations (see udp.ts); TCP carries Binding
 * and the exchanges of each connection attempt (see rendezvous.ts).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { toTransportAddress } from '../common/endpoint.js';
import { StunChannel } from '../common/stun-channel.js';
import { ErrorCode, NattravError } from '../errors.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addXorAddress, getAttemptId, getU32Attr } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { amplificationMode, resolveBrokerOptions, type BrokerOptions, type ResolvedBrokerOptions } from './options.js';
import { MemoryRegistry } from './registry/memory.js';
import type { Registry } from './registry/registry.js';
import { udpRequestInfo, type UdpRequestInfo } from './amplification.js';
import { buildAuth } from './auth.js';
import { handleRegister, type RegisterAuth } from './register.js';
import { RelayHub, type RelayEnded } from './relay.js';
import { Rendezvous, type RendezvousEvent } from './rendezvous.js';
import { handleDatagram } from './udp.js';
import { bindListeners, closeListeners } from './listeners.js';
import { BrokerGuard } from './guard.js';
import { resolveLimits, type LimitedReport } from './limits.js';
import { answerBinding, socketAddress, socketKey, type Rfc5780Layout, type ServerSocketId } from './rfc5780.js';

/** Something the broker did, for logs and tests. */
export type BrokerEvent =
  | RendezvousEvent
  | {
      type: 'listening';
      address: string;
      port: number;
      alternatePort: number;
      alternateAddress?: string;
      /** 'open': no proof of key; 'authenticated': proof of key; '+tls': the broker can prove itself too. */
      security: 'open' | 'authenticated' | 'authenticated+tls';
    }
  | { type: 'warning'; message: string }
  | { type: 'binding'; transport: 'udp' | 'tcp'; remote: TransportAddress }
  | { type: 'registered'; uri: string; publicEndpoint: TransportAddress; lifetimeMs: number; transport?: 'tcp' }
  /** The recipient withdrew its registration (LIFETIME 0 under its session): `uri` is unknown from now on. */
  | { type: 'withdrawn'; uri: string; transport: 'udp' | 'tcp' }
  | ({ type: 'relay-ended' } & RelayEnded)
  /** A rate limit or cap refused something (limits.ts); throttled, never more than `limitedEventsPerSecond`. */
  | ({ type: 'limited' } & LimitedReport);

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

/** TLS on the broker's TCP channel: 1.3 only. */
const TLS_VERSION = 'TLSv1.3';

/** A running (or not yet started) broker. Emits 'event' ({@link BrokerEvent}), 'listening', 'error', 'close'. */
export class Broker extends EventEmitter {
  readonly #options: ResolvedBrokerOptions;
  readonly #registry: Registry;
  readonly #ownsRegistry: boolean;
  readonly #sockets = new Set<Socket>();
  readonly #rendezvous: Rendezvous;
  readonly #relay: RelayHub;
  /** Rate limits, caps and anti-amplification (guard.ts). */
  readonly #guard: BrokerGuard;
  readonly #auth: RegisterAuth;
  /** TCP control connections of recipients whose UDP is blocked, by URI. */
  readonly #controls = new Map<string, StunChannel>();
  /** UDP sockets by `socketKey` (rfc5780.ts); the primary one also carries the broker's own requests. */
  #udp = new Map<string, UdpSocket>();
  #tcp: readonly Server[] = [];
  #layout: Rfc5780Layout | undefined;
  #state: 'idle' | 'starting' | 'listening' | 'closed' = 'idle';
  #address: { address: string; port: number } | undefined;

  constructor(options: BrokerOptions = {}) {
    super();
    const resolved = resolveBrokerOptions(options);
    const amplification = amplificationMode(resolved);
    this.#options = resolved;
    this.#ownsRegistry = options.registry === undefined;
    this.#registry = options.registry ?? new MemoryRegistry();
    this.#auth = buildAuth(resolved);
    this.#guard = new BrokerGuard(resolveLimits(options.limits), (report) => this.emit('event', { type: 'limited', ...report } satisfies BrokerEvent), { amplification });
    this.#relay = new RelayHub(
      { maxBytes: resolved.relayMaxBytes, maxDurationMs: resolved.relayMaxDurationMs },
      (channel, message) => channel.send(message, { software: resolved.software, fingerprint: true }),
      (ended) => this.emit('event', { type: 'relay-ended', ...ended } satisfies BrokerEvent),
    );
    this.#rendezvous = new Rendezvous({
      authorizeRelay: (attemptId) => this.#relay.authorize(attemptId),
      registry: this.#registry,
      notify: (registration, message) => {
        // Integrity under the recipient's session key: only this broker can ask it to connect.
        const key = this.#auth.sessions.byUri(registration.uri)?.key;
        const options = key === undefined ? {} : { integritySha256Key: key };
        if (registration.transport === 'tcp') {
          this.#controls.get(registration.uri)?.send(message, { software: resolved.software, fingerprint: true, ...options });
        } else {
          this.#sendUdp(message, registration.publicEndpoint, options);
        }
      },
      reply: (channel, message) => channel.send(message, { software: this.#options.software, fingerprint: true }),
      recipientTimeoutMs: resolved.recipientTimeoutMs,
      probeTimeoutMs: resolved.probeTimeoutMs,
      maxPendingAttempts: resolved.maxPendingAttempts,
      emit: (event) => this.emit('event', event),
      limits: this.#guard.limits,
      limited: (report) => this.#guard.limited(report),
    });
  }

  /** The registry this broker uses. */
  get registry(): Registry {
    return this.#registry;
  }

  /** Connections being relayed right now. */
  get activeRelays(): number {
    return this.#relay.active;
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
    const { host, port, alternateHost, alternatePort } = this.#options;
    let lastError: unknown;
    try {
      const bound = await bindListeners(
        { host, port, ...(alternateHost === undefined ? {} : { alternateHost }), ...(alternatePort === undefined ? {} : { alternatePort }) },
        { udp: (h, p, id) => this.#bindUdp(h, p, id), tcp: (h, p) => this.#listenTcp(h, p) },
      );
      if (this.#state !== 'starting') {
        await closeListeners(bound.udp.values(), bound.tcp);
        throw new NattravError(ErrorCode.Closed, 'the broker was closed while it was starting');
      }
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

  /** Stops serving, drops every exchange, and closes the registry it created. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#rendezvous.close();
    this.#relay.close();
    for (const socket of this.#sockets) socket.destroy();
    await closeListeners(this.#udp.values(), this.#tcp);
    if (this.#ownsRegistry) await this.#registry.close();
    this.emit('close');
  }

  /** Same as {@link Broker.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #listenTcp(host: string, port: number): Promise<Server> {
    return new Promise((resolve, reject) => {
      // allowHalfOpen: the relay passes a peer's FIN on as a FIN; STUN channels end their side themselves.
      const server = createServer({ allowHalfOpen: true }, (socket) => this.#onTcp(socket));
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.emit('error', err));
        resolve(server);
      });
    });
  }

  #bindUdp(host: string, port: number, id: ServerSocketId): Promise<UdpSocket> {
    return new Promise((resolve, reject) => {
      const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
      socket.once('error', reject);
      socket.bind({ address: host, port, exclusive: true }, () => {
        socket.off('error', reject);
        socket.on('error', (err) => this.emit('error', err));
        socket.on('message', (data, rinfo) => {
          if (!this.#guard.admitDatagram(data, rinfo.address)) return;
          void handleDatagram(
            {
              registry: this.#registry,
              maxLifetimeMs: this.#options.maxLifetimeMs,
              now: Date.now,
              auth: this.#auth,
              reply: (request, response, to, options) => this.#replyUdp(socket, response, to, options, udpRequestInfo(request, data)),
              binding: (request, remote) => this.#answerBinding(id, request, remote, udpRequestInfo(request, data)),
              admitRegister: (request, remote) => this.#guard.admitRegister(request, remote.address),
              onResponse: (message) => this.#rendezvous.acknowledge(message),
              onRegistered: (uri, publicEndpoint, lifetimeMs) => {
                this.#guard.registered(uri, publicEndpoint.address, lifetimeMs);
                this.emit('event', { type: 'registered', uri, publicEndpoint, lifetimeMs } satisfies BrokerEvent);
              },
              onWithdrawn: (uri, transport) => this.#withdrawn(uri, transport),
              onBinding: (remote) => this.emit('event', { type: 'binding', transport: 'udp', remote } satisfies BrokerEvent),
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

  #sendUdpFrom(socket: UdpSocket, message: StunMessage, to: TransportAddress, options: EncodeOptions = {}): void {
    if (this.#state !== 'listening') return;
    const bytes = encodeMessage(message, { software: this.#options.software, fingerprint: true, ...options });
    socket.send(bytes, to.port, to.address, () => undefined);
  }

  /** Answers a UDP request, no larger than the anti-amplification rule allows (amplification.ts). */
  #replyUdp(socket: UdpSocket, message: StunMessage, to: TransportAddress, options: EncodeOptions | undefined, request: UdpRequestInfo): void {
    if (this.#state !== 'listening') return;
    const bytes = this.#guard.fitUdp(message, { software: this.#options.software, fingerprint: true, ...options }, request, to.address);
    if (bytes !== undefined) socket.send(bytes, to.port, to.address, () => undefined);
  }

  /** RFC 5780 §6.1: answers a UDP Binding from the socket CHANGE-REQUEST asks for (see rfc5780.ts). */
  #answerBinding(arrivedOn: ServerSocketId, request: StunMessage, remote: TransportAddress, info: UdpRequestInfo): void {
    if (this.#layout === undefined) return;
    const answer = answerBinding(request, arrivedOn, remote, this.#layout);
    const socket = this.#udp.get(socketKey(answer.from));
    if (socket !== undefined) this.#replyUdp(socket, answer.response, answer.to, undefined, info);
  }

  /** A registration was withdrawn by its holder: free its place under the caps and say so. */
  #withdrawn(uri: string, transport: 'udp' | 'tcp'): void {
    this.#guard.unregistered(uri);
    this.emit('event', { type: 'withdrawn', uri, transport } satisfies BrokerEvent);
  }

  /** Register over TCP: keep the channel so connection requests can go down it. */
  #registerControl(channel: StunChannel, request: StunMessage): void {
    const socket = channel.socket;
    const remote = toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0);
    handleRegister(
      {
        registry: this.#registry,
        maxLifetimeMs: this.#options.maxLifetimeMs,
        auth: this.#auth,
        now: Date.now,
        reply: (message, options) => channel.send(message, { software: this.#options.software, fingerprint: true, ...options }),
        onRegistered: (uri, publicEndpoint, lifetimeMs) => {
          this.#guard.registered(uri, publicEndpoint.address, lifetimeMs);
          this.emit('event', { type: 'registered', uri, publicEndpoint, lifetimeMs, transport: 'tcp' } satisfies BrokerEvent);
        },
        onWithdrawn: (uri, transport) => this.#withdrawn(uri, transport),
      },
      request,
      remote,
      'tcp',
    ).then(
      (uri) => {
        if (uri === undefined || this.#controls.get(uri) === channel) return;
        this.#controls.set(uri, channel);
        channel.closed.then(async () => {
          if (this.#controls.get(uri) !== channel) return;
          this.#controls.delete(uri);
          // Nobody can reach the recipient any more: drop the registration if it is still this one.
          const current = await this.#registry.get(uri);
          if (current?.transport === 'tcp' && current.publicEndpoint.port === remote.port && current.publicEndpoint.address === remote.address) {
            await this.#registry.delete(uri);
          }
        }, () => undefined);
      },
      (err: unknown) => channel.send(request.errorResponse(StunErrorCode.ServerError, err instanceof Error ? err.message : String(err))),
    );
  }

  #onTcp(socket: Socket): void {
    if (!this.#guard.acceptTcp(socket)) return;
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.setTimeout(this.#options.exchangeIdleTimeoutMs, () => socket.destroy());
    socket.setNoDelay(true);
    this.#serveTcp(socket, socket);
  }

  /**
   * STARTTLS: answer in clear, then run TLS 1.3 as server on the same socket and
   * serve it again, encrypted. The peer sends nothing until it has our answer,
   * so no byte is left behind in the plain stream.
   */
  #startTls(raw: Socket, channel: StunChannel, request: StunMessage): void {
    const { cert, key } = this.#options;
    if (cert === undefined || key === undefined) {
      channel.send(request.errorResponse(StunErrorCode.BadRequest, 'this broker has no certificate'), { software: this.#options.software, fingerprint: true });
      channel.end();
      return;
    }
    channel.send(request.successResponse(), { fingerprint: true });
    const early = channel.detach();
    if (early.length > 0) {
      raw.destroy(); // bytes before the handshake: not a well-behaved peer
      return;
    }
    const secure = new TLSSocket(raw, { isServer: true, cert, key, minVersion: TLS_VERSION, maxVersion: TLS_VERSION });
    secure.on('error', () => raw.destroy());
    secure.once('secure', () => this.#serveTcp(secure, raw));
  }

  /** Serves STUN on `socket` (plain, or TLS over `raw`). */
  #serveTcp(socket: Socket, raw: Socket): void {
    let role: 'none' | 'initiator' | 'recipient' | 'relay' | 'control' = 'none';
    const secured = socket !== raw;
    const channel: StunChannel = new StunChannel(socket, (message) => {
      this.#guard.firstMessage(raw);
      if (message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse) {
        // A recipient acknowledging a connection request on its control connection.
        if (role === 'control') this.#rendezvous.acknowledge(message);
        return;
      }
      if (message.cls !== MessageClass.Request) return;
      const reply = (response: StunMessage): void => {
        channel.send(response, { software: this.#options.software, fingerprint: true });
        this.#guard.writable(socket);
      };
      const verdict = this.#guard.tcpRequest(socket, message);
      if (verdict.action === 'close') {
        channel.destroy();
        return;
      }
      if (verdict.action === 'refuse') {
        reply(verdict.response);
        channel.end();
        return;
      }
      switch (message.method) {
        case Method.Binding: {
          const remote = toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0);
          const response = message.successResponse();
          addXorAddress(response, AttrType.XorMappedAddress, remote);
          reply(response);
          this.emit('event', { type: 'binding', transport: 'tcp', remote } satisfies BrokerEvent);
          return;
        }
        case Method.Connect:
        case Method.Join: {
          if (role !== 'none') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'one attempt per exchange'));
            return;
          }
          role = message.method === Method.Connect ? 'initiator' : 'recipient';
          const run = role === 'initiator' ? this.#rendezvous.connect(channel, message) : this.#rendezvous.join(channel, message);
          run.catch((err: unknown) => {
            reply(message.errorResponse(StunErrorCode.BadRequest, err instanceof Error ? err.message : String(err)));
            channel.end();
          });
          return;
        }
        case Method.Register: {
          if (role !== 'none' && role !== 'control') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'Register on an exchange connection'));
            return;
          }
          role = 'control';
          // A control connection lives as long as its registration; refreshes keep it busy.
          socket.setTimeout(this.#options.maxLifetimeMs, () => socket.destroy());
          this.#registerControl(channel, message);
          return;
        }
        case Method.StartTls:
          if (role !== 'none' || secured) {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'StartTls must come first, once'));
            return;
          }
          this.#startTls(raw, channel, message);
          return;
        case Method.MappingProbe:
          this.#rendezvous.mappingProbe(channel, message);
          return;
        case Method.Relay: {
          const id = getAttemptId(message);
          const side = getU32Attr(message, AttrType.Role);
          if (id === undefined || (side !== 0 && side !== 1) || role !== 'none') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'Relay needs ATTEMPT-ID and ROLE, once per connection'));
            channel.end();
            return;
          }
          role = 'relay';
          this.#relay.join(Buffer.from(id).toString('hex'), side === 0 ? 'initiator' : 'recipient', channel, message);
          return;
        }
        default:
          reply(message.errorResponse(StunErrorCode.BadRequest, `method 0x${message.method.toString(16)} is not served over TCP`));
      }
    });
  }
}

/** Creates a broker; call {@link Broker.listen} to start it. */
export function createBroker(options: BrokerOptions = {}): Broker {
  return new Broker(options);
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
