/**
 * The broker's TCP side: accepting connections under the caps and deadlines of
 * tcp-deadlines.ts, STARTTLS, and serving STUN on each connection: Binding, the
 * exchanges of an attempt (rendezvous.ts), mapping probes, relays (relay.ts), and
 * the control connections of recipients whose UDP is blocked (register.ts).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { toTransportAddress } from '../common/endpoint.js';
import type { TimerHandle } from '../common/clock.js';
import { StunChannel } from '../common/stun-channel.js';
import { beforeTls, isWebSocketStream } from '../common/websocket-stream.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addXorAddress, getAttemptId, getRole, type RoleName } from '../wire/nattrav.js';
import type { BrokerEvent } from './events.js';
import { failureAnswer } from './failure.js';
import type { BrokerGuard } from './guard.js';
import type { ResolvedBrokerOptions } from './options.js';
import { handleRegister, type RegisterAuth } from './register.js';
import type { Registry } from './registry/registry.js';
import type { RelayHub } from './relay.js';
import type { AnswerSource, Rendezvous } from './rendezvous.js';
import type { WorkerRouter } from './workers/worker-router.js';
import { ConnectionTable, type ConnectionRole } from './tcp-deadlines.js';

/** TLS on the broker's TCP channel: 1.3 only. */
const TLS_VERSION = 'TLSv1.3';

/** What TCP serving needs from the broker around it. */
export interface TcpContext {
  readonly options: ResolvedBrokerOptions;
  readonly registry: Registry;
  readonly auth: RegisterAuth;
  readonly guard: BrokerGuard;
  readonly rendezvous: Rendezvous;
  readonly relay: RelayHub;
  emit(event: BrokerEvent): void;
  /** A registration was withdrawn by its holder (LIFETIME 0). */
  withdrawn(uri: string, transport: 'udp' | 'tcp'): void;
  /** The broker's alternate port once listening (announced in registration answers). */
  alternatePort(): number | undefined;
  /** The broker's bus ID in a cluster (stored in the registrations it takes). */
  readonly brokerId?: string;
  /** A recipient answered a connection request on its control connection (the broker passes it to the attempt's rendezvous). */
  acknowledge(message: StunMessage, source: AnswerSource): void;
  /** With `--workers`: what belongs to an attempt another worker runs goes there (workers/worker-router.ts). */
  readonly router?: WorkerRouter;
}

/** The role of a connection in {@link TcpService.serve}'s dispatch. */
type ServedRole = 'none' | 'initiator' | 'recipient' | 'relay' | 'control' | 'standby';

/** A standby (standby.ts) lives like a control connection: its refreshes keep it, its registration ends it. */
const DEADLINE_ROLE: Record<ServedRole, ConnectionRole> = { none: 'new', initiator: 'attempt', recipient: 'attempt', relay: 'relay', control: 'control', standby: 'control' };

/** Serves TCP for one broker: its servers, its connections and its recipients' control connections. */
export class TcpService {
  readonly #ctx: TcpContext;
  readonly #connections: ConnectionTable<Socket>;
  /** TCP control connections of recipients whose UDP is blocked, by URI. */
  readonly #controls = new Map<string, StunChannel>();
  readonly #sockets = new Set<Socket>();
  /** The next sweep, on the broker's clock, while any connection is open. */
  #sweeper: TimerHandle | undefined;
  #closed = false;

