/**
 * A recipient's registration with the broker over UDP. The same socket sends the
 * periodic refreshes that keep the NAT mapping open and receives the broker's
 * connection requests through that mapping. When and how often it asks, and how it
 * retries a broker that is away (at start, or after a restart), is backoff.ts's
 * decision. Closing withdraws the registration (a refresh asking for LIFETIME 0), so
 * the URI is unknown at once, not after a lifetime.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { localEndpoints, type HostPort, toTransportAddress } from '../common/endpoint.js';
import { BrokerList, describeTarget, dialOf, type BrokerTarget } from './brokers.js';
import { abortError, startPhase } from '../common/signal.js';
import { StunChannel } from '../common/stun-channel.js';
import type { Dialer } from './dialer.js';
import { openBrokerConnection, secureBrokerConnection } from './exchange.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { learnAlternatePort } from './alternate-port.js';
import { KeepaliveLoop, type AttemptResult, type BackoffPolicy, type RegistrationKind, type RegistrationRetry } from './backoff.js';
import { decodeDatagram, encodeMessage, type EncodeOptions } from '../wire/codec.js';
import { registerWithProof, withdrawalRequest, type RegistrationKeys, type RegistrationSession } from './register-proof.js';
import { UdpTransactions } from './udp-transactions.js';
import { bindEphemeral, closeQuietly, settledWithin, WITHDRAWAL_SEND_BOUND_MS, withdrawAndClose } from './withdrawal.js';
import { AttrType, MessageClass, Method } from '../wire/constants.js';
import { ConnectionRequests, type AnswerRequest } from './connection-requests.js';
import { StunMessage } from '../wire/message.js';
import { addBoundEndpoint, addMappedEndpoint, addU32, addUri, addXorAddress, getU32Attr, getXorMappedAddress } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { addInstanceId, addTakeover } from '../wire/instance.js';
import { getOtherFamilyBroker } from '../wire/family.js';
import { answerInstanceCheck, newInstanceId } from './instance.js';
import { hostAddresses, normaliseAddress, RegistrationMoves, type AddressSet, type AddressWatch } from './mobility.js';

/** The registration's current state. */
export type RegistrationState = 'idle' | 'registering' | 'registered' | 'lost' | 'closed';

/** Result of one successful registration. */
export interface RegisteredInfo {
  readonly publicEndpoint: TransportAddress;
  readonly lifetimeMs: number;
  /** How the registration travels: UDP, or a TCP control connection when UDP is blocked. */
  readonly transport: 'udp' | 'tcp';
  /** The broker that granted it (one of those configured: with several, the one that answered). */
  readonly broker: HostPort;
  /** The address of that broker we registered with (a name with several addresses has several). */
  readonly brokerAddress: TransportAddress;
  /** That broker's address in the other family, when it announced one (OTHER-FAMILY-BROKER): where our second family registers (second-family.ts). */
  readonly otherFamilyBroker?: TransportAddress;
}

/** What 'registered' reports: the registration, and whether it is the first, a refresh, or registered again after a loss. */
export interface RegisteredEvent extends RegisteredInfo {
  /** 'first' after start, 'refresh' while it holds, 'again' after 'registration-lost' (the broker restarted, or was away). */
  readonly kind: RegistrationKind;
}

