/**
 * A recipient's BIND at its SOCKS5 proxy (RFC 1928 §4, command BIND; path `socks5-bind`):
 * whose only way out is the proxy can still be reached from anywhere, because the proxy
 * listens for it. The agent keeps one BIND open ahead at the proxy and registers the address
 * the proxy bound (its first reply) as BOUND-ENDPOINT; the broker then aims initiators there.
 * When one connects, the proxy's second reply names who it is, and the control connection
 * becomes the connection: the agent reads its first message, the initiator's Hello (sent in
 * the clear before TLS), puts it back unread, and hands the connection to the attempt whose
 * ID the Hello names (strategies/socks5-bind.ts), whose Hello check and TLS then authenticate
 * it as on every path. The source address plays no part: two initiators behind one address
 * (CGNAT) each get their own, and no attempt can take another's.
 *
 * A BIND accepts exactly one connection, so:
 * 1. `opening`: a TCP connection to the proxy, the method negotiation, the BIND request
 *    (DST 0.0.0.0:0: we cannot know the initiator ahead, and RFC 1928 lets the proxy use
 *    DST only to filter; danted then takes a connection from anyone its rules let in).
 * 2. `bound`: the first reply gave the bound address; it is registered ('change').
 * 3. The second reply (a peer connected): a new BIND opens at once (back to 1), and the
 *    connection has {@link Socks5BindOptions.helloWaitMs} to send a Hello; one that sends
 *    anything else, or nothing in time, is closed. A Hello goes to the claim of the attempt it
 *    names; the claim checks the Hello's integrity under the attempt secret and takes it or
 *    refuses it (then it is closed, and the claim stays for its own initiator). A Hello naming
 *    no attempt waiting yet is held for {@link Socks5BindOptions.holdMs}: the initiator may
 *    connect before the recipient's attempt has joined. At most {@link MAX_HELD} connections
 *    wait (for their Hello or their claim); one more closes the oldest, so connections that
 *    never identify themselves can neither stop the BIND from being renewed nor pile up.
 * 4. `waiting`: the proxy refused, dropped or could not be reached: the next BIND comes after
 *    a capped exponential backoff (never a loop), and a refusal (the proxy's rules, or a
 *    proxy without BIND) only after {@link BIND_REFUSED_RETRY_MS}; a refusal is logged once
 *    ('event' type `refused`, `NODE_DEBUG=nattrav:socks5`). Meanwhile nothing is registered
 *    and today's strategies (reversal, relay) run.
 * 5. `closed` (close()): the BIND and every held connection are closed.
 */
import { EventEmitter } from 'node:events';
import { isIP, type Socket } from 'node:net';
import { debuglog } from 'node:util';
import { SocksClient, type SocksRemoteHost } from 'socks';
import type { HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import { MessageClass, Method } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { getAttemptId } from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { backoffDelayMs, type BackoffPolicy } from './backoff.js';
import { BROKER_CONNECT_TIMEOUT_MS } from './dialer.js';
import { readOneMessage } from './sockets.js';
import { describeProxy, reachProxy, socksError, takeOver, type Socks5Proxy } from './socks5.js';
import type { BoundClaim, BoundInbound } from './strategies/types.js';

const debug = debuglog('nattrav:socks5');

/** Connections that came in on a BIND and wait for their Hello or their attempt, at most (one more closes the oldest). */
export const MAX_HELD = 4;
/** A BIND the proxy refused is asked again this late, in ms: its rules rarely change sooner. */
export const BIND_REFUSED_RETRY_MS = 5 * 60_000;
/**
 * Retries after a BIND was dropped or the proxy could not be reached: 1 s doubling to 60 s,
 * half of each delay random.
 */
export const BIND_BACKOFF: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000, jitter: 0.5 };
/** A BIND held this long before the proxy dropped it counts as working: the backoff starts over, in ms. */
const BIND_STABLE_MS = 30_000;
/**
 * An inbound connection no attempt claimed yet waits this long, in ms: the initiator may
 * connect before the recipient's attempt has joined (both start from the broker's answers).
 */
const HOLD_MS = 5_000;
/**
 * An inbound connection must send its Hello within this, in ms: the initiator sends it as soon
 * as its connect completes, one hop through the proxy; 2 s leave room for a retransmission.
 */
const HELLO_WAIT_MS = 2_000;
/** TCP keepalive on the idle BIND connection, in ms: the proxy and any NAT on the way see it alive. */
const BIND_KEEPALIVE_MS = 30_000;

