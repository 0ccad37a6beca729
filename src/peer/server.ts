/**
 * The recipient: registers a URI with the broker over UDP and, for each
 * connection request the broker forwards, joins the attempt over a fresh TCP
 * exchange and opens the direct connection by simultaneous open. It serves until
 * closed: a broker that is away at start, or restarts, is tried again with backoff
 * (backoff.ts), unless `once`.
 *
 * Events, as `net.Server`: 'listening' (first registration done), 'connection'
 * (NattravSocket), 'error' (only with `once`, or when our own configuration is wrong:
 * the first registration failed), 'close'. Also:
 * - 'registered' (RegisteredEvent): each registration; `kind` is 'first', 'refresh' (each
 *   keepalive) or 'again' (after 'registrationLost');
 * - 'registrationLost' (NattravError, the reason): the registration we held is gone (a
 *   refresh failed, or the broker had forgotten it: it restarted); tries follow. Also
 *   emitted as 'unregistered', its former name;
 * - 'registrationRetry' (RegistrationRetryEvent): a try failed, at start or after a loss, and
 *   the next comes in `delayMs`;
 * - 'datagram' (DatagramChannel): an initiator's `connectDatagram()` opened a datagram
 *   channel to us (datagram/accept.ts; refused, in the answer to the request, without a
 *   listener, with an allow-list, or when a proxy or tunnel is our way to the broker);
 * - 'attemptFailed' (NattravError: one incoming attempt did not complete);
 * - 'attemptRefused' ({ attemptId, reason }: a connection request refused because
 *   `maxConcurrentAttempts` attempts were running, the sockets of `maxAttemptSockets`
 *   were spent, or a datagram channel cannot be taken; the initiator fails at once with
 *   that reason);
 * - 'connectionRejected' (ConnectionRejection): an initiator that proved an identity not
 *   in `allow` was refused after the TLS handshake; it sees ERR_NOT_ALLOWED with the reason.
 * - 'portmap' (PortMapperEvent): our gateway's port mapping was made, renewed, re-added or
 *   deleted (portmap-agent.ts; a changed mapping is registered again at once).
 * - 'keepalive' (KeepaliveEvent): adaptive keepalive set the refresh interval from the measured
 *   NAT mapping lifetime; 'keepaliveFailed' (NattravError): that measurement failed (adaptive-keepalive.ts).
 * - 'socks5Bind' (Socks5BindEvent): our BIND at the SOCKS5 proxy was bound, used, lost or
 *   refused (socks5-bind.ts; a new bound address is registered again at once).
 * - 'moved' (MovedEvent): the host moved (its addresses or its public endpoint changed) and the
 *   URI is registered from the new place (mobility.ts); connections whose address went away
 *   close with ERR_CONNECTION_BROKEN.
 * - 'standby' (StandbyEvent, standby.ts): our standby exchange opened, took an attempt (no
 *   connection request, no Join), or was lost (the next try follows).
 * - 'takenOver' (NattravError ERR_TAKEN_OVER): another process with our key took the URI over
 *   (`takeover`); the server closes ('close' follows).
 */
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Identity } from '../security/identity.js';
import { keptKey } from '../security/kept-key.js';
import { keyFingerprint, keyPairFromPrivatePem, type KeyPairPem } from '../security/keys.js';
import type { RegistrationKeys } from './register-proof.js';
import { performance } from 'node:perf_hooks';
import type { HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addAttemptId } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { runAttempt } from './attempt.js';
import type { ExchangeResult } from './exchange.js';
import { keepStandby, type KeptStandby } from './standby.js';
import { datagramRefusal, joinDatagram } from './datagram/accept.js';
import { handOver, type NattravSocket } from './info.js';
import { PEER_DEFAULTS, type ServerOptions } from './options.js';
import { PeerRegistration, type RegisteredEvent } from './registration.js';
import { secondFamilyOf, type SecondFamilyRegistration } from './second-family.js';
import type { MovedEvent } from './mobility.js';
import { REGISTRATION_BACKOFF, type RegistrationRetry } from './backoff.js';
import { allowList, checkUri, positiveInt } from './validate.js';
import { toBrokerList } from './brokers.js';
import type { VerifiedPeer } from '../security/verify.js';
import { SocketBudget } from './strategies/socket-budget.js';
import { registerTransportOf, type Dialer } from './dialer.js';
import { adaptKeepalive, adaptiveKeepaliveSettings, type AdaptiveKeepaliveSettings, type KeepaliveAdapter } from './adaptive-keepalive.js';
import { dialerFromOptions, isSocks5Dialer } from './socks5.js';
import type { Socks5BindAgent } from './socks5-bind.js';
import { PortmapAgent, checkPortmapOption, portmapAllowed, type PortmapSettings } from './portmap-agent.js';