/** Options of {@link PeerRegistration}. */
export interface PeerRegistrationOptions {
  /**
   * The broker, or several in order of preference (a cluster sharing one registry): we
   * register with the first that answers and, when it stops answering, with the next.
   */
  readonly broker: HostPort | readonly HostPort[];
  readonly uri: string;
  readonly keepaliveMs: number;
  readonly lifetimeMs: number;
  readonly registerTimeoutMs: number;
  /** 'udp' only, 'tcp' only (a control connection), or 'auto': UDP, and TCP when UDP gets no answer. */
  readonly transport: 'auto' | 'udp' | 'tcp';
  /** The key to prove (and optionally a CA certificate, and the broker CA to demand). */
  readonly keys: RegistrationKeys;
  /** The broker's CA (PEM) for TLS on the control connection. */
  readonly brokerCa?: string;
  /** How the TCP control connection is opened (dialer.ts). @default direct */
  readonly dialer?: Dialer;
  /**
   * Decides on each new connection request (`datagram`: it asks for a datagram channel):
   * undefined accepts it ('connection-request' follows), a reason refuses it (answered 429
   * with that reason; 'connection-refused' follows). @default accept every request
   */
  readonly admit?: (attemptId: Uint8Array, datagram: boolean) => string | undefined;
  /** Our gateway's port mapping to register as MAPPED-ENDPOINT (read for every request). @default none */
  readonly mappedEndpoint?: () => TransportAddress | undefined;
  /** The address our SOCKS5 proxy bound for us, to register as BOUND-ENDPOINT (read for every request). @default none */
  readonly boundEndpoint?: () => TransportAddress | undefined;
  /** True: the first registration's failure ends start() (fail fast); else it is retried. @default false */
  readonly once?: boolean;
  /** How retries are spaced. @default REGISTRATION_BACKOFF (backoff.ts) */
  readonly backoff?: BackoffPolicy;
  /** This process's instance ID (instance.ts), sent in every Register. @default a new random one */
  readonly instanceId?: Uint8Array;
  /** Take the URI from another live instance of our key (the broker tells it). @default false: refused, ERR_URI_HELD_BY_INSTANCE */
  readonly takeover?: boolean;
  /** Where the host's address changes come from (mobility.ts). @default the process's {@link hostAddresses} */
  readonly addressWatch?: AddressWatch;
}

/** In 'auto', how long UDP may stay unanswered before switching to TCP, in ms (a few retransmissions). */
const UDP_TRY_MS = 2_000;
/**
 * With several brokers, how much of a keepalive interval goes to noticing a silent broker:
 * a refresh gets at most keepaliveMs / FAILOVER_SHARE (and never more than registerTimeoutMs),
 * and refreshes come that much, twice, before the interval ends. A broker that dies just after
 * a refresh is then noticed and left for the next one (whose registration takes about the same
 * again) within one keepalive interval of its death, as the cluster promises.
 */
const FAILOVER_SHARE = 4;

/** Errors that say a broker does not answer: another broker of the list may. */
const UNANSWERED: ReadonlySet<string> = new Set([ErrorCode.BrokerUnreachable, ErrorCode.Timeout]);

/** Errors no retry can cure: our own arguments and identity files. */
const INCURABLE: ReadonlySet<string> = new Set([ErrorCode.InvalidArgument, ErrorCode.Identity, ErrorCode.Closed, ErrorCode.UriHeldByInstance]);

/**
 * Emits 'registered' (RegisteredEvent) on every success, 'lost' (NattravError) once
 * when a registration we held is lost, 'retry' (RegistrationRetry) for each failed try that
 * will be retried, 'connection-request' ({ attemptId, joinAt? }) once per attempt the broker
 * announces and we accept (`joinAt`: the broker of the cluster to join at, one of ours), and 'connection-refused' ({ attemptId, reason }) once per
 * attempt `admit` refused. Also 'moved' (MovedEvent, mobility.ts) when a registration is made
 * from a new place, and 'taken-over' (NattravError ERR_TAKEN_OVER) once when another instance
 * of our key took the URI over: the registration is then closed.
 */
export class PeerRegistration extends EventEmitter {
  readonly #options: PeerRegistrationOptions;
  #socket: UdpSocket | undefined;
  #broker: TransportAddress | undefined;
  /** Our brokers (every address of each): where we register, and whom JOIN-AT may name. */
  readonly #brokers: BrokerList;
  #loop: KeepaliveLoop<RegisteredInfo> | undefined;
  #state: RegistrationState = 'idle';
  /** The connection requests of the current session (connection-requests.ts); a new session gets a new book. */
  readonly #requests = new ConnectionRequests();
  readonly #udp = new UdpTransactions();
  readonly #closing = new AbortController();
  #info: RegisteredInfo | undefined;
  /** The session after a proof of key (undefined with an open-mode broker). */
  #session: RegistrationSession | undefined;
  /** The last session we held, also after moving to another broker: a new proof shows it (PREVIOUS-SESSION), so it is us. */
  #lastSession: RegistrationSession | undefined;
  /** Set once registration runs over a TCP control connection (UDP blocked). */
  #control: StunChannel | undefined;
  #transport: 'udp' | 'tcp' = 'udp';
  /** The registration or refresh in flight, if any: close() lets it settle to know whether there is a session to withdraw. */
  #inflight: Promise<RegisteredInfo> | undefined;
  /** Set by the first close(): settles once the withdrawal left and the sockets closed. */
  #closed: Promise<void> | undefined;
  /** The refresh interval and the lifetime asked, in ms: the options', until {@link setKeepalive}. */
  #keepaliveMs: number;
  #lifetimeMs: number;
  readonly #instanceId: Uint8Array;
  readonly #watch: AddressWatch;
  /** Whether a registration is a move (mobility.ts). */
  readonly #moves = new RegistrationMoves();
  #unwatch: (() => void) | undefined;
  /** Tries started so far; with a change of addresses seen, the count then (a try started before it is from the old place). */
  #tries = 0;
  #movedAtTry: number | undefined;

