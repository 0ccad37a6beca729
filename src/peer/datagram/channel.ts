/**
 * A datagram channel between the two peers of an attempt, with the shape of a connected
 * `dgram.Socket`: `send`, `'message'`, `close`, `address()`, `remoteAddress()`, and
 * `'error'`/`'close'` events. Sans-IO where it decides: the packets go through an injected
 * {@link DatagramTransport} (a UDP socket, or the broker's relay) and time comes from an
 * injected clock, so its tests run on a fake one.
 *
 * States (one transition each way, see {@link ChannelState}):
 * 1. `punching`: every probe interval, PROBE (our role, our nonce) goes to every candidate
 *    endpoint; a valid PROBE of the other role is answered with an ACK to where it came from.
 * 2. The first valid ACK echoing our nonce, or the first valid sealed packet of the other
 *    direction, names the peer's endpoint: the channel is `open` and from then on takes
 *    datagrams from that exact endpoint only (others are dropped and counted). It sends a
 *    KEEPALIVE at once, so the peer opens too, and another whenever it has sent nothing
 *    for the keepalive interval (below the NAT's mapping lifetime).
 *    The two sides may open on different paths (a hairpinning NAT answers on the LAN and
 *    on the public address; two birthday sockets both get through), so the recipient
 *    follows the initiator, as WireGuard roams: a sealed packet from the initiator that
 *    authenticates and carries the highest counter so far moves the recipient's peer
 *    endpoint (and its transport's socket) to where that packet came from. The initiator
 *    keeps its endpoint, so the two converge on the initiator's path.
 * 3. `closed`: by `close()` (a CLOSE goes to the peer), by the peer's CLOSE, by both sides
 *    having ended (`end()`, a half-close like TCP's FIN: half-close.ts), by silence of the
 *    peer for `peerTimeoutMs` or by the transport failing ('error' first).
 *
 * Application datagrams are encrypted and authenticated per datagram (packets.ts).
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { systemClock, type Clock, type TimerHandle } from '../../common/clock.js';
import { abortError } from '../../common/signal.js';
import { ErrorCode, NattravError } from '../../errors.js';
import type { ConnectionRole } from '../info.js';
import type { DatagramChannelInfo, DatagramEndpoint, DatagramRemoteInfo, DatagramStats, DatagramTransport } from './types.js';

export type { DatagramChannelInfo, DatagramDrops, DatagramEndpoint, DatagramRemoteInfo, DatagramStats, DatagramTransport, TransportHandlers } from './types.js';
import { endCounter, endPayload, HalfClose } from './half-close.js';
import { channelKeys, decodeHandshake, encodeHandshake, MAX_DATAGRAM, NONCE_LENGTH, open, PacketType, packetType, ReplayWindow, seal, type ChannelKeys } from './packets.js';

/** The phases of a channel (module comment). */
export type ChannelState = 'punching' | 'open' | 'closed';

/**
 * Keepalive interval on an open channel, in ms, and the longest one allowed: below the 30 s
 * UDP mapping lifetime of common NATs (RFC 4787 REQ-5 allows 2 min; many use 30 s). The
 * recipient always uses it, so each side's silence timeout is set from it.
 */
export const DATAGRAM_KEEPALIVE_MS = 15_000;
/** Silence from the peer after which a channel fails, in ms: 4 of the longest keepalive interval either side may use. */
export const DATAGRAM_PEER_TIMEOUT_MS = 4 * DATAGRAM_KEEPALIVE_MS;
/** PROBE interval while punching, in ms: a few round trips per second, like ICE's pacing. */
export const PROBE_INTERVAL_MS = 100;
/** ACKs a punching channel sends at most (each answers a valid PROBE): bounds what a replayed PROBE can make us send. */
const MAX_ACKS = 256;