/**
 * Sockets reserved for each incoming attempt: its broker exchange, its mapping probe,
 * its punch socket and a listener (listening strategies, direct's accept after a refusal).
 */
export const ATTEMPT_BASE_SOCKETS = 4;

/** What 'attemptRefused' reports. */
export interface AttemptRefusal {
  /** The attempt ID (hex). */
  readonly attemptId: string;
  /** What the initiator was told, e.g. "recipient busy: 16 attempts in progress". */
  readonly reason: string;
}

/** What 'connectionRejected' reports: an initiator that proved its identity, which `allow` does not list. */
export interface ConnectionRejection {
  /** The identity the initiator proved in the TLS handshake. */
  readonly peerUri: string;
  /** The fingerprint of its key. */
  readonly peerKeyFingerprint: string;
  /** Where the connection came from (the initiator's public endpoint, or the broker's relay). */
  readonly remote: TransportAddress;
  /** The reason the initiator was told. */
  readonly reason: string;
}

/** What 'registrationRetry' reports: a failed try, and when the next one comes. */
export interface RegistrationRetryEvent {
  /** Why the try failed. */
  readonly error: NattravError;
  /** Consecutive failed tries so far (1 after the first). */
  readonly failures: number;
  /** When the next try comes, in ms from now. */
  readonly delayMs: number;
  /** 'start': never registered yet; 'lost': registering again after 'registrationLost'. */
  readonly phase: 'start' | 'lost';
}

/** Called for each accepted connection. */
export type ConnectionListener = (socket: NattravSocket) => void;

/** What {@link NattravServer.address} reports once registered. */
export interface ServerAddress {
  readonly uri: string;
  /** The broker we are registered with (with several configured: the one that answered). */
  readonly broker: HostPort;
  /** Our registration endpoint as the broker sees it. */
  readonly publicEndpoint: TransportAddress;
  /** How we are registered: UDP, or a TCP control connection when UDP is blocked. */
  readonly transport: 'udp' | 'tcp';
  /** The fingerprint of our key (what initiators can pin with `expectKey` / `--expect-key`). */
  readonly keyFingerprint: string;
}