  constructor(options: PeerRegistrationOptions) {
    super();
    this.#options = options;
    this.#keepaliveMs = options.keepaliveMs;
    this.#lifetimeMs = options.lifetimeMs;
    this.#brokers = new BrokerList(Array.isArray(options.broker) ? (options.broker as readonly HostPort[]) : [options.broker as HostPort]);
    this.#instanceId = options.instanceId ?? newInstanceId();
    this.#watch = options.addressWatch ?? hostAddresses;
  }

  /** Current state. */
  get state(): RegistrationState {
    return this.#state;
  }

  /** How the registration currently travels. */
  get transport(): 'udp' | 'tcp' {
    return this.#transport;
  }

  /** The broker in use (as configured), once one was tried. */
  get broker(): HostPort | undefined {
    return this.#brokers.current?.name;
  }

  /**
   * Where to join attempts of the broker in use: its name as configured (a certificate may
   * name it), or its address when the name has several (each may be another broker).
   */
  get joinBroker(): HostPort | undefined {
    return this.#brokers.joinBroker;
  }

  /**
   * Changes the refresh interval and the lifetime asked of the broker (adaptive-keepalive.ts):
   * the next refresh asks the new lifetime, and the interval after it is the new one.
   */
  setKeepalive(keepaliveMs: number, lifetimeMs: number): void {
    this.#keepaliveMs = keepaliveMs;
    this.#lifetimeMs = lifetimeMs;
  }

  /** Refreshes now (what we register changed); a no-op unless registered and idle. */
  refreshNow(): void {
    this.#loop?.refreshNow();
  }

  /** The last successful registration, if any. */
  get info(): RegisteredInfo | undefined {
    return this.#info;
  }