/** What a channel is built from. */
export interface ChannelParams {
  readonly role: ConnectionRole;
  readonly attemptId: Uint8Array;
  /** The attempt secret both peers got from the broker. */
  readonly secret: Uint8Array;
  readonly transport: DatagramTransport;
  /**
   * Where to send PROBEs while punching (the peer's public and/or private endpoints), or a
   * function asked at each probe interval (birthday probing: fresh random ports each time).
   */
  readonly candidates: readonly DatagramEndpoint[] | (() => readonly DatagramEndpoint[]);
  /** @default systemClock */
  readonly clock?: Clock;
  /** Keepalive interval; a longer one is cut to DATAGRAM_KEEPALIVE_MS (the peer's silence timeout counts on it). @default DATAGRAM_KEEPALIVE_MS */
  readonly keepaliveMs?: number;
  /** Silence from the peer after which the channel fails with ERR_CONNECTION_BROKEN; 0 = never. @default DATAGRAM_PEER_TIMEOUT_MS (the peer may keep alive every DATAGRAM_KEEPALIVE_MS) */
  readonly peerTimeoutMs?: number;
  /** @default PROBE_INTERVAL_MS */
  readonly probeIntervalMs?: number;
  /**
   * Hold arriving datagrams (up to {@link MAX_HELD}) until {@link DatagramChannel.describe}
   * hands the channel out: the peer may send as soon as it opened, before our side's
   * application had a chance to listen. @default false
   */
  readonly hold?: boolean;
}

/** Datagrams a held channel keeps for its application at most; later ones are dropped as a full socket buffer drops them. */
export const MAX_HELD = 1024;

/**
 * A connected, authenticated and encrypted datagram channel to the other peer.
 * Events: `'message'` (msg: Buffer, rinfo), `'end'` (the peer ended its side: nothing more
 * will come), `'error'` (err), `'close'`.
 */
export class DatagramChannel extends EventEmitter {
  readonly #role: ConnectionRole;
  readonly #keys: ChannelKeys;
  readonly #transport: DatagramTransport;
  readonly #clock: Clock;
  readonly #candidates: readonly DatagramEndpoint[] | (() => readonly DatagramEndpoint[]);
  readonly #keepaliveMs: number;
  readonly #peerTimeoutMs: number;
  readonly #probeIntervalMs: number;
  readonly #nonce = randomBytes(NONCE_LENGTH);
  readonly #window = new ReplayWindow();
  #state: ChannelState = 'punching';
  #peer: DatagramEndpoint | undefined;
  #counter = 0;
  #acks = 0;
  /** The highest counter of a sealed packet taken from the peer (-1: none yet). */
  #highest = -1;
  #lastSent = 0;
  #lastReceived = 0;
  #probeTimer: TimerHandle | undefined;
  #keepaliveTimer: TimerHandle | undefined;
  #peerTimer: TimerHandle | undefined;
  #sent = 0;
  #received = 0;
  #drops = { foreign: 0, replayed: 0, invalid: 0 };
  #info: DatagramChannelInfo | undefined;
  /** Datagrams kept until the channel is handed out (with `hold`); undefined once they flow. */
  #held: Array<[Buffer, DatagramRemoteInfo]> | undefined;
  /** The peer's end arrived while datagrams were held: 'end' follows them. */
  #endHeld = false;
  readonly #half: HalfClose;
  readonly #opened: Promise<void>;
  #resolveOpened!: () => void;
  #rejectOpened!: (err: Error) => void;