/** A recipient of nattrav connections. Create it with {@link createServer}. */
export class NattravServer extends EventEmitter {
  readonly #uri: string;
  /** The brokers, in order of preference (one, or a cluster's). */
  readonly #brokers: HostPort[];
  readonly #keepaliveMs: number;
  readonly #lifetimeMs: number;
  readonly #registerTimeoutMs: number;
  readonly #exchangeTimeoutMs: number;
  readonly #punchTimeoutMs: number;
  readonly #transport: 'auto' | 'udp' | 'tcp';
  readonly #dualStack: boolean;
  #secondFamily: SecondFamilyRegistration | undefined;
  readonly #identity: Identity | undefined;
  readonly #keyDir: string | undefined;
  readonly #brokerCa: string | undefined;
  /** How TCP connections to the broker are opened (dialer.ts); undefined: directly. */
  readonly #dialer: Dialer | undefined;
  readonly #tls: { ca: string[] } | undefined;
  /** The identities initiators must prove, or undefined for everyone. */
  readonly #allow: ReadonlySet<string> | undefined;
  readonly #once: boolean;
  readonly #takeover: boolean;
  /** ServerOptions.standby: keep a standby exchange when granted (standby.ts). */
  readonly #standbyWanted: boolean;
  #standby: KeptStandby | undefined;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  /** The fingerprint of that identity's key. */
  #keyFingerprint: string | undefined;
  /** The identity proven at registration (and used for TLS), once resolved. */
  #resolvedIdentity: Identity | undefined;
  /** Without a configured identity: our kept key (#keys), and its certificate once made (#prepareIdentity). */
  #keptKey: KeyPairPem | undefined;
  #identityReady: Promise<Identity> | undefined;
  readonly #attempts = new Set<AbortController>();
  readonly #maxConcurrentAttempts: number;
  /** The sockets incoming attempts may hold at once, shared with their strategies. */
  readonly #sockets: SocketBudget;
  #registration: PeerRegistration | undefined;
  readonly #portmap: PortmapSettings | false;
  /** Our gateway's port mapping, once the broker we registered with is not on loopback. */
  #agent: PortmapAgent | undefined;
  /** Adaptive keepalive (adaptive-keepalive.ts): its settings, and the adapter once registering. */
  readonly #adaptive: AdaptiveKeepaliveSettings | false;
  #adapter: KeepaliveAdapter | undefined;
  /** Our BIND at the SOCKS5 proxy (path socks5-bind), when the proxy is our way out. */
  #bind: Socks5BindAgent | undefined;
  #state: 'idle' | 'starting' | 'listening' | 'closed' = 'idle';
  /** Set by the first close(): settles once the registration was withdrawn and 'close' emitted. */
  #closed: Promise<void> | undefined;