/** Options of {@link Socks5BindAgent}. */
export interface Socks5BindOptions {
  readonly proxy: Socks5Proxy;
  /** How retries are spaced. @default {@link BIND_BACKOFF} */
  readonly backoff?: BackoffPolicy;
  /** The wait after a refusal, in ms. @default {@link BIND_REFUSED_RETRY_MS} */
  readonly refusedRetryMs?: number;
  /** How long an inbound connection whose Hello names no attempt waiting yet is held, in ms. @default 5000 */
  readonly holdMs?: number;
  /** How long an inbound connection may take to send its Hello, in ms. @default 2000 */
  readonly helloWaitMs?: number;
  /** @default Math.random */
  readonly random?: () => number;
}

/** What happened to the BIND, for logs ('event'). */
export type Socks5BindEvent =
  | { readonly type: 'bound'; readonly endpoint: TransportAddress }
  | { readonly type: 'accepted'; readonly from: HostPort }
  /** No BIND now (dropped, or the proxy could not be reached); the next after `retryMs`. */
  | { readonly type: 'lost'; readonly error: Error; readonly retryMs: number }
  /** The proxy said no to BIND (or to our credentials); reported once, asked again after `retryMs`. */
  | { readonly type: 'refused'; readonly error: Error; readonly retryMs: number };

/** The agent's state (module comment, steps 1 to 5). */
export type Socks5BindState = 'idle' | 'opening' | 'bound' | 'waiting' | 'closed';

/** An inbound connection not yet handed to an attempt: reading its Hello, or held for its attempt. */
interface Held {
  readonly socket: Socket;
  readonly from: HostPort;
  /** Closes it when it waited too long (for its Hello, then for its attempt). */
  timer: NodeJS.Timeout;
  /** Stops reading the Hello. */
  readonly reading: AbortController;
  /** Its Hello, once read (still unread on the socket), and the attempt it names (hex). */
  hello?: { readonly message: StunMessage; readonly attemptId: string };
}

/** Emits 'change' (the endpoint to register changed) and 'event' ({@link Socks5BindEvent}). */
export class Socks5BindAgent extends EventEmitter implements BoundInbound {
  readonly #options: Socks5BindOptions;
  /** Waiting attempts by attempt ID (hex). */
  readonly #claims = new Map<string, BoundClaim>();
  readonly #held = new Set<Held>();
  #state: Socks5BindState = 'idle';
  /** The connection of the BIND in progress (opening or bound). */
  #pending: Socket | undefined;
  #endpoint: TransportAddress | undefined;
  #boundAt = 0;
  #failures = 0;
  #refusalLogged = false;
  #retry: NodeJS.Timeout | undefined;
  /** Aborts reaching the proxy when we close. */
  readonly #closing = new AbortController();

  constructor(options: Socks5BindOptions) {
    super();
    this.#options = options;
  }

  /** Where the proxy listens for us now (BOUND-ENDPOINT), while a BIND is open. */
  get endpoint(): TransportAddress | undefined {
    return this.#endpoint;
  }

  /** Where the agent is (module comment, steps 1 to 5). */
  get state(): Socks5BindState {
    return this.#state;
  }

  /** Connections not yet handed to an attempt (reading their Hello, or held for their attempt). */
  get held(): number {
    return this.#held.size;
  }

