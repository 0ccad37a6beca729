/**
 * The relay path: when nothing direct can work, both peers open a TCP
 * connection to the broker with Relay(attempt ID, role); the broker answers
 * both and splices the two sockets. Only attempts the broker itself scheduled
 * with the relay strategy may be relayed, each once, within a short window.
 * Per-connection byte and time quotas default to 1 GiB and 1 hour (options.ts
 * BROKER_DEFAULTS: a broker serves strangers); 0 means unlimited. The success
 * response tells both peers the quotas (RELAY-QUOTA), so a peer whose
 * connection is cut can say why.
 *
 * The splice is a TCP connection in each direction: a FIN from one peer is
 * passed on as a FIN to the other, whose direction stays open until it ends
 * too (half-close). A quota cut resets both connections, so neither peer can
 * take it for a clean end.
 */
import type { Socket } from 'node:net';
import type { StunChannel } from '../common/stun-channel.js';
import { StunErrorCode } from '../wire/constants.js';
import type { StunMessage } from '../wire/message.js';
import { addRelayQuota } from '../wire/nattrav.js';
import { verifyMessageIntegritySha256 } from '../wire/codec.js';

/** How long a scheduled relay waits for both peers, in ms: two TCP handshakes, generously. */
export const RELAY_JOIN_WINDOW_MS = 10_000;
/** Most relays authorized but not yet joined; more are refused (memory stays bounded). */
const MAX_AUTHORIZED = 4096;

/** Quotas of one relayed connection. */
export interface RelayQuota {
  /** Bytes (both directions together) after which the relay is cut; 0 = unlimited. */
  readonly maxBytes: number;
  /** Milliseconds after which the relay is cut; 0 = unlimited. */
  readonly maxDurationMs: number;
}

/** How a relayed connection ended. */
export interface RelayEnded {
  readonly attemptId: string;
  readonly bytes: number;
  readonly durationMs: number;
  readonly reason: 'closed' | 'byte-quota' | 'time-quota';
}

interface Waiting {
  channel: StunChannel;
  request: StunMessage;
}

interface Authorized {
  timer: NodeJS.Timeout;
  /** The attempt secret: each Relay request must carry integrity under it. */
  secret: Buffer;
  sides: Partial<Record<'initiator' | 'recipient', Waiting>>;
}

/** Pairs and splices relay connections. */
export class RelayHub {
  readonly #authorized = new Map<string, Authorized>();
  readonly #active = new Set<Socket>();
  readonly #quota: RelayQuota;
  readonly #reply: (channel: StunChannel, message: StunMessage) => void;
  readonly #onEnded: (ended: RelayEnded) => void;
  readonly #onStarted: (attemptId: string) => void;
  /** Application bytes passed on by every relay since the hub was made, both directions. */
  #bytes = 0;

  constructor(
    quota: RelayQuota,
    reply: (channel: StunChannel, message: StunMessage) => void,
    onEnded: (ended: RelayEnded) => void,
    onStarted: (attemptId: string) => void = () => undefined,
  ) {
    this.#quota = quota;
    this.#reply = reply;
    this.#onEnded = onEnded;
    this.#onStarted = onStarted;
  }

  /** Connections currently spliced (each is two sockets). */
  get active(): number {
    return this.#active.size / 2;
  }

  /** Application bytes relayed so far, both directions, relays still running included. */
  get bytesRelayed(): number {
    return this.#bytes;
  }

