/**
 * The connection broker: one process, UDP and TCP on the same port.
 * UDP carries STUN Binding and registrations (see udp.ts); TCP carries Binding
 * and the exchanges of each connection attempt (see rendezvous.ts).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { checkPort, toTransportAddress } from '../common/endpoint.js';
import { StunChannel } from '../common/stun-channel.js';
import { ErrorCode, NattravError } from '../errors.js';
import { encodeMessage } from '../wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addXorAddress } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { BROKER_DEFAULTS, type BrokerOptions, type ResolvedBrokerOptions } from './options.js';
import { MemoryRegistry } from './registry/memory.js';
import type { Registry } from './registry/registry.js';
import { Rendezvous, type RendezvousEvent } from './rendezvous.js';
import { handleDatagram } from './udp.js';

/** Something the broker did, for logs and tests. */
export type BrokerEvent =
  | RendezvousEvent
  | { type: 'listening'; address: string; port: number }
  | { type: 'binding'; transport: 'udp' | 'tcp'; remote: TransportAddress }
  | { type: 'registered'; uri: string; publicEndpoint: TransportAddress; lifetimeMs: number };

/** Tries to find a port free for both UDP and TCP when asked for port 0. */
const SAME_PORT_TRIES = 20;

/** A running (or not yet started) broker. Emits 'event' ({@link BrokerEvent}), 'listening', 'error', 'close'. */
export class Broker extends EventEmitter {
  readonly #options: ResolvedBrokerOptions;
  readonly #registry: Registry;
  readonly #ownsRegistry: boolean;
  readonly #sockets = new Set<Socket>();
  readonly #rendezvous: Rendezvous;
  #udp: UdpSocket | undefined;
  #tcp: Server | undefined;
  #state: 'idle' | 'starting' | 'listening' | 'closed' = 'idle';
  #address: { address: string; port: number } | undefined;

  constructor(options: BrokerOptions = {}) {
    super();
    const resolved = { ...BROKER_DEFAULTS, ...dropUndefined(options) } as ResolvedBrokerOptions;
    checkPort(resolved.port, 'broker port', true);
    for (const key of ['maxLifetimeMs', 'recipientTimeoutMs', 'exchangeIdleTimeoutMs', 'probeTimeoutMs', 'maxPendingAttempts'] as const) {
      const value = resolved[key];
      if (!Number.isInteger(value) || value <= 0) {
        throw new NattravError(ErrorCode.InvalidArgument, `broker option ${key} must be a positive integer, got ${String(value)}`);
      }
    }
    this.#options = resolved;
    this.#ownsRegistry = options.registry === undefined;
    this.#registry = options.registry ?? new MemoryRegistry();
    this.#rendezvous = new Rendezvous({
      registry: this.#registry,
      sendUdp: (message, to) => this.#sendUdp(message, to),
      reply: (channel, message) => channel.send(message, { software: this.#options.software, fingerprint: true }),
      recipientTimeoutMs: resolved.recipientTimeoutMs,
      probeTimeoutMs: resolved.probeTimeoutMs,
      maxPendingAttempts: resolved.maxPendingAttempts,
      emit: (event) => this.emit('event', event),
    });
  }

  /** The registry this broker uses. */
  get registry(): Registry {
    return this.#registry;
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

  /** Binds UDP and TCP on the same port and starts serving. Resolves with the bound address. */
  async listen(): Promise<{ address: string; port: number }> {
    if (this.#state === 'listening' && this.#address !== undefined) return this.address();
    if (this.#state !== 'idle') throw new NattravError(ErrorCode.Closed, `cannot listen: the broker is ${this.#state}`);
    this.#state = 'starting';
    const { host, port } = this.#options;
    let lastError: unknown;
    for (let i = 0; i < (port === 0 ? SAME_PORT_TRIES : 1); i++) {
      try {
        const tcp = await this.#listenTcp(host, port);
        const bound = (tcp.address() as { port: number }).port;
        try {
          this.#udp = await this.#bindUdp(host, bound);
        } catch (err) {
          await new Promise<void>((resolve) => tcp.close(() => resolve()));
          throw err;
        }
        this.#tcp = tcp;
        this.#address = { address: host, port: bound };
        this.#state = 'listening';
        this.emit('event', { type: 'listening', address: host, port: bound } satisfies BrokerEvent);
        this.emit('listening');
        return this.address();
      } catch (err) {
        lastError = err;
      }
    }
    this.#state = 'idle';
    const code = (lastError as { code?: string } | undefined)?.code ?? String(lastError);
    throw new NattravError(ErrorCode.InvalidArgument, `cannot listen on ${host}:${port}: ${code}`, {
      cause: lastError,
      address: host,
      port,
    });
  }

  /** Stops serving, drops every exchange, and closes the registry it created. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#rendezvous.close();
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all([
      new Promise<void>((resolve) => (this.#tcp ? this.#tcp.close(() => resolve()) : resolve())),
      new Promise<void>((resolve) => (this.#udp ? this.#udp.close(() => resolve()) : resolve())),
    ]);
    if (this.#ownsRegistry) await this.#registry.close();
    this.emit('close');
  }

  /** Same as {@link Broker.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #listenTcp(host: string, port: number): Promise<Server> {
    return new Promise((resolve, reject) => {
      const server = createServer((socket) => this.#onTcp(socket));
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.emit('error', err));
        resolve(server);
      });
    });
  }

  #bindUdp(host: string, port: number): Promise<UdpSocket> {
    return new Promise((resolve, reject) => {
      const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
      socket.once('error', reject);
      socket.bind({ address: host, port, exclusive: true }, () => {
        socket.off('error', reject);
        socket.on('error', (err) => this.emit('error', err));
        socket.on('message', (data, rinfo) => {
          void handleDatagram(
            {
              registry: this.#registry,
              maxLifetimeMs: this.#options.maxLifetimeMs,
              now: Date.now,
              send: (message, to) => this.#sendUdp(message, to),
              onResponse: (message) => this.#rendezvous.acknowledge(message),
              onRegistered: (uri, publicEndpoint, lifetimeMs) =>
                this.emit('event', { type: 'registered', uri, publicEndpoint, lifetimeMs } satisfies BrokerEvent),
              onBinding: (remote) => this.emit('event', { type: 'binding', transport: 'udp', remote } satisfies BrokerEvent),
            },
            data,
            rinfo.address,
            rinfo.port,
          );
        });
        resolve(socket);
      });
    });
  }

  #sendUdp(message: StunMessage, to: TransportAddress): void {
    if (this.#udp === undefined || this.#state !== 'listening') return;
    const bytes = encodeMessage(message, { software: this.#options.software, fingerprint: true });
    this.#udp.send(bytes, to.port, to.address, () => undefined);
  }

  #onTcp(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.setTimeout(this.#options.exchangeIdleTimeoutMs, () => socket.destroy());
    socket.setNoDelay(true);
    let role: 'none' | 'initiator' | 'recipient' = 'none';
    const channel: StunChannel = new StunChannel(socket, (message) => {
      if (message.cls !== MessageClass.Request) return;
      const reply = (response: StunMessage): void => {
        channel.send(response, { software: this.#options.software, fingerprint: true });
      };
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

function dropUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