  constructor(params: ChannelParams) {
    super();
    this.#role = params.role;
    this.#keys = channelKeys(params.secret, params.attemptId, params.role);
    this.#transport = params.transport;
    this.#clock = params.clock ?? systemClock;
    this.#candidates = params.candidates;
    this.#keepaliveMs = Math.min(params.keepaliveMs ?? DATAGRAM_KEEPALIVE_MS, DATAGRAM_KEEPALIVE_MS);
    this.#peerTimeoutMs = params.peerTimeoutMs ?? DATAGRAM_PEER_TIMEOUT_MS;
    this.#probeIntervalMs = params.probeIntervalMs ?? PROBE_INTERVAL_MS;
    if (params.hold === true) this.#held = [];
    this.#opened = new Promise<void>((resolve, reject) => {
      this.#resolveOpened = resolve;
      this.#rejectOpened = reject;
    });
    this.#opened.catch(() => undefined);
    this.#half = new HalfClose(this.#clock, {
      sendEnd: (first) => {
        const counter = this.#counter;
        this.#sendSealed(PacketType.End, endPayload(first ?? counter));
        return counter;
      },
      peerEnded: () => {
        if (this.#held === undefined) this.emit('end');
        else this.#endHeld = true;
      },
      bothEnded: () => this.close(),
    });
    this.#transport.attach({ message: (data, from) => this.#onPacket(data, from), error: (err) => this.#fail(new NattravError(ErrorCode.ConnectionBroken, `datagram channel broken: ${err.message}`, { cause: err })) });
  }

  /** The channel's phase. */
  get state(): ChannelState {
    return this.#state;
  }

  /** How the channel was made; undefined until it is handed out open. */
  get nattrav(): DatagramChannelInfo | undefined {
    return this.#info;
  }

  /**
   * Records how the channel was made (by the attempt that opened it), once, and hands it
   * out: held datagrams are emitted on the next turn of the event loop, after the code
   * that receives the channel attached its 'message' listener.
   */
  describe(info: DatagramChannelInfo): void {
    this.#info ??= info;
    if (this.#held === undefined) return;
    setImmediate(() => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const [payload, rinfo] of held) this.emit('message', payload, rinfo);
      if (this.#endHeld) this.emit('end');
    });
  }

  /** What was sent, received and dropped so far. */
  get stats(): DatagramStats {
    return { sent: this.#sent, received: this.#received, dropped: { ...this.#drops } };
  }

  /**
   * Starts punching and resolves once the peer's endpoint is known and proven (step 2).
   * Rejects with `signal`'s reason when it aborts first (the channel is then closed).
   */
  async establish(signal: AbortSignal): Promise<void> {
    if (this.#state === 'punching' && this.#probeTimer === undefined) this.#probe();
    const onAbort = (): void => this.#fail(abortError(signal), false);
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.#opened;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Whether datagrams can be sent: open, and our side not ended. */
  get writable(): boolean {
    return this.#state === 'open' && !this.#half.ended;
  }

  /**
   * Sends one datagram to the peer. Throws ERR_CLOSED unless open or after {@link end},
   * ERR_INVALID_ARGUMENT when larger than {@link MAX_DATAGRAM}.
   */
  send(msg: string | Uint8Array, callback?: (err: Error | null) => void): void {
    if (this.#state !== 'open') throw new NattravError(ErrorCode.Closed, `send: the datagram channel is ${this.#state === 'closed' ? 'closed' : 'not open yet'}`);
    if (this.#half.ended) throw new NattravError(ErrorCode.Closed, 'send: this side of the datagram channel ended (end() was called)');
    const payload = typeof msg === 'string' ? Buffer.from(msg) : msg;
    if (payload.length > MAX_DATAGRAM) throw new NattravError(ErrorCode.InvalidArgument, `send: a datagram carries at most ${MAX_DATAGRAM} bytes (got ${payload.length})`);
    this.#sendSealed(PacketType.Data, payload);
    this.#sent++;
    if (callback !== undefined) queueMicrotask(() => callback(null));
  }

  /** Our local endpoint (the UDP socket's, or our end of the relay connection). */
  address(): DatagramEndpoint {
    return this.#transport.local();
  }

  /** The peer's endpoint (its NAT's public one, a private one on a LAN, or the broker's relay). Throws ERR_CLOSED before the channel opened. */
  remoteAddress(): DatagramEndpoint {
    if (this.#peer === undefined) throw new NattravError(ErrorCode.Closed, 'remoteAddress: the datagram channel is not connected');
    return this.#peer;
  }

  /**
   * Ends our side, as a TCP half-close: the peer gets `'end'` after every datagram we sent
   * before, we keep receiving, and the channel closes once the peer has ended too (or by
   * `close()`). Idempotent; nothing to do once closed; throws ERR_CLOSED before it opened.
   */
  end(): this {
    if (this.#state === 'punching') throw new NattravError(ErrorCode.Closed, 'end: the datagram channel is not open yet');
    if (this.#state === 'open') this.#half.end();
    return this;
  }

  /** Closes the channel (telling the peer); idempotent. */
  close(callback?: () => void): this {
    if (callback !== undefined) {
      if (this.#state === 'closed') queueMicrotask(callback);
      else this.once('close', callback);
    }
    if (this.#state === 'open') {
      // Twice: a lost CLOSE would leave the peer waiting for its silence timeout. After our END
      // it names that END, so the peer still waits for what we sent before it (half-close.ts).
      const first = this.#half.firstEnd;
      const payload = first === undefined ? Buffer.alloc(0) : endPayload(first);
      this.#sendSealed(PacketType.Close, payload);
      this.#sendSealed(PacketType.Close, payload);
    }
    if (this.#end(new NattravError(ErrorCode.Closed, 'the datagram channel was closed'))) queueMicrotask(() => this.emit('close'));
    return this;
  }

  /** Closes the channel. */
  async [Symbol.asyncDispose](): Promise<void> {
    await new Promise<void>((resolve) => this.close(resolve));
  }

  #probe(): void {
    if (this.#state !== 'punching') return;
    const probe = encodeHandshake(this.#keys.handshake, { type: PacketType.Probe, role: this.#role, nonce: this.#nonce });
    const candidates = typeof this.#candidates === 'function' ? this.#candidates() : this.#candidates;
    for (const candidate of candidates) this.#transport.send(probe, candidate);
    this.#probeTimer = this.#clock.setTimeout(() => this.#probe(), this.#probeIntervalMs);
  }

  #onPacket(data: Buffer, from: DatagramEndpoint): void {
    if (this.#state === 'closed') return;
    // Port 0 is no endpoint: nothing can be sent back to it (a raw socket forged it).
    if (from.port === 0) {
      this.#drops.invalid++;
      return;
    }
    const type = packetType(data);
    const fromPeer = this.#peer !== undefined && sameEndpoint(this.#peer, from);
    // Only the recipient takes a sealed packet from elsewhere (it may roam to it, below).
    const mayRoam = this.#role === 'recipient' && type !== undefined && type !== PacketType.Probe && type !== PacketType.Ack;
    if (this.#peer !== undefined && !fromPeer && !mayRoam) {
      this.#drops.foreign++;
      return;
    }
    if (type === PacketType.Probe || type === PacketType.Ack) {
      this.#onHandshake(data, from);
      return;
    }
    const opened = type === undefined ? undefined : open(this.#keys.receive, data);
    if (opened === undefined) {
      if (this.#peer !== undefined && !fromPeer) this.#drops.foreign++;
      else this.#drops.invalid++;
      return;
    }
    const newest = opened.counter > this.#highest;
    if (!this.#window.accept(opened.counter)) {
      this.#drops.replayed++;
      return;
    }
    if (newest) this.#highest = opened.counter;
    // A sealed packet of the other direction proves its sender holds the secret.
    if (this.#peer === undefined) this.#open(from);
    else if (newest) this.#follow(from);
    this.#lastReceived = this.#clock.now();
    if (opened.type === PacketType.Close) {
      // We ended and the peer closes because it ended too: what it sent before may still be on the way (half-close.ts).
      if (this.#half.ended && !this.#half.peerEnded) this.#half.taken(endCounter(opened.payload, opened.counter), (limit) => this.#window.seenAllBelow(limit));
      else if (this.#end(new NattravError(ErrorCode.Closed, 'the peer closed the datagram channel'))) this.emit('close');
      return;
    }
    if (opened.type === PacketType.Data) {
      this.#received++;
      const rinfo: DatagramRemoteInfo = { ...from, size: opened.payload.length };
      if (this.#held === undefined) this.emit('message', opened.payload, rinfo);
      else if (this.#held.length < MAX_HELD) this.#held.push([opened.payload, rinfo]);
    }
    // After the datagram is out: the peer's end is reported behind everything it sent before.
    const end = opened.type === PacketType.End ? endCounter(opened.payload, opened.counter) : undefined;
    this.#half.taken(end, (limit) => this.#window.seenAllBelow(limit));
  }

  #onHandshake(data: Buffer, from: DatagramEndpoint): void {
    const handshake = decodeHandshake(this.#keys.handshake, data);
    // Our own PROBE reflected back carries our role: refused like a forgery.
    if (handshake === undefined || handshake.role === this.#role) {
      this.#drops.invalid++;
      return;
    }
    if (handshake.type === PacketType.Probe) {
      if (this.#state === 'punching' && this.#acks >= MAX_ACKS) return;
      this.#acks++;
      this.#transport.send(encodeHandshake(this.#keys.handshake, { type: PacketType.Ack, role: this.#role, nonce: handshake.nonce, ownNonce: this.#nonce }), from);
      return;
    }
    if (!handshake.nonce.equals(this.#nonce)) {
      this.#drops.invalid++;
      return;
    }
    if (this.#peer === undefined) this.#open(from);
  }

  /** Step 2's roaming: the newest authenticated packet names where the peer is now (the recipient only moves its endpoint). */
  #follow(from: DatagramEndpoint): void {
    if (this.#role === 'recipient') this.#peer = from;
    this.#transport.follow?.(from);
  }

  #open(peer: DatagramEndpoint): void {
    this.#peer = peer;
    this.#state = 'open';
    this.#clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#lastReceived = this.#clock.now();
    this.#transport.opened?.(peer);
    // At once: the peer opens on it if our ACK was lost.
    this.#sendSealed(PacketType.Keepalive, Buffer.alloc(0));
    this.#armKeepalive(this.#keepaliveMs);
    if (this.#peerTimeoutMs > 0) this.#armPeerTimer(this.#peerTimeoutMs);
    this.#resolveOpened();
  }

  #sendSealed(type: typeof PacketType.Data | typeof PacketType.Keepalive | typeof PacketType.Close | typeof PacketType.End, payload: Uint8Array): void {
    const peer = this.#peer;
    if (peer === undefined) return;
    this.#transport.send(seal(this.#keys.send, type, this.#counter++, payload), peer);
    this.#lastSent = this.#clock.now();
  }

  /** Fires `ms` from now; sends a KEEPALIVE when nothing went out for the whole interval, else waits for the rest of it. */
  #armKeepalive(ms: number): void {
    this.#keepaliveTimer = this.#clock.setTimeout(() => {
      if (this.#state !== 'open') return;
      const idle = this.#clock.now() - this.#lastSent;
      if (idle >= this.#keepaliveMs) {
        // Once we ended, the END rides each keepalive: a lost one is repaired within an interval.
        if (this.#half.ended) this.#half.resend();
        else this.#sendSealed(PacketType.Keepalive, Buffer.alloc(0));
        this.#armKeepalive(this.#keepaliveMs);
      } else {
        this.#armKeepalive(this.#keepaliveMs - idle);
      }
    }, ms);
  }

  #armPeerTimer(ms: number): void {
    this.#peerTimer = this.#clock.setTimeout(() => {
      if (this.#state !== 'open') return;
      const silent = this.#clock.now() - this.#lastReceived;
      if (silent >= this.#peerTimeoutMs) {
        this.#fail(new NattravError(ErrorCode.ConnectionBroken, `datagram channel broken: nothing from the peer for ${Math.round(silent)} ms`));
      } else {
        this.#armPeerTimer(this.#peerTimeoutMs - silent);
      }
    }, ms);
  }

  /** Fails the channel: 'error' (when `report` and someone could see it open), then 'close'. */
  #fail(err: Error, report = true): void {
    const wasOpen = this.#state === 'open';
    if (!this.#end(err)) return;
    if (report && wasOpen) this.emit('error', err);
    this.emit('close');
  }

  /** Stops timers and transport, and fails a pending {@link establish} with `reason`; false when already closed. The caller emits 'close'. */
  #end(reason: Error): boolean {
    if (this.#state === 'closed') return false;
    this.#state = 'closed';
    for (const timer of [this.#probeTimer, this.#keepaliveTimer, this.#peerTimer]) this.#clock.clearTimeout(timer);
    this.#half.stop();
    this.#transport.close();
    this.#rejectOpened(reason);
    return true;
  }
}

function sameEndpoint(a: DatagramEndpoint, b: DatagramEndpoint): boolean {
  return a.port === b.port && a.address === b.address;
}