  /** Allows one relay for `attemptId` (hex) during {@link RELAY_JOIN_WINDOW_MS}. */
  authorize(attemptId: string, secret: Buffer): boolean {
    if (this.#authorized.has(attemptId)) return true;
    if (this.#authorized.size >= MAX_AUTHORIZED) return false;
    const timer = setTimeout(() => this.#expire(attemptId), RELAY_JOIN_WINDOW_MS);
    timer.unref();
    this.#authorized.set(attemptId, { timer, secret, sides: {} });
    return true;
  }

  /** True while a relay for `attemptId` (hex) is authorized here and not yet paired. */
  has(attemptId: string): boolean {
    return this.#authorized.has(attemptId);
  }

  /** A peer's Relay request arrived on `channel`. */
  join(attemptId: string, role: 'initiator' | 'recipient', channel: StunChannel, request: StunMessage): void {
    const entry = this.#authorized.get(attemptId);
    if (entry === undefined || entry.sides[role] !== undefined) {
      this.#reply(channel, request.errorResponse(StunErrorCode.Forbidden, 'no relay was scheduled for this attempt'));
      channel.end();
      return;
    }
    // Knowing the attempt ID is not enough: only the two peers hold the attempt's secret.
    if (!verifyMessageIntegritySha256(request, entry.secret)) {
      this.#reply(channel, request.errorResponse(StunErrorCode.Forbidden, 'a Relay needs integrity under the attempt secret'));
      channel.end();
      return;
    }
    entry.sides[role] = { channel, request };
    const { initiator, recipient } = entry.sides;
    if (initiator === undefined || recipient === undefined) return;
    clearTimeout(entry.timer);
    this.#authorized.delete(attemptId);
    this.#splice(attemptId, initiator, recipient);
  }

  /** Cuts every relay and forgets every authorization. */
  close(): void {
    for (const [id] of this.#authorized) this.#expire(id);
    for (const socket of this.#active) socket.destroy();
  }

  #expire(attemptId: string): void {
    const entry = this.#authorized.get(attemptId);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.#authorized.delete(attemptId);
    for (const side of Object.values(entry.sides)) {
      if (side === undefined) continue;
      this.#reply(side.channel, side.request.errorResponse(StunErrorCode.RecipientUnreachable, 'the other peer did not join the relay'));
      side.channel.end();
    }
  }

  #splice(attemptId: string, a: Waiting, b: Waiting): void {
    const started = Date.now();
    let bytes = 0;
    let reason: RelayEnded['reason'] = 'closed';
    let ended = false;
    let closed = 0;
    const pairs = [
      [a.channel, b.channel.socket],
      [b.channel, a.channel.socket],
    ] as const;
    const finish = (cut: boolean): void => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      for (const [channel] of pairs) {
        this.#active.delete(channel.socket);
        if (cut) reset(channel.socket);
      }
      this.#onEnded({ attemptId, bytes, durationMs: Date.now() - started, reason });
    };
    const timer =
      this.#quota.maxDurationMs > 0
        ? setTimeout(() => {
            reason = 'time-quota';
            finish(true);
          }, this.#quota.maxDurationMs)
        : undefined;
    for (const [channel, to] of pairs) {
      const from = channel.socket;
      // From here on the socket carries application bytes: stop parsing STUN on it. A FIN
      // from this peer ends only its direction (passed on below), not the other one.
      const early = channel.detach();
      from.allowHalfOpen = true;
      this.#active.add(from);
      from.setTimeout(0);
      const pass = (chunk: Buffer): void => {
        bytes += chunk.length;
        this.#bytes += chunk.length;
        if (this.#quota.maxBytes > 0 && bytes > this.#quota.maxBytes) {
          reason = 'byte-quota';
          finish(true);
          return;
        }
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      };
      if (early.length > 0) pass(early);
      from.on('data', pass);
      from.on('end', () => to.end());
      from.on('error', () => finish(true));
      from.on('close', () => {
        if (++closed === 2) finish(false);
      });
    }
    this.#onStarted(attemptId);
    // Answer both only now, so every application byte finds the splice in place.
    for (const side of [a, b]) this.#reply(side.channel, addRelayQuota(side.request.successResponse(), this.#quota));
  }
}

/** Ends `socket` with a TCP RST where it can (a plain TCP socket), so the peer sees a reset, not a clean end. */
function reset(socket: Socket): void {
  try {
    socket.resetAndDestroy();
  } catch {
    // A TLS socket (STARTTLS) has no TCP handle of its own.
    socket.destroy();
  }
}