  constructor(options: ServerOptions, onConnection?: ConnectionListener) {
    super();
    if (options === null || typeof options !== 'object') {
      throw new NattravError(ErrorCode.InvalidArgument, 'createServer: expected options { broker, uri }');
    }
    this.#uri = checkUri(options.uri);
    this.#brokers = toBrokerList(options.broker);
    this.#keepaliveMs = positiveInt(options.keepaliveMs, PEER_DEFAULTS.keepaliveMs, 'keepaliveMs');
    this.#lifetimeMs = positiveInt(options.lifetimeMs, this.#keepaliveMs * PEER_DEFAULTS.lifetimeFactor, 'lifetimeMs');
    this.#adaptive = adaptiveKeepaliveSettings(options, this.#keepaliveMs, this.#lifetimeMs);
    // A try should not outlast the interval between tries.
    this.#registerTimeoutMs = positiveInt(options.registerTimeoutMs, Math.min(PEER_DEFAULTS.registerTimeoutMs, this.#keepaliveMs), 'registerTimeoutMs');
    this.#exchangeTimeoutMs = positiveInt(options.exchangeTimeoutMs, PEER_DEFAULTS.exchangeTimeoutMs, 'exchangeTimeoutMs');
    this.#punchTimeoutMs = positiveInt(options.punchTimeoutMs, PEER_DEFAULTS.punchTimeoutMs, 'punchTimeoutMs');
    this.#maxConcurrentAttempts = positiveInt(options.maxConcurrentAttempts, PEER_DEFAULTS.maxConcurrentAttempts, 'maxConcurrentAttempts');
    const maxAttemptSockets = positiveInt(options.maxAttemptSockets, PEER_DEFAULTS.maxAttemptSockets, 'maxAttemptSockets');
    if (maxAttemptSockets < ATTEMPT_BASE_SOCKETS) {
      throw new NattravError(ErrorCode.InvalidArgument, `maxAttemptSockets: expected at least ${ATTEMPT_BASE_SOCKETS} (the sockets of one attempt), got ${maxAttemptSockets}`);
    }
    this.#sockets = new SocketBudget(maxAttemptSockets);
    this.#dialer = dialerFromOptions(options);
    this.#transport = registerTransportOf(options.registerTransport, this.#dialer);
    if (options.dualStack !== undefined && typeof options.dualStack !== 'boolean') {
      throw new NattravError(ErrorCode.InvalidArgument, `dualStack must be true or false, got ${JSON.stringify(options.dualStack)}`);
    }
    this.#dualStack = options.dualStack !== false;
    this.#identity = options.identity;
    this.#keyDir = options.keyDir;
    this.#brokerCa = options.brokerCa;
    this.#tls = options.tls === false ? undefined : { ca: options.tls === undefined || options.tls === true ? [] : (options.tls.ca ?? []) };
    this.#allow = allowList(options.allow, options.tls === false);
    this.#once = options.once === true;
    if (options.takeover !== undefined && typeof options.takeover !== 'boolean') {
      throw new NattravError(ErrorCode.InvalidArgument, `takeover: expected true or false, got ${JSON.stringify(options.takeover)}`);
    }
    this.#takeover = options.takeover === true;
    if (options.standby !== undefined && typeof options.standby !== 'boolean') {
      throw new NattravError(ErrorCode.InvalidArgument, `standby: expected true or false, got ${JSON.stringify(options.standby)}`);
    }
    this.#standbyWanted = options.standby !== false;
    this.#portmap = checkPortmapOption(options.portmap);
    this.#retryInitialMs = positiveInt(options.retryInitialMs, PEER_DEFAULTS.retryInitialMs, 'retryInitialMs');
    this.#retryMaxMs = positiveInt(options.retryMaxMs, Math.max(PEER_DEFAULTS.retryMaxMs, this.#retryInitialMs), 'retryMaxMs');
    if (this.#retryMaxMs < this.#retryInitialMs) {
      throw new NattravError(ErrorCode.InvalidArgument, `retryMaxMs (${this.#retryMaxMs}) must not be less than retryInitialMs (${this.#retryInitialMs})`);
    }
    if (options.brokerCa !== undefined) {
      try {
        new X509Certificate(options.brokerCa);
      } catch (err) {
        throw new NattravError(ErrorCode.InvalidArgument, `brokerCa: not a PEM certificate (${(err as Error).message})`, { cause: err });
      }
    }
    if (onConnection !== undefined) this.on('connection', onConnection);
  }

  /** True once registered and until closed. */
  get listening(): boolean {
    return this.#state === 'listening';
  }