  /**
   * Binds the socket and registers, retrying with backoff (backoff.ts) until the broker
   * grants it, unless `once`; then refreshes every keepaliveMs until {@link close}, and
   * registers again when the registration is lost. Resolves with the first registration;
   * rejects with the failure that ended the start (with `once`, or our own configuration
   * is wrong) or ERR_CLOSED.
   */
  start(): Promise<RegisteredInfo> {
    if (this.#state !== 'idle') return Promise.reject(new NattravError(ErrorCode.Closed, `registration already ${this.#state}`));
    this.#state = 'registering';
    const loop = new KeepaliveLoop<RegisteredInfo>({
      attempt: () => this.#attempt(),
      keepaliveMs: this.#options.keepaliveMs,
      refreshMs: () => (this.#brokers.size > 1 ? this.#keepaliveMs - 2 * this.#noticeMs() : this.#keepaliveMs),
      ...(this.#options.backoff === undefined ? {} : { policy: this.#options.backoff }),
      once: this.#options.once === true,
      isFinal: (err) => !isNattravError(err) || INCURABLE.has(err.code),
      onRegistered: (info, kind) => {
        this.#state = 'registered';
        this.emit('registered', { ...info, kind } satisfies RegisteredEvent);
        // A try that started before the host's addresses changed was made from the old place: refresh again.
        if (this.#movedAtTry !== undefined && this.#tries <= this.#movedAtTry) queueMicrotask(() => this.#loop?.refreshNow());
        else this.#movedAtTry = undefined;
      },
      onLost: (err) => {
        this.#state = 'lost';
        this.emit('lost', err);
      },
      onRetry: (retry: RegistrationRetry) => this.emit('retry', retry),
    });
    this.#loop = loop;
    this.#unwatch = this.#watch.subscribe((addresses) => this.#onAddresses(addresses));
    return loop.start();
  }

  /**
   * The host's addresses changed (mobility.ts): refresh at once from the new place; a TCP
   * control connection whose local address is gone is closed, which registers again.
   */
  #onAddresses(addresses: AddressSet): void {
    if (this.#closed !== undefined || !this.#moves.stale(addresses)) return;
    this.#movedAtTry = this.#tries;
    const local = this.#control?.socket.localAddress;
    if (this.#transport === 'tcp' && local !== undefined && !addresses.has(normaliseAddress(local))) {
      this.#control?.destroy();
      return;
    }
    this.#loop?.refreshNow();
  }

  /** Another instance of our key took the URI over: say so once and close (the broker already gave it to the other one). */
  #takenOver(how: string): void {
    if (this.#closed !== undefined) return;
    this.emit('taken-over', new NattravError(ErrorCode.TakenOver, `${this.#options.uri} was taken over by another process holding the same key (${how}); stopped registering it`));
    void this.close();
  }

  /**
   * One try for the loop: the first registration (until one is granted), else a refresh on
   * the transport in use. A refresh the broker does not answer moves on to the next broker
   * at once (same URI and key, a new proof of key): the registration is back within the try.
   */
  async #attempt(): Promise<AttemptResult<RegisteredInfo>> {
    const before = this.#session;
    this.#tries++;
    if (this.#info === undefined) return { info: await this.#sweep(), renewed: false };
    try {
      const info = await this.#register(undefined, this.#brokers.size > 1 ? this.#noticeMs() : undefined);
      // A held session replaced by a new one: the broker had forgotten us (restart, expiry, a closed control connection).
      return { info, renewed: before !== undefined && this.#session !== before };
    } catch (err) {
      this.#throwIfClosed();
      this.#moves.refreshFailed();
      // We held the URI and the broker says another live instance of our key holds it now: it took over.
      if (isNattravError(err, ErrorCode.UriHeldByInstance)) {
        this.#takenOver('the broker refused our registration again');
        this.#throwIfClosed();
      }
      if (!isNattravError(err) || !UNANSWERED.has(err.code) || this.#brokers.size < 2) throw err;
      return { info: await this.#sweep(), renewed: true, lost: err };
    }
  }

  /** With several brokers, the time limit of a refresh: how long a silent broker takes to be noticed (FAILOVER_SHARE). */
  #noticeMs(): number {
    return Math.min(this.#options.registerTimeoutMs, Math.floor(this.#keepaliveMs / FAILOVER_SHARE));
  }

  /**
   * Registers with the brokers in turn until one grants it (brokers.ts), each try bounded by
   * registerTimeoutMs. Only a broker that does not answer passes the turn on; a refusal is
   * the cluster's answer (they share a registry) and ends the sweep.
   */
  #sweep(): Promise<RegisteredInfo> {
    const register = (target: BrokerTarget): Promise<RegisteredInfo> => {
      this.#use(target);
      return this.#first();
    };
    return this.#brokers.firstAnswering(register, (err) => this.#closed === undefined && isNattravError(err) && UNANSWERED.has(err.code), this.#closing.signal);
  }

  /** Moves to `target`: a new broker is a new socket, a new session and a new registration. */
  #use(target: BrokerTarget): void {
    if (this.#broker !== undefined && this.#broker.address === target.address.address && this.#broker.port === target.address.port) return;
    closeQuietly(this.#socket);
    this.#control?.destroy();
    this.#socket = undefined;
    this.#control = undefined;
    this.#broker = undefined;
    this.#session = undefined;
    this.#info = undefined;
  }

  /** Binds our UDP socket towards the broker in use (once per broker). */
  async #open(): Promise<void> {
    this.#broker = (this.#brokers.current as BrokerTarget).address;
    const socket = createSocket({ type: this.#broker.family === 'IPv6' ? 'udp6' : 'udp4' });
    this.#socket = socket;
    socket.on('message', (data, rinfo) => this.#onMessage(data, rinfo.address, rinfo.port));
    socket.on('error', () => undefined);
    await bindEphemeral(socket, this.#closing.signal);
  }

  /** The first registration: UDP, TCP, or in 'auto' UDP and then TCP when UDP gets no answer. */
  async #first(): Promise<RegisteredInfo> {
    if (this.#socket === undefined) await this.#open();
    const mode = this.#options.transport;
    if (mode === 'tcp') {
      this.#transport = 'tcp';
      return this.#register();
    }
    // A control connection left by a refused try in 'auto' is not reused: this try starts over on UDP.
    this.#control?.destroy();
    this.#control = undefined;
    this.#transport = 'udp';
    try {
      return await this.#register(undefined, mode === 'auto' ? Math.min(UDP_TRY_MS, this.#options.registerTimeoutMs) : undefined);
    } catch (err) {
      if (mode !== 'auto' || !(err instanceof NattravError) || err.code !== ErrorCode.BrokerUnreachable) throw err;
      this.#throwIfClosed();
      // No UDP answer: register over a TCP control connection instead (NatTrav's TCP registration).
      this.#transport = 'tcp';
      try {
        return await this.#register();
      } catch (tcpErr) {
        if (!(tcpErr instanceof NattravError)) throw tcpErr;
        throw new NattravError(tcpErr.code, `over UDP: ${err.message}; over TCP: ${tcpErr.message}`, { cause: tcpErr });
      }
    }
  }

  /** The key of the current session with the broker (undefined before the first answer and in open mode). */
  get sessionKey(): Buffer | undefined {
    return this.#session?.key;
  }

  /** The current session itself: a second family's refreshes (second-family.ts) take their SEQUENCE from it too. */
  get session(): RegistrationSession | undefined {
    return this.#session;
  }

  /**
   * A message from the broker that arrived on another socket of ours, `via` the broker address
   * it talks to (our second family's, second-family.ts): a ConnectionRequest there is handled as
   * ours, and the attempt is joined at `via` (in that family) unless it names a JOIN-AT.
   */
  receive(message: StunMessage, answer: AnswerRequest, via: TransportAddress): void {
    this.#onConnectionRequest(message, answer, via);
  }

  /**
   * Stops refreshing, withdraws the registration when one was granted (one unanswered
   * message under the session: the broker forgets the URI at once), and closes the
   * sockets. Safe during {@link start}, which then rejects with ERR_CLOSED. Idempotent:
   * every call returns the same promise, which settles (never rejects) once the
   * withdrawal was sent, within about {@link WITHDRAWAL_SEND_BOUND_MS} ms.
   */
  close(): Promise<void> {
    if (this.#closed !== undefined) return this.#closed;
    this.#state = 'closed';
    this.#unwatch?.();
    this.#loop?.close(new NattravError(ErrorCode.Closed, 'the registration was closed'));
    this.#closed = this.#release();
    return this.#closed;
  }

  /** Throws ERR_CLOSED once close() was called (start() checks after each await). */
  #throwIfClosed(): void {
    if (this.#closed !== undefined) throw new NattravError(ErrorCode.Closed, 'the registration was closed');
  }

  /**
   * What close() does once the state is 'closed': stop the exchange in flight, send the
   * withdrawal on the transport the registration uses, close both sockets.
   */
  async #release(): Promise<void> {
    // A proof of key in flight may be granted any moment: give it the bound, so that what
    // the broker grants is withdrawn too. Anything else in flight is stopped at once.
    const granting = this.#session === undefined ? this.#inflight : undefined;
    if (granting !== undefined) await settledWithin(granting, WITHDRAWAL_SEND_BOUND_MS);
    this.#closing.abort(new NattravError(ErrorCode.Closed, 'the registration was closed'));
    // An answer already taken off the socket still completes its exchange: let it (microtasks).
    if (this.#inflight !== undefined) await settledWithin(this.#inflight, WITHDRAWAL_SEND_BOUND_MS);
    const withdrawal = this.#info === undefined ? undefined : withdrawalRequest(this.#options.uri, this.#session);
    await withdrawAndClose(withdrawal, this.#transport, this.#socket, this.#control, this.#broker);
  }

  /**
   * One registration or refresh, with proof of key (register-proof.ts), over UDP
   * with retransmissions or on the TCP control connection. The whole exchange
   * (challenge and answer) shares one time limit.
   */
  #register(signal?: AbortSignal, timeoutMs?: number): Promise<RegisteredInfo> {
    const exchange = this.#exchangeOnce(signal, timeoutMs);
    this.#inflight = exchange;
    const settled = (): void => {
      if (this.#inflight === exchange) this.#inflight = undefined;
    };
    exchange.then(settled, settled);
    return exchange;
  }

  async #exchangeOnce(signal?: AbortSignal, timeoutMs?: number): Promise<RegisteredInfo> {
    const { uri } = this.#options;
    const lifetimeMs = this.#lifetimeMs;
    const target = this.#brokers.current as BrokerTarget;
    const broker = dialOf(target);
    const outer = signal === undefined ? this.#closing.signal : AbortSignal.any([signal, this.#closing.signal]);
    let connection: Socket | undefined;
    if (this.#transport === 'tcp' && (this.#control === undefined || this.#control.socket.destroyed)) {
      // The TCP connect has its own limit: a silent firewall is reported as blocked traffic, not as a registration timeout.
      connection = await openBrokerConnection(broker, outer, undefined, this.#options.dialer);
    }
    const where = this.#transport === 'tcp' ? 'over TCP ' : '';
    const phase = startPhase(outer, timeoutMs ?? this.#options.registerTimeoutMs, `registering ${uri} ${where}with broker ${describeTarget(target)}`);
    try {
      if (connection !== undefined) {
        // STARTTLS and the TLS handshake are under the registration's limit: a silent broker cannot hold us.
        const { brokerCa } = this.#options;
        const socket = brokerCa === undefined ? connection : await secureBrokerConnection(connection, target.name, brokerCa, phase.signal);
        const channel: StunChannel = new StunChannel(socket, (message) =>
          this.#onConnectionRequest(message, (response, options) => channel.send(response, options)),
        );
        this.#control = channel;
        // The control connection closing takes the registration with it: register again without waiting for the next refresh.
        void channel.closed.then(() => {
          if (this.#control === channel && this.#inflight === undefined) {
            this.#loop?.interrupt(new NattravError(ErrorCode.BrokerUnreachable, 'broker unreachable: the control connection closed'));
          }
        });
        this.#session = undefined; // a new connection is a new source: prove the key again
      }
      const { response, session } = await registerWithProof(
        (request, options) => this.#transact(request, phase.signal, options),
        () => this.#baseRequest(),
        // The broker's certificate may name the host as configured (not the address dialled).
        this.#options.keys.brokerCa === undefined ? this.#options.keys : { ...this.#options.keys, brokerHost: target.name.host },
        uri,
        lifetimeMs,
        this.#transport,
        this.#session,
        this.#session ?? this.#lastSession,
      );
      this.#session = session;
      this.#lastSession = session ?? this.#lastSession;
      return this.#registered(response);
    } catch (err) {
      if (err instanceof NattravError && err.code === ErrorCode.Timeout && this.#transport === 'udp') {
        const target = this.#broker as TransportAddress;
        throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: ${err.message}`, { cause: err, address: target.address, port: target.port });
      }
      throw err instanceof NattravError ? err : phase.error();
    } finally {
      phase.dispose();
    }
  }

  /** A Register request with URI, LIFETIME and our private endpoints. */
  #baseRequest(): StunMessage {
    const request = StunMessage.request(Method.Register);
    addUri(request, this.#options.uri);
    addU32(request, AttrType.Lifetime, this.#lifetimeMs);
    const family = (this.#broker as TransportAddress).family;
    if (this.#transport === 'tcp') {
      const socket = (this.#control as StunChannel).socket;
      addXorAddress(request, AttrType.PrivateEndpoint, toTransportAddress(socket.localAddress ?? '0.0.0.0', socket.localPort ?? 0));
    } else {
      const port = (this.#socket as UdpSocket).address().port;
      for (const endpoint of localEndpoints(port, family)) addXorAddress(request, AttrType.PrivateEndpoint, endpoint);
    }
    const mapped = this.#options.mappedEndpoint?.();
    if (mapped !== undefined) addMappedEndpoint(request, mapped);
    const bound = this.#options.boundEndpoint?.();
    if (bound !== undefined) addBoundEndpoint(request, bound);
    addInstanceId(request, this.#instanceId);
    if (this.#options.takeover === true) addTakeover(request);
    return request;
  }

  /** One request/response: UDP with doubling retransmissions, or a request on the control connection. */
  async #transact(request: StunMessage, signal: AbortSignal, options: EncodeOptions = {}): Promise<StunMessage> {
    if (this.#transport === 'tcp') {
      const control = this.#control as StunChannel;
      return control.request(request, signal, { fingerprint: true, ...options }).catch((err: unknown) => {
        control.destroy();
        if (signal.aborted) throw abortError(signal);
        throw new NattravError(ErrorCode.BrokerUnreachable, `broker unreachable: the control connection closed (${err instanceof Error ? err.message : String(err)})`, { cause: err });
      });
    }
    return this.#udp.request(this.#socket as UdpSocket, this.#broker as TransportAddress, request, signal, options);
  }

  /** Records a successful registration. */
  #registered(response: StunMessage): RegisteredInfo {
    const publicEndpoint = getXorMappedAddress(response);
    if (publicEndpoint === undefined) throw new NattravError(ErrorCode.Protocol, 'registration response without XOR-MAPPED-ADDRESS');
    const target = this.#brokers.current as BrokerTarget;
    const other = otherFamilyOf(response);
    const info = {
      publicEndpoint, lifetimeMs: getU32Attr(response, AttrType.Lifetime) ?? this.#lifetimeMs, transport: this.#transport, broker: target.name, brokerAddress: target.address,
      ...(other === undefined ? {} : { otherFamilyBroker: other }),
    };
    learnAlternatePort(dialOf(target), response); // where our mapping probes will go
    const moved = this.#moves.granted(publicEndpoint, this.#watch.current, { broker: target.address, transport: this.#transport });
    this.#info = info; // also when granted while closing: close() withdraws it
    if (moved !== undefined && this.#closed === undefined) this.emit('moved', moved);
    return info;
  }

  /** A ConnectionRequest from the broker (connection-requests.ts answers it); emits what was decided. */
  #onConnectionRequest(message: StunMessage, answer: AnswerRequest, via?: TransportAddress): void {
    // Closing: the sockets live on only to finish a proof and send the withdrawal.
    if (this.#closed !== undefined) return;
    const check = answerInstanceCheck(message, this.#session, this.#instanceId, answer);
    if (check === 'takenOver') this.#takenOver('the broker told us');
    if (check !== undefined) return;
    // A relayed request (JOIN-AT) may send us only to a broker we trust (brokers.ts).
    const admit = (attemptId: Uint8Array, joinAt: TransportAddress | undefined, datagram: boolean): string | undefined =>
      this.#brokers.joinAtRefusal(joinAt, this.#options.brokerCa) ?? this.#options.admit?.(attemptId, datagram);
    const decided = this.#requests.handle(message, this.#session, admit, answer);
    if (decided === undefined) return;
    const { attemptId, reason, joinAt, datagram } = decided;
    const where = joinAt ?? via;
    const at = where === undefined ? {} : { joinAt: { host: where.address, port: where.port } };
    if (reason === undefined) this.emit('connection-request', { attemptId, datagram, ...at });
    else this.emit('connection-refused', { attemptId, reason });
  }

  #onMessage(data: Buffer, address: string, port: number): void {
    const broker = this.#broker;
    if (broker === undefined) return;
    const from = toTransportAddress(address, port);
    if (from.address !== broker.address || from.port !== broker.port) return; // only the broker may talk here
    const message = decodeDatagram(data);
    if (message === undefined) return;
    if (message.cls === MessageClass.SuccessResponse || message.cls === MessageClass.ErrorResponse) {
      this.#udp.deliver(message);
      return;
    }
    this.#onConnectionRequest(message, (response, options) =>
      this.#socket?.send(encodeMessage(response, options), port, address, () => undefined),
    );
  }
}

/** OTHER-FAMILY-BROKER of a registration answer, when well formed and of the other family than the broker we asked. */
function otherFamilyOf(response: StunMessage): TransportAddress | undefined {
  try {
    return getOtherFamilyBroker(response);
  } catch {
    return undefined;
  }
}