  /** Opens the first BIND, in the background. Once; never rejects (failures are events). */
  start(): void {
    if (this.#state === 'idle') this.#open();
  }

  /** Hands the inbound connections whose Hello names `attemptId` (and those held now) to `claim` until the returned function is called. */
  claim(attemptId: Uint8Array, claim: BoundClaim): () => void {
    const id = Buffer.from(attemptId).toString('hex');
    this.#claims.set(id, claim);
    for (const held of [...this.#held]) {
      if (held.hello?.attemptId === id) this.#handOver(held, claim);
    }
    return () => {
      if (this.#claims.get(id) === claim) this.#claims.delete(id);
    };
  }

  /** Closes the BIND and every held connection. Idempotent. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#closing.abort();
    clearTimeout(this.#retry);
    this.#pending?.destroy();
    this.#pending = undefined;
    for (const held of [...this.#held]) this.#drop(held);
    this.#claims.clear();
    this.#setEndpoint(undefined);
  }

  /** Step 1: a new BIND, unless one is open or we are closed. */
  #open(): void {
    if (this.#state === 'closed' || this.#state === 'opening' || this.#state === 'bound') return;
    this.#state = 'opening';
    const proxy = this.#options.proxy;
    reachProxy(proxy, this.#closing.signal).then(
      (socket) => this.#negotiate(socket),
      (err: unknown) => this.#failed(err instanceof Error ? err : new Error(String(err)), false),
    );
  }

  #negotiate(socket: Socket): void {
    if (this.#state === 'closed') {
      socket.destroy();
      return;
    }
    this.#pending = socket;
    socket.setKeepAlive(true, BIND_KEEPALIVE_MS);
    // The socket allows half-open connections (a relayed peer connection needs them): the
    // proxy closing the BIND is an 'end' without a 'close', until we close our side.
    const onEnd = (): void => {
      socket.destroy();
    };
    socket.once('end', onEnd);
    const proxy = this.#options.proxy;
    const client = new SocksClient({
      proxy: { host: proxy.host, port: proxy.port, type: 5, ...(proxy.username === undefined ? {} : { userId: proxy.username, password: proxy.password ?? '' }) },
      command: 'bind',
      destination: { host: '0.0.0.0', port: 0 },
      timeout: BROKER_CONNECT_TIMEOUT_MS,
      existing_socket: socket,
    });
    client.once('bound', (info: { remoteHost?: SocksRemoteHost }) => {
      if (this.#pending !== socket) return;
      // Step 2. An unspecified address (the package gives none for 0.0.0.0), or a name, is
      // registered as 0.0.0.0: the broker puts the proxy's address as it sees it in its place.
      const host = info.remoteHost?.host;
      const address = host === undefined || isIP(host) === 0 ? '0.0.0.0' : host;
      const endpoint: TransportAddress = { family: isIP(address) === 6 ? 'IPv6' : 'IPv4', address, port: info.remoteHost?.port ?? 0 };
      this.#state = 'bound';
      this.#boundAt = Date.now();
      debug('BIND at %s: bound %s:%d', describeProxy(proxy), endpoint.address, endpoint.port);
      this.#setEndpoint(endpoint);
      this.emit('event', { type: 'bound', endpoint } satisfies Socks5BindEvent);
    });
    client.once('established', (info: { remoteHost?: SocksRemoteHost; socket: Socket }) => {
      client.removeAllListeners();
      socket.off('end', onEnd);
      if (this.#pending !== socket) return;
      // Step 3: the BIND is used up; the next one opens at once.
      this.#pending = undefined;
      this.#failures = 0;
      this.#state = 'idle';
      this.#setEndpoint(undefined);
      const from = { host: info.remoteHost?.host ?? '', port: info.remoteHost?.port ?? 0 };
      debug('BIND at %s: %s:%d connected', describeProxy(proxy), from.host, from.port);
      this.emit('event', { type: 'accepted', from } satisfies Socks5BindEvent);
      socket.setKeepAlive(false);
      socket.on('error', () => undefined);
      this.#open();
      void takeOver(socket).then(() => this.#accept(socket, from));
    });
    client.once('error', (err: Error) => {
      client.removeAllListeners();
      if (this.#pending !== socket) return;
      this.#pending = undefined;
      socket.destroy();
      // A reply other than "succeeded" (RFC 1928 §6), or our credentials refused: the proxy says no.
      const reply = /rejected connection - (\w+)/i.exec(err.message)?.[1];
      const refused = reply !== undefined || /Authentication failed|no accepted authentication/i.test(err.message);
      const error = reply !== undefined ? new NattravError(ErrorCode.Proxy, `SOCKS5 proxy ${describeProxy(proxy)} refused BIND (it answered ${reply})`, { cause: err, address: proxy.host, port: proxy.port }) : refused ? socksError(err, proxy, { host: '0.0.0.0', port: 0 }) : err;
      this.#failed(error, refused);
    });
    client.connect(socket);
  }

  /** Step 4: no BIND now; the next one after a backoff (a refusal: much later, logged once). */
  #failed(error: Error, refused: boolean): void {
    if (this.#state === 'closed') return;
    const wasBound = this.#state === 'bound';
    this.#failures = wasBound && Date.now() - this.#boundAt >= BIND_STABLE_MS ? 1 : this.#failures + 1;
    this.#state = 'waiting';
    this.#setEndpoint(undefined);
    const retryMs = refused ? (this.#options.refusedRetryMs ?? BIND_REFUSED_RETRY_MS) : backoffDelayMs(this.#options.backoff ?? BIND_BACKOFF, this.#failures, this.#options.random ?? Math.random);
    if (refused) {
      if (!this.#refusalLogged) {
        this.#refusalLogged = true;
        debug('BIND refused by %s (inbound connections use the other paths): %s', describeProxy(this.#options.proxy), error.message);
        this.emit('event', { type: 'refused', error, retryMs } satisfies Socks5BindEvent);
      }
    } else {
      debug('BIND at %s %s: %s; again in %d ms', describeProxy(this.#options.proxy), wasBound ? 'dropped' : 'failed', error.message, retryMs);
      this.emit('event', { type: 'lost', error, retryMs } satisfies Socks5BindEvent);
    }
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#state === 'waiting') {
        this.#state = 'idle';
        this.#open();
      }
    }, retryMs);
    this.#retry.unref();
  }

  /** Step 3: an inbound connection waits for its Hello (the oldest waiting one makes room). */
  #accept(socket: Socket, from: HostPort): void {
    if (this.#state === 'closed' || socket.destroyed) {
      socket.destroy();
      return;
    }
    const oldest = this.#held.values().next().value;
    if (this.#held.size >= MAX_HELD && oldest !== undefined) {
      debug('connection from %s:%d through the BIND closed: %d newer ones wait', oldest.from.host, oldest.from.port, MAX_HELD);
      this.#drop(oldest);
    }
    const held: Held = { socket, from, reading: new AbortController(), timer: this.#expire(socket, from, this.#options.helloWaitMs ?? HELLO_WAIT_MS, 'sent no Hello in time') };
    socket.once('close', () => this.#release(held));
    this.#held.add(held);
    readOneMessage(socket, held.reading.signal).then(
      (message) => this.#identified(held, message),
      () => {
        if (this.#held.has(held)) this.#drop(held, 'sent no Hello');
      },
    );
  }

  /** Its first message: a Hello goes to the attempt it names (or waits for it); anything else is closed. */
  #identified(held: Held, message: StunMessage): void {
    if (!this.#held.has(held)) return;
    let attemptId: Uint8Array | undefined;
    try {
      attemptId = message.method === Method.Hello && message.cls === MessageClass.Request ? getAttemptId(message) : undefined;
    } catch {
      attemptId = undefined;
    }
    if (attemptId === undefined || message.raw === undefined) {
      this.#drop(held, 'sent no Hello');
      return;
    }
    // Put back unread: the attempt's Hello check reads it again.
    held.socket.unshift(message.raw);
    held.hello = { message, attemptId: Buffer.from(attemptId).toString('hex') };
    const claim = this.#claims.get(held.hello.attemptId);
    if (claim !== undefined) {
      this.#handOver(held, claim);
      return;
    }
    clearTimeout(held.timer);
    held.timer = this.#expire(held.socket, held.from, this.#options.holdMs ?? HOLD_MS, 'named no attempt waiting here');
  }

  /** Gives `held` to the claim of its attempt; one it refuses is closed (the claim stays). */
  #handOver(held: Held, claim: BoundClaim): void {
    if (held.hello === undefined) return;
    this.#release(held);
    if (!claim(held.socket, held.from, held.hello.message)) {
      debug('connection from %s:%d through the BIND refused by its attempt', held.from.host, held.from.port);
      held.socket.destroy();
    }
  }

  /** A timer that closes `socket` after `ms` (`why` is logged); its 'close' releases it. */
  #expire(socket: Socket, from: HostPort, ms: number, why: string): NodeJS.Timeout {
    return setTimeout(() => {
      debug('connection from %s:%d through the BIND %s', from.host, from.port, why);
      socket.destroy();
    }, ms);
  }

  /** Closes a connection not handed over (`why` is logged). */
  #drop(held: Held, why?: string): void {
    if (why !== undefined && this.#held.has(held)) debug('connection from %s:%d through the BIND %s', held.from.host, held.from.port, why);
    this.#release(held);
    held.socket.destroy();
  }

  /** A connection no longer waits here: handed over or closed. */
  #release(held: Held): void {
    if (!this.#held.delete(held)) return;
    clearTimeout(held.timer);
    held.reading.abort();
  }

  #setEndpoint(endpoint: TransportAddress | undefined): void {
    const before = this.#endpoint;
    this.#endpoint = endpoint;
    if (before?.address !== endpoint?.address || before?.port !== endpoint?.port) this.emit('change', endpoint);
  }
}

/** How long the first registration waits for the first BIND, in ms: the proxy is one hop away, and a refusal comes at once. */
export const FIRST_BIND_WAIT_MS = 2_000;

/**
 * Starts an agent for `proxy` and waits (at most {@link FIRST_BIND_WAIT_MS}) until its first
 * BIND is bound or has failed, so that the first registration already carries the bound
 * address; `onEvent` gets its events from the start.
 */
export async function startBind(proxy: Socks5Proxy, onEvent: (event: Socks5BindEvent) => void, options: Omit<Socks5BindOptions, 'proxy'> = {}): Promise<Socks5BindAgent> {
  const agent = new Socks5BindAgent({ ...options, proxy });
  agent.on('event', onEvent);
  const settled = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, FIRST_BIND_WAIT_MS);
    agent.once('event', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  agent.start();
  await settled;
  return agent;
}