  /** The registered URI and our public endpoint (as last registered), or null before the first registration and once closed. */
  address(): ServerAddress | null {
    const info = this.#registration?.info;
    if (this.#state === 'closed' || info === undefined || this.#keyFingerprint === undefined) return null;
    return { uri: this.#uri, broker: info.broker, publicEndpoint: info.publicEndpoint, transport: info.transport, keyFingerprint: this.#keyFingerprint };
  }

  /** Registers with the broker (trying again until it answers, unless `once`); emits 'listening', or 'error' when the start failed for good. */
  listen(callback?: () => void): this {
    if (this.#state !== 'idle') {
      queueMicrotask(() => this.emit('error', new NattravError(ErrorCode.Closed, `listen: the server is already ${this.#state}`)));
      return this;
    }
    if (callback !== undefined) this.once('listening', callback);
    this.#state = 'starting';
    this.#start().catch((err: unknown) => {
      void this.#registration?.close();
      if (this.#state === 'closed') return;
      this.#state = 'idle';
      this.emit('error', err);
    });
    return this;
  }

  /** Resolves our keys, then registers; emits 'listening'. */
  async #start(): Promise<void> {
    const keys = await this.#keys();
    if (this.#state !== 'starting') return;
    if (isSocks5Dialer(this.#dialer)) {
      // Loaded only with a proxy: it brings the `socks` package (a plain listen starts without it).
      const { startBind } = await import('./socks5-bind.js');
      const bind = await startBind(this.#dialer.proxy, (event) => this.emit('socks5Bind', event));
      // Closed meanwhile: close() found no BIND to close.
      if (this.#state !== 'starting') {
        bind.close();
        return;
      }
      this.#bind = bind;
    }
    const registration = new PeerRegistration({
      broker: this.#brokers,
      uri: this.#uri,
      keepaliveMs: this.#keepaliveMs,
      lifetimeMs: this.#lifetimeMs,
      registerTimeoutMs: this.#registerTimeoutMs,
      transport: this.#transport,
      keys,
      admit: (_attemptId, datagram) => this.#refusal() ?? (datagram ? this.#datagramRefusal() : undefined),
      mappedEndpoint: () => this.#agent?.endpoint,
      boundEndpoint: () => this.#bind?.endpoint,
      once: this.#once,
      takeover: this.#takeover,
      backoff: { initialMs: this.#retryInitialMs, maxMs: this.#retryMaxMs, jitter: REGISTRATION_BACKOFF.jitter },
      ...(this.#brokerCa === undefined ? {} : { brokerCa: this.#brokerCa }),
      ...(this.#dialer === undefined ? {} : { dialer: this.#dialer }),
    });
    this.#registration = registration;
    if (this.#standbyWanted) {
      this.#standby = keepStandby(registration, {
        uri: this.#uri,
        ...(this.#brokerCa === undefined ? {} : { brokerCa: this.#brokerCa }),
        // Through a proxy or tunnel the standby's port would not be ours to punch from.
        direct: () => this.#dialer === undefined || this.#dialer.kind === 'direct',
        // At its attempt cap or socket budget the recipient would refuse a warm attempt unheard: no standby then.
        busy: () => this.#refusal() !== undefined,
        onAttempt: (exchange) => this.#acceptWarm(exchange),
        onEvent: (event) => this.emit('standby', event),
      });
    }
    if (this.#dualStack) this.#secondFamily = secondFamilyOf(registration, this.#uri, this.#brokers, this.#registerTimeoutMs, (event, payload) => this.emit(event, payload));
    this.#adapter = adaptKeepalive(registration, this.#adaptive, (event, payload) => this.emit(event, payload));
    this.#bind?.on('change', () => registration.refreshNow());
    registration.on('registered', (event: RegisteredEvent) => {
      this.#startPortmap(registration, event.brokerAddress.address);
      this.emit('registered', event);
    });
    registration.on('lost', (err: unknown) => {
      const error = asNattravError(err);
      this.emit('registrationLost', error);
      this.emit('unregistered', error);
    });
    registration.on('retry', (retry: RegistrationRetry) => {
      this.emit('registrationRetry', { ...retry, error: asNattravError(retry.error) } satisfies RegistrationRetryEvent);
    });
    registration.on('moved', (event: MovedEvent) => this.emit('moved', event));
    registration.on('taken-over', (err: NattravError) => {
      this.emit('takenOver', err);
      this.close();
    });
    registration.on('connection-request', ({ attemptId, joinAt, datagram }: { attemptId: Uint8Array; joinAt?: HostPort; datagram: boolean }) => this.#accept(attemptId, joinAt, datagram));
    registration.on('connection-refused', ({ attemptId, reason }: { attemptId: Uint8Array; reason: string }) => {
      this.emit('attemptRefused', { attemptId: Buffer.from(attemptId).toString('hex'), reason } satisfies AttemptRefusal);
    });
    await registration.start();
    if (this.#state !== 'starting') {
      void registration.close();
      return;
    }
    // With TLS on; a failure is reported by each attempt that needs the identity.
    if (this.#tls !== undefined) this.#prepareIdentity()?.catch(() => undefined);
    this.#state = 'listening';
    this.emit('listening');
  }

  /**
   * Our identity for TLS: the configured one, or the self-signed certificate for our kept
   * key, made on the first call: once registered, or by an attempt that comes first. Undefined before #keys has run.
   */
  #prepareIdentity(): Promise<Identity> | undefined {
    if (this.#resolvedIdentity !== undefined) return Promise.resolve(this.#resolvedIdentity);
    const key = this.#keptKey;
    if (key === undefined) return undefined;
    const uri = this.#uri;
    // node:crypto alone (native-cert.ts): the certificate library is not loaded for it.
    this.#identityReady ??= Promise.all([import('../security/native-cert.js'), import('../security/ca-defaults.js')]).then(([{ nativeSelfSignedCertificate, validityFromNow }, { CA_DEFAULTS }]) => {
      const identity: Identity = { uri, keyPem: key.privateKeyPem, certPem: nativeSelfSignedCertificate({ key, uri, ...validityFromNow(CA_DEFAULTS.leafValidDays) }), ca: [] };
      this.#resolvedIdentity = identity;
      return identity;
    });
    return this.#identityReady;
  }

  /** Starts mapping our accepting port in the background (once, and not towards a loopback broker's gateway). */
  #startPortmap(registration: PeerRegistration, brokerAddress: string): void {
    if (this.#agent !== undefined || this.#state === 'closed' || !portmapAllowed(this.#portmap, brokerAddress)) return;
    const agent = new PortmapAgent(this.#portmap as PortmapSettings);
    this.#agent = agent;
    agent.on('change', () => registration.refreshNow());
    agent.on('event', (event: unknown) => this.emit('portmap', event));
    void agent.start();
  }

  /**
   * The key we prove at registration: the configured identity's, or one kept for this URI.
   * A kept key registers alone (its certificate would be self-signed, which proves nothing
   * to a broker): the certificate library is loaded and its certificate made once we are
   * registered (#prepareIdentity), so the first registration leaves soon after start (issue 13).
   */
  async #keys(): Promise<RegistrationKeys> {
    const identity = this.#identity;
    this.#resolvedIdentity = identity;
    this.#keptKey = identity === undefined ? await keptKey(this.#uri, this.#keyDir === undefined ? {} : { dir: this.#keyDir }) : undefined;
    const key = this.#keptKey ?? keyPairFromPrivatePem((identity as Identity).keyPem);
    const certificate = identity === undefined ? undefined : new X509Certificate(identity.certPem);
    this.#keyFingerprint = keyFingerprint(key.spki);
    return {
      key,
      // Only a CA-issued certificate proves anything to a broker; a self-signed one is left out.
      ...(certificate === undefined || certificate.issuer === certificate.subject ? {} : { certificateDer: certificate.raw }),
      // brokerHost: the registration names the broker it dials (PeerRegistration sets it per broker).
      ...(this.#brokerCa === undefined ? {} : { brokerCa: new X509Certificate(this.#brokerCa), brokerHost: (this.#brokers[0] as HostPort).host }),
    };
  }

  /**
   * Stops registering and withdraws the registration (the broker forgets the URI at
   * once), abandons attempts in progress, and emits 'close' once the withdrawal was
   * sent (a few ms; at most about 200) and our port mapping deleted on the gateway
   * (each protocol request has its own deadline). Established connections stay open. Idempotent:
   * `callback` runs once the server is closed, however often close() is called.
   */
  close(callback?: () => void): this {
    if (this.#closed === undefined) {
      this.#state = 'closed';
      this.#adapter?.close();
      this.#standby?.keeper.close();
      this.#secondFamily?.close();
      this.#bind?.close();
      const withdrawn = Promise.all([this.#registration?.close(), this.#agent?.close()]);
      for (const controller of this.#attempts) controller.abort(new NattravError(ErrorCode.Closed, 'the server closed'));
      this.#attempts.clear();
      this.#closed = withdrawn.then(() => {
        this.emit('close');
      });
    }
    if (callback !== undefined) void this.#closed.then(callback);
    return this;
  }

  /** Closes the server and waits for 'close'. */
  async [Symbol.asyncDispose](): Promise<void> {
    await new Promise<void>((resolve) => this.close(() => resolve()));
  }

  /** Attempts running now (at most `maxConcurrentAttempts`). */
  get attemptsInProgress(): number {
    return this.#attempts.size;
  }

  /** Sockets incoming attempts hold now (at most `maxAttemptSockets`). */
  get attemptSockets(): number {
    return this.#sockets.inUse;
  }

  /** Why a new connection request must be refused now, or undefined when it can run (the registration answers 429 with it). */
  #refusal(): string | undefined {
    if (this.#attempts.size >= this.#maxConcurrentAttempts) return `recipient busy: ${this.#attempts.size} attempts in progress`;
    if (this.#sockets.available < ATTEMPT_BASE_SOCKETS) return `recipient busy: its attempts hold ${this.#sockets.inUse} of ${this.#sockets.limit} sockets`;
    return undefined;
  }

  /** Why a datagram channel must be refused now (datagram/accept.ts), or undefined; asked when the request comes, so the initiator hears why at once. */
  #datagramRefusal(): string | undefined {
    return datagramRefusal({ listeners: this.listenerCount('datagram'), allowList: this.#allow !== undefined, dialer: this.#dialer });
  }

  /**
   * One incoming attempt (admitted by {@link #refusal} just before): Join exchange, simultaneous
   * open, Hello; at `joinAt` when another broker of the cluster runs it (registration.ts checked it is ours).
   */
  #accept(attemptId: Uint8Array, joinAt: HostPort | undefined, datagram: boolean, exchange?: ExchangeResult): void {
    if (this.#state !== 'listening' && this.#state !== 'starting') return;
    if (!this.#sockets.tryTake(ATTEMPT_BASE_SOCKETS)) return;
    const controller = new AbortController();
    this.#attempts.add(controller);
    this.#standby?.recheck();
    const started = performance.now();
    const established = datagram ? this.#establishDatagram(attemptId, controller, joinAt) : this.#establish(attemptId, controller, started, joinAt, exchange);
    void established.finally(() => {
      this.#sockets.release(ATTEMPT_BASE_SOCKETS);
      this.#standby?.recheck();
    });
  }

  /**
   * An attempt answered down our standby (standby.ts): run at once. A busy recipient holds no
   * standby (keepStandby `busy`), so a refusal here is a race with the closing standby (the
   * initiator's punch then times out).
   */
  #acceptWarm(exchange: ExchangeResult): void {
    const reason = this.#refusal();
    if (reason === undefined) this.#accept(exchange.attemptId, undefined, false, exchange);
    else this.emit('attemptRefused', { attemptId: Buffer.from(exchange.attemptId).toString('hex'), reason } satisfies AttemptRefusal);
  }

  /** A datagram attempt (datagram/accept.ts): emits 'datagram' with the open channel, or 'attemptFailed'. */
  async #establishDatagram(attemptId: Uint8Array, controller: AbortController, joinAt: HostPort | undefined): Promise<void> {
    try {
      const channel = await joinDatagram({
        attemptId, uri: this.#uri, signal: controller.signal, exchangeTimeoutMs: this.#exchangeTimeoutMs, punchTimeoutMs: this.#punchTimeoutMs,
        broker: joinAt ?? this.#registration?.joinBroker ?? (this.#brokers[0] as HostPort),
        refusal: this.#datagramRefusal(),
        sockets: this.#sockets,
        ...(this.#registration?.sessionKey === undefined ? {} : { sessionKey: this.#registration.sessionKey }),
        ...(this.#brokerCa === undefined ? {} : { brokerCa: this.#brokerCa }),
        ...(this.#dialer === undefined ? {} : { dialer: this.#dialer }),
      });
      if (this.#state === 'closed') channel.close();
      else this.emit('datagram', channel);
    } catch (err) {
      if (this.#state !== 'closed') this.emit('attemptFailed', asNattravError(err));
    } finally {
      this.#attempts.delete(controller);
    }
  }

  /** Joins the attempt, runs TLS when configured, and emits 'connection' or 'attemptFailed'. */
  async #establish(attemptId: Uint8Array, controller: AbortController, started: number, joinAt: HostPort | undefined, exchange?: ExchangeResult): Promise<void> {
    let socket: NattravSocket;
    let rejected: ConnectionRejection | undefined;
    try {
      socket = await this.#join(attemptId, controller.signal, started, joinAt, exchange);
      if (this.#tls !== undefined) {
        const plain = socket;
        // Fail closed: with TLS asked for, a connection never goes on plain (nor past the allow-list) for want of an identity.
        const identity = await this.#prepareIdentity()?.catch((err: unknown) => {
          plain.destroy();
          throw err;
        });
        if (identity === undefined) {
          plain.destroy();
          throw new NattravError(ErrorCode.Identity, 'TLS is on but the server has no identity yet: the connection was dropped');
        }
        const allow = this.#allow;
        const admit = (peer: VerifiedPeer): string | undefined => {
          if (allow === undefined || allow.has(peer.uri)) return undefined;
          const reason = `${peer.uri} is not on the allow-list of ${this.#uri}`;
          rejected = { peerUri: peer.uri, peerKeyFingerprint: peer.keyFingerprint, remote: plain.nattrav.remote, reason };
          return reason;
        };
        // Loaded with the first connection: a recipient needs TLS only once an initiator comes.
        const { secure } = await import('./secure.js');
        socket = await secure(plain, { identity, ca: this.#tls.ca, signal: controller.signal, started, admit }).catch((err: unknown) => {
          plain.destroy();
          throw err;
        });
      }
    } catch (err) {
      this.#attempts.delete(controller);
      if (this.#state === 'closed') return;
      if (rejected !== undefined && isNattravError(err, ErrorCode.NotAllowed)) this.emit('connectionRejected', rejected);
      else this.emit('attemptFailed', asNattravError(err));
      return;
    }
    this.#attempts.delete(controller);
    if (this.#state === 'closed') {
      socket.destroy();
      return;
    }
    this.emit('connection', handOver(socket));
  }

  #join(attemptId: Uint8Array, signal: AbortSignal, started: number, joinAt: HostPort | undefined, exchange: ExchangeResult | undefined): Promise<NattravSocket> {
    const request = StunMessage.request(Method.Join);
    addAttemptId(request, attemptId);
    return runAttempt({
      broker: joinAt ?? this.#registration?.joinBroker ?? (this.#brokers[0] as HostPort),
      request,
      attemptId,
      trace: [],
      role: 'recipient',
      uri: this.#uri,
      signal,
      exchangeTimeoutMs: this.#exchangeTimeoutMs,
      punchTimeoutMs: this.#punchTimeoutMs,
      started,
      // Each attempt is new to the recipient: the initiator counts its retries.
      attempt: 1,
      tls: this.#tls !== undefined,
      sockets: this.#sockets,
      ...(this.#agent === undefined ? {} : { mappedInbound: this.#agent }),
      ...(this.#bind === undefined ? {} : { boundInbound: this.#bind }),
      ...(this.#registration?.sessionKey === undefined ? {} : { sessionKey: this.#registration.sessionKey }),
      ...(this.#brokerCa === undefined ? {} : { brokerCa: this.#brokerCa }),
      ...(this.#dialer === undefined ? {} : { dialer: this.#dialer }),
      ...(exchange === undefined ? {} : { exchange }),
    });
  }
}

/** `err` as a NattravError (an unexpected one becomes ERR_CONNECT_FAILED with its text). */
function asNattravError(err: unknown): NattravError {
  return isNattravError(err) ? err : new NattravError(ErrorCode.ConnectFailed, String(err), { cause: err });
}

/** Creates a recipient for `options.uri`; call `listen()` to register. */
export function createServer(options: ServerOptions, onConnection?: ConnectionListener): NattravServer {
  return new NattravServer(options, onConnection);
}