  constructor(ctx: TcpContext) {
    this.#ctx = ctx;
    const { limits } = ctx.guard;
    this.#connections = new ConnectionTable(
      {
        firstMessageMs: limits.firstMessageTimeoutMs,
        messageMs: ctx.options.messageTimeoutMs,
        lifetimeMs: ctx.options.exchangeMaxLifetimeMs,
        maxConnections: limits.maxConnections,
        maxConnectionsPerSource: limits.maxConnectionsPerSource,
      },
      () => ctx.options.clock.now(),
    );
  }

  /** Open connections (bounded by limits `maxConnections`). */
  get connections(): number {
    return this.#connections.size;
  }

  /** The control connection of `uri`'s recipient, if it registered over TCP. */
  control(uri: string): StunChannel | undefined {
    return this.#controls.get(uri);
  }

  /** Listens on `host:port`; resolves with the server once it listens. */
  listen(host: string, port: number): Promise<Server> {
    return new Promise((resolve, reject) => {
      // Not allowHalfOpen: an exchange ends both ways at the first FIN, as it always did (the lab's
      // full-cone NAT then keeps the punch port's mapping usable). The relay turns half-close on
      // for its own sockets when it splices them (relay.ts).
      const server = createServer((socket) => this.#accept(socket));
      server.once('error', reject);
      // Workers of one broker share the primary's listening socket (Node cluster deals connections round robin).
      server.listen({ host, port, exclusive: this.#ctx.router === undefined }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.#ctx.emit({ type: 'warning', message: `TCP server on ${host}:${port}: ${err.message}` }));
        resolve(server);
      });
    });
  }

  /** Checks every connection's deadlines now (the sweeper does it every `sweepIntervalMs` while connections are open). */
  sweep(): void {
    for (const { handle, source, expiry } of this.#connections.expired()) {
      this.#ctx.guard.limited({ kind: expiry, source });
      handle.destroy();
    }
  }

  /** Sweeps every `sweepIntervalMs` on the broker's clock until no connection is left (the next accept starts it again). */
  #scheduleSweep(): void {
    if (this.#sweeper !== undefined || this.#closed) return;
    const { clock } = this.#ctx.options;
    this.#sweeper = clock.setTimeout(() => {
      this.#sweeper = undefined;
      this.sweep();
      if (this.#connections.size > 0) this.#scheduleSweep();
    }, this.#connections.sweepIntervalMs);
  }

  /** Closes every connection; no more are served. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#ctx.options.clock.clearTimeout(this.#sweeper);
    this.#sweeper = undefined;
    for (const socket of this.#sockets) socket.destroy();
  }

  /** Serves a stream that stands for a TCP connection (a WebSocket, websocket.ts) under the same caps and deadlines. */
  accept(socket: Socket): void {
    this.#accept(socket);
  }

  #accept(socket: Socket): void {
    const source = socket.remoteAddress ?? '?';
    if (this.#closed || !this.#ctx.guard.acceptTcp(source)) {
      socket.destroy();
      return;
    }
    const admission = this.#connections.admit(source);
    if (admission.verdict !== 'ok') {
      this.#ctx.guard.limited({ kind: admission.verdict === 'total' ? 'connections' : 'connections-per-source', source });
      socket.destroy();
      return;
    }
    if (admission.evicted !== undefined) {
      this.#ctx.guard.limited({ kind: 'evicted', source: admission.evicted.remoteAddress ?? '?' });
      admission.evicted.destroy();
    }
    this.#connections.add(socket, source);
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      this.#connections.remove(socket);
    });
    this.#scheduleSweep();
    socket.setTimeout(this.#ctx.options.exchangeIdleTimeoutMs, () => socket.destroy());
    socket.setNoDelay(true);
    this.#serve(socket, socket);
  }

  /**
   * Serves a Relay connection another worker accepted and moved here (`--workers`: this
   * worker authorized the attempt's relay). `early`: bytes that came after the request.
   */
  adoptRelay(socket: Socket, attemptId: string, role: RoleName, request: StunMessage, early: Buffer): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.setNoDelay(true);
    if (early.length > 0) socket.unshift(early);
    const channel = new StunChannel(socket, () => undefined);
    this.#ctx.relay.join(attemptId, role, channel, request);
    socket.resume();
  }

  /** Feeds what arrives on `socket` (plain, or decrypted TLS) to the deadlines of `raw`; returns how to stop. */
  #track(socket: Socket, raw: Socket): () => void {
    const listener = (chunk: Buffer): void => this.#connections.received(raw, chunk);
    // Before the channel's own listener, so a message's bytes count before it is served.
    socket.prependListener('data', listener);
    return () => socket.off('data', listener);
  }

  /**
   * STARTTLS: answer in clear, then run TLS 1.3 as server on the same socket and
   * serve it again, encrypted. The peer sends nothing until it has our answer,
   * so no byte is left behind in the plain stream. The handshake has the deadline
   * of a message.
   */
  #startTls(raw: Socket, channel: StunChannel, request: StunMessage, untrack: () => void): void {
    const { cert, key, software } = this.#ctx.options;
    if (cert === undefined || key === undefined) {
      channel.send(request.errorResponse(StunErrorCode.BadRequest, 'this broker has no certificate'), { software, fingerprint: true });
      channel.end();
      return;
    }
    channel.send(request.successResponse(), { fingerprint: true });
    const early = channel.detach();
    untrack();
    if (early.length > 0) {
      raw.destroy(); // bytes before the handshake: not a well-behaved peer
      return;
    }
    this.#connections.handshaking(raw);
    const secure = new TLSSocket(beforeTls(raw), { isServer: true, cert, key, minVersion: TLS_VERSION, maxVersion: TLS_VERSION });
    secure.on('error', () => raw.destroy());
    secure.once('secure', () => {
      this.#connections.handshaken(raw);
      this.#serve(secure, raw);
    });
  }

  /** Register over TCP (`web`: over a WebSocket): keep the channel so connection requests can go down it. */
  #registerControl(channel: StunChannel, request: StunMessage, web: boolean): void {
    const { software, maxLifetimeMs } = this.#ctx.options;
    const socket = channel.socket;
    const remote = toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0);
    handleRegister(
      {
        registry: this.#ctx.registry,
        maxLifetimeMs,
        auth: this.#ctx.auth,
        now: Date.now,
        reply: (message, options) => channel.send(message, { software, fingerprint: true, ...options }),
        onRegistered: (uri, publicEndpoint, lifetimeMs, refresh) => {
          this.#ctx.guard.registered(uri, publicEndpoint.address, lifetimeMs);
          this.#ctx.emit({ type: 'registered', uri, publicEndpoint, lifetimeMs, refresh, transport: 'tcp' });
        },
        onWithdrawn: (uri, transport) => this.#ctx.withdrawn(uri, transport),
        alternatePort: () => this.#ctx.alternatePort(),
        ...(this.#ctx.brokerId === undefined ? {} : { brokerId: this.#ctx.brokerId }),
        ...(web ? { web } : {}),
      },
      request,
      remote,
      'tcp',
    ).then(
      (uri) => {
        if (uri === undefined || this.#controls.get(uri) === channel) return;
        this.#controls.set(uri, channel);
        void channel.closed.then(() => this.#controlClosed(uri, channel, remote));
      },
      (err: unknown) => channel.send(failureAnswer(request, err), { software, fingerprint: true }),
    );
  }

  /**
   * A control connection closed: nobody can reach its recipient any more. If the
   * registration is still this connection's, drop it, free its place under the
   * registration caps, and end its session. Never rejects: a registry that fails
   * (a remote one) is reported as a warning.
   */
  async #controlClosed(uri: string, channel: StunChannel, remote: { address: string; port: number }): Promise<void> {
    if (this.#controls.get(uri) !== channel) return;
    this.#controls.delete(uri);
    try {
      const current = await this.#ctx.registry.get(uri);
      const ours = current?.transport === 'tcp' && current.publicEndpoint.port === remote.port && current.publicEndpoint.address === remote.address;
      // Only if nothing replaced it meanwhile (the peer may already be registered again, through another broker).
      if (!ours || !(await this.#ctx.registry.deleteIf(current))) return;
      this.#ctx.guard.unregistered(uri);
      await this.#ctx.auth.sessions.drop(uri);
    } catch (err) {
      this.#ctx.emit({ type: 'warning', message: `dropping ${uri} after its control connection closed: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  /** Serves STUN on `socket` (plain, or TLS over `raw`). */
  #serve(socket: Socket, raw: Socket): void {
    const { software, maxLifetimeMs } = this.#ctx.options;
    const { guard, rendezvous, relay, router } = this.#ctx;
    let role: ServedRole = 'none';
    const secured = socket !== raw;
    const setRole = (next: ServedRole): void => {
      role = next;
      this.#connections.setRole(raw, DEADLINE_ROLE[next]);
    };
    const untrack = this.#track(socket, raw);
    const channel: StunChannel = new StunChannel(socket, (message) => {
      if (message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse) {
        // A recipient answering a connection request on its control connection (rendezvous.ts checks it is the URI's).
        if (role === 'control') this.#ctx.acknowledge(message, { transport: 'tcp', from: toTransportAddress(raw.remoteAddress ?? '0.0.0.0', raw.remotePort ?? 0) });
        else router?.response(channel, message);
        return;
      }
      if (message.cls !== MessageClass.Request) return;
      const reply = (response: StunMessage): void => {
        channel.send(response, { software, fingerprint: true });
        guard.writable(socket);
      };
      const verdict = guard.tcpRequest(socket, message);
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
          this.#ctx.emit({ type: 'binding', transport: 'tcp', remote });
          return;
        }
        case Method.Connect:
        case Method.Join: {
          if (role !== 'none') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'one attempt per exchange'));
            return;
          }
          const initiator = message.method === Method.Connect;
          setRole(initiator ? 'initiator' : 'recipient');
          if (!initiator && router?.join(channel, message) === true) return;
          const run = initiator ? rendezvous.connect(channel, message) : rendezvous.join(channel, message);
          run.catch((err: unknown) => {
            reply(failureAnswer(message, err));
            channel.end();
          });
          return;
        }
        case Method.Standby: {
          if (role !== 'none') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'Standby must open its connection'));
            channel.end();
            return;
          }
          // One per connection; a control connection's deadlines only once held (a refused one stays evictable).
          role = 'standby';
          void rendezvous.standby(channel, message).then((held) => {
            if (!held) return;
            this.#connections.setRole(raw, DEADLINE_ROLE.standby);
            socket.setTimeout(maxLifetimeMs, () => socket.destroy());
          }, () => socket.destroy());
          return;
        }
        case Method.Register: {
          if (role !== 'none' && role !== 'control') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'Register on an exchange connection'));
            return;
          }
          setRole('control');
          // A control connection lives as long as its registration; refreshes keep it busy.
          socket.setTimeout(maxLifetimeMs, () => socket.destroy());
          this.#registerControl(channel, message, isWebSocketStream(raw));
          return;
        }
        case Method.StartTls:
          if (role !== 'none' || secured) {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'StartTls must come first, once'));
            return;
          }
          this.#startTls(raw, channel, message, untrack);
          return;
        case Method.MappingProbe:
          if (router?.mappingProbe(channel, message) !== true) rendezvous.mappingProbe(channel, message);
          return;
        case Method.Relay: {
          const parsed = parseRelay(message);
          if (parsed === undefined || role !== 'none') {
            reply(message.errorResponse(StunErrorCode.BadRequest, 'Relay needs ATTEMPT-ID and ROLE, once per connection'));
            channel.end();
            return;
          }
          // From here the connection carries application bytes: the relay's quotas bound it, not STUN deadlines.
          setRole('relay');
          untrack();
          const attemptId = Buffer.from(parsed.id).toString('hex');
          if (router?.relay(channel, raw, secured, attemptId, parsed.role, message) !== true) relay.join(attemptId, parsed.role, channel, message);
          return;
        }
        default:
          reply(message.errorResponse(StunErrorCode.BadRequest, `method 0x${message.method.toString(16)} is not served over TCP`));
      }
    });
  }
}

/** A Relay request's attempt ID and role (wire/nattrav.ts ROLE); undefined when either is missing or malformed. */
function parseRelay(request: StunMessage): { id: Uint8Array; role: RoleName } | undefined {
  try {
    const id = getAttemptId(request);
    const role = getRole(request);
    return id === undefined || role === undefined ? undefined : { id, role };
  } catch {
    return undefined;
  }
}
