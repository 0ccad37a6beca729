/**
 * One worker's side of `nattrav broker --workers N`: whatever lands on this worker but
 * belongs to an attempt another worker runs goes there, through the primary (primary.ts),
 * so the broker behaves as one process. The kernel hands each datagram to whichever
 * worker reads first and the primary deals TCP connections round robin, so:
 *
 * - The worker that takes a Connect owns the attempt and tells the primary (`own`).
 * - A Join, MappingProbe or Relay for an attempt this worker does not run is routed to
 *   the owner (`route`); the primary holds it briefly when no owner is known yet (a probe
 *   may come before its Connect), and sends it back (`unrouted`) when none turns up, to
 *   be served here exactly as one process serves an unknown attempt.
 * - A routed Join: the owner runs the rendezvous on a {@link RemoteExchange}; this worker
 *   keeps the connection, writes what the owner sends and passes the peer's responses on.
 * - A routed MappingProbe is observed by the owner, which returns the outcome; this
 *   worker answers the probe with it.
 * - A routed Relay moves the connection itself (its socket handle) to the owner, which
 *   splices it; a TLS connection (broker `cert`) cannot move: its bytes cross instead
 *   (remote-relay.ts).
 * - A ConnectionRequest's transaction ID starts with the owner's slot, so an answer (over
 *   UDP, or on a control connection held by any worker) reaches the owner (`ack`).
 * - A ConnectionRequest for a recipient whose TCP control connection another worker holds
 *   (the registration's `broker`; every worker when the registry does not keep it) is
 *   written by that worker (`ctl`).
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { StunChannel } from '../../common/stun-channel.js';
import { decodeMessage } from '../../wire/codec.js';
import { TRANSACTION_ID_LENGTH } from '../../wire/constants.js';
import type { StunMessage } from '../../wire/message.js';
import { getAttemptId, type RoleName } from '../../wire/nattrav.js';
import type { TransportAddress } from '../../wire/types.js';
import { parseMappingProbe, remoteEndpoint } from '../exchange-requests.js';
import { failureAnswer } from '../failure.js';
import type { ProbeOutcome } from '../probe-book.js';
import type { Registration } from '../registry/registry.js';
import type { AnswerSource } from '../rendezvous.js';
import { asBuffer, type IpcMessage } from './ipc.js';
import { RemoteExchange } from './remote-exchange.js';
import { RemoteRelaySide, holdRelaySocket } from './remote-relay.js';
import type { RouteCounts, RouterParts, WorkerLink } from './link.js';

export { workerBrokerId, type RouteCounts, type RouterParts, type WorkerLink } from './link.js';

/** What a worker does with a request it routed, once the primary or the owner answers. */
interface Waiting {
  /** No worker runs the attempt: serve it here. */
  unrouted(): void;
  /** The owner's outcome of a mapping probe. */
  answered?(outcome: ProbeOutcome): void;
  /** The connection of a routed Join or TLS Relay (kept here while the owner uses it). */
  channel?: StunChannel;
}

/** How long a routed request waits for its answer at most, in ms: the primary's route wait plus far more than an IPC round trip. */
const ROUTED_ANSWER_MS = 10_000;

/** Routes one worker's cross-worker traffic (see the module comment). */
export class WorkerRouter {
  readonly #link: WorkerLink;
  readonly #parts: RouterParts;
  /** Connections this worker holds for exchanges another worker runs, by our reference. */
  readonly #held = new Map<number, { channel: StunChannel; owner: number }>();
  /** Exchanges this worker runs on connections others hold, by `${holder}:${reference}`. */
  readonly #remote = new Map<string, RemoteExchange>();
  /** The reference of each held connection's channel (a response on it goes to its owner). */
  readonly #heldByChannel = new Map<StunChannel, number>();
  /** TLS relay connections this worker holds for another's relay, by our reference. */
  readonly #heldRelays = new Map<number, (op: string, fields: Record<string, unknown>) => void>();
  /** Relay sides this worker splices on connections others hold, by `${holder}:${reference}`. */
  readonly #remoteRelays = new Map<string, RemoteRelaySide>();
  /** Requests routed and waiting for the primary: what to do when it says no owner exists, or with the owner's answer. */
  readonly #waiting = new Map<number, Waiting>();
  #next = 1;
  /** Cross-worker traffic, for the primary's summary and the tests. */
  readonly counts: RouteCounts = { join: 0, probe: 0, relay: 0, ack: 0, control: 0 };

  constructor(link: WorkerLink, parts: RouterParts) {
    this.#link = link;
    this.#parts = parts;
    link.onMessage((message, handle) => this.#receive(message, handle));
  }

  /** A ConnectionRequest's transaction ID: random, but its first byte names this worker. */
  transactionId(): Uint8Array {
    const id = randomBytes(TRANSACTION_ID_LENGTH);
    id[0] = this.#link.slot;
    return id;
  }

  /** This worker took a Connect: it owns the attempt (hex ID). */
  own(attemptId: string): void {
    this.#link.port.post({ nt: 'own', attempt: attemptId });
  }

  /** An answer to a ConnectionRequest arrived here: true when it went to the worker that sent the request. */
  acknowledge(response: StunMessage, source: AnswerSource): boolean {
    const owner = response.transactionId[0] ?? 0;
    if (owner === this.#link.slot || owner < 1 || owner > this.#link.workers || response.raw === undefined) return false;
    this.counts.ack++;
    this.#bus(owner, { nt: 'ack', bytes: response.raw, source });
    return true;
  }

  /**
   * An answer that neither this worker's attempts nor its cluster routing knows: another
   * worker may have relayed its request for a broker of the cluster (the kernel hands the
   * answer to any worker), so every other worker is given it to try (never passed on again).
   */
  foreignAnswer(response: StunMessage, source: AnswerSource): void {
    if (response.raw === undefined) return;
    const message = { nt: 'fack', bytes: response.raw, source };
    for (let slot = 1; slot <= this.#link.workers; slot++) if (slot !== this.#link.slot) this.#bus(slot, message);
  }

  /**
   * A ConnectionRequest for a TCP-registered recipient whose control connection this
   * worker does not hold: the worker the registration names writes it. A registration
   * naming no worker (a registry that does not keep `broker`) goes to every other worker;
   * the one holding the connection writes it. False when the registration names this
   * worker or a broker outside this process (nothing to do here).
   */
  notifyControl(registration: Registration, bytes: Buffer): boolean {
    const message = { nt: 'ctl', uri: registration.uri, bytes };
    if (registration.broker === undefined) {
      this.counts.control++;
      for (let slot = 1; slot <= this.#link.workers; slot++) if (slot !== this.#link.slot) this.#bus(slot, message);
      return true;
    }
    const holder = this.#slotOf(registration.broker);
    if (holder === undefined || holder === this.#link.slot) return false;
    this.counts.control++;
    this.#bus(holder, message);
    return true;
  }

  /** A Join arrived on `channel`: true when its attempt runs elsewhere (or may) and the router took it. */
  join(channel: StunChannel, request: StunMessage): boolean {
    const attempt = attemptOf(request);
    if (attempt === undefined || this.#parts.rendezvous.has(attempt) || request.raw === undefined) return false;
    const ref = this.#next++;
    this.#wait(ref, { unrouted: () => this.#joinHere(channel, request), channel });
    this.#link.port.post({ nt: 'route', kind: 'join', ref, attempt, bytes: request.raw, remote: remoteEndpoint(channel) });
    return true;
  }

  /** A MappingProbe arrived on `channel`: true when its attempt runs elsewhere (or may) and the router took it. */
  mappingProbe(channel: StunChannel, request: StunMessage): boolean {
    const parsed = parseMappingProbe(request);
    if (parsed === undefined || request.raw === undefined) return false;
    const attempt = Buffer.from(parsed.id).toString('hex');
    if (this.#parts.rendezvous.has(attempt)) return false;
    const ref = this.#next++;
    const endpoint = remoteEndpoint(channel);
    this.#wait(ref, {
      unrouted: () => this.#parts.rendezvous.mappingProbe(channel, request),
      answered: (outcome) => this.#parts.rendezvous.answerProbe(channel, request, parsed.role, endpoint, outcome),
    });
    this.#link.port.post({ nt: 'route', kind: 'probe', ref, attempt, bytes: request.raw, remote: endpoint, role: parsed.role });
    return true;
  }

  /**
   * A Relay arrived on `channel` (over `raw`): true when the router took it because its
   * relay was not authorized here. A plain connection moves (its socket) to the worker
   * that authorized it, through the primary; a TLS one stays and its bytes go there
   * (remote-relay.ts). Either comes back here when no worker runs the attempt.
   */
  relay(channel: StunChannel, raw: Socket, secured: boolean, attemptId: string, role: RoleName, request: StunMessage): boolean {
    if (this.#parts.relay.has(attemptId) || request.raw === undefined) return false;
    if (secured) {
      const ref = this.#next++;
      this.#wait(ref, { unrouted: () => this.#parts.relay.join(attemptId, role, channel, request), channel });
      this.#link.port.post({ nt: 'route', kind: 'relay', ref, attempt: attemptId, role, bytes: request.raw, remote: remoteEndpoint(channel) });
      return true;
    }
    const early = channel.detach();
    raw.pause();
    this.counts.relay++;
    this.#link.port.postHandle({ nt: 'route-relay', attempt: attemptId, role, bytes: request.raw, early }, raw);
    return true;
  }

  /** A response arrived on `channel`: passed on when the channel carries an exchange another worker runs. */
  response(channel: StunChannel, message: StunMessage): void {
    const ref = this.#heldByChannel.get(channel);
    const held = ref === undefined ? undefined : this.#held.get(ref);
    if (ref === undefined || held === undefined) return;
    this.#bus(held.owner, { nt: 'ch', op: 'msg', ref, txid: message.transactionId, cls: message.cls, method: message.method });
  }

  /**
   * Keeps what to do with a routed request until the primary or the owner answers. The
   * primary answers within its route wait; an owner that died before answering never
   * does, so an entry is dropped after {@link ROUTED_ANSWER_MS} (its peer has timed out by then).
   */
  #wait(ref: number, entry: Waiting): void {
    this.#waiting.set(ref, entry);
    setTimeout(() => this.#waiting.delete(ref), ROUTED_ANSWER_MS).unref();
  }

  /** The worker in `slot` died: exchanges and relay sides it held for us end, as their connections did. */
  workerGone(slot: number): void {
    for (const [key, exchange] of this.#remote) if (key.startsWith(`${slot}:`)) exchange.close();
    for (const [key, side] of this.#remoteRelays) if (key.startsWith(`${slot}:`)) side.socket.closedThere();
    for (const [ref, held] of this.#held) {
      if (held.owner !== slot) continue;
      this.#held.delete(ref);
      held.channel.destroy();
    }
  }

  #joinHere(channel: StunChannel, request: StunMessage): void {
    this.#parts.rendezvous.join(channel, request).catch((err: unknown) => {
      channel.send(failureAnswer(request, err), { software: this.#parts.software, fingerprint: true });
      channel.end();
    });
  }

  #bus(to: number, body: IpcMessage): void {
    this.#link.port.post({ nt: 'bus', to, body });
  }

  #slotOf(broker: string | undefined): number | undefined {
    const prefix = `${this.#link.prefix}/w`;
    if (broker === undefined || !broker.startsWith(prefix)) return undefined;
    const slot = Number(broker.slice(prefix.length));
    return Number.isInteger(slot) && slot >= 1 && slot <= this.#link.workers ? slot : undefined;
  }

  #receive(message: IpcMessage, handle: Socket | undefined): void {
    const from = typeof message['from'] === 'number' ? message['from'] : 0;
    switch (message.nt) {
      case 'unrouted':
      case 'probe-answer': {
        const ref = message['ref'] as number;
        const waiting = this.#waiting.get(ref);
        if (waiting === undefined) return;
        this.#waiting.delete(ref);
        if (message.nt === 'unrouted') {
          waiting.unrouted();
          return;
        }
        if (message.nt === 'probe-answer' && waiting.answered !== undefined) waiting.answered(message['outcome'] as ProbeOutcome);
        return;
      }
      case 'routed':
        this.#served(message, from);
        return;
      case 'worker-gone':
        this.workerGone(message['slot'] as number);
        return;
      case 'relay':
        if (handle !== undefined) {
          const request = decodeMessage(asBuffer(message['bytes']));
          this.#parts.adoptRelay(handle, message['attempt'] as string, message['role'] as RoleName, request, asBuffer(message['early']));
        }
        return;
      case 'ack': {
        const response = decodeMessage(asBuffer(message['bytes']));
        this.#parts.rendezvous.acknowledge(response, message['source'] as AnswerSource);
        return;
      }
      case 'fack':
        this.#parts.clusterAnswered?.(decodeMessage(asBuffer(message['bytes'])), message['source'] as AnswerSource);
        return;
      case 'ctl': {
        const control = this.#parts.control(message['uri'] as string);
        if (control !== undefined && !control.socket.destroyed) control.socket.write(asBuffer(message['bytes']));
        return;
      }
      case 'ch':
        this.#channel(message, from);
        return;
      case 'rl-h':
        this.#relayHolder(message, from);
        return;
      case 'rl-o':
        this.#remoteRelays.get(`${from}:${message['ref'] as number}`)?.receive(message['op'] as string, message);
        return;
      default:
    }
  }

  /** A TLS relay connection another worker holds, for a relay this worker authorized: splice a RemoteSocket in its place. */
  #relayFor(holder: number, ref: number, attemptId: string, role: RoleName, remote: TransportAddress, request: StunMessage): void {
    const side = new RemoteRelaySide(remote, (op, fields = {}) => this.#bus(holder, { nt: 'rl-h', op, ref, ...fields }));
    const key = `${holder}:${ref}`;
    this.#remoteRelays.set(key, side);
    side.socket.once('close', () => this.#remoteRelays.delete(key));
    this.#bus(holder, { nt: 'rl-h', op: 'hold', ref });
    this.#parts.relay.join(attemptId, role, new StunChannel(side.socket.asSocket(), () => undefined), request);
  }

  /** The holder's side of a TLS relay connection: start passing bytes, or do what the relaying worker asks. */
  #relayHolder(message: IpcMessage, from: number): void {
    const ref = message['ref'] as number;
    const op = message['op'] as string;
    if (op === 'hold') {
      const channel = this.#waiting.get(ref)?.channel;
      if (channel === undefined) return;
      this.#waiting.delete(ref);
      this.counts.relay++;
      const early = channel.detach();
      const handler = holdRelaySocket(channel.socket, early, (what, fields = {}) => this.#bus(from, { nt: 'rl-o', op: what, ref, ...fields }));
      this.#heldRelays.set(ref, handler);
      channel.socket.once('close', () => this.#heldRelays.delete(ref));
      return;
    }
    this.#heldRelays.get(ref)?.(op, message);
  }

  /** A Join or MappingProbe another worker received for an attempt this worker runs. */
  #served(message: IpcMessage, from: number): void {
    const ref = message['ref'] as number;
    const request = decodeMessage(asBuffer(message['bytes']));
    const remote = message['remote'] as TransportAddress;
    if (message['kind'] === 'relay') {
      this.#relayFor(from, ref, message['attempt'] as string, message['role'] as RoleName, remote, request);
      return;
    }
    if (message['kind'] === 'probe') {
      this.counts.probe++;
      const outcome = this.#parts.rendezvous.observeProbe(message['attempt'] as string, message['role'] as RoleName, remote, request);
      this.#bus(from, { nt: 'probe-answer', ref, outcome });
      return;
    }
    // Tell the holder it now carries our exchange, then run the Join on it.
    this.#bus(from, { nt: 'ch', op: 'hold', ref });
    const exchange = new RemoteExchange(remote, {
      write: (bytes) => this.#bus(from, { nt: 'ch', op: 'write', ref, bytes }),
      end: () => this.#bus(from, { nt: 'ch', op: 'end', ref }),
    });
    this.#remote.set(`${from}:${ref}`, exchange);
    void exchange.closed.then(() => this.#remote.delete(`${from}:${ref}`));
    this.#parts.rendezvous.join(exchange, request).catch((err: unknown) => {
      exchange.send(failureAnswer(request, err), { software: this.#parts.software, fingerprint: true });
      exchange.end();
    });
  }

  /** The two ends of a routed exchange talking: the holder's connection and the owner's RemoteExchange. */
  #channel(message: IpcMessage, from: number): void {
    const ref = message['ref'] as number;
    switch (message['op']) {
      case 'hold': {
        // Our Join went to `from`: keep the connection for it, and say when it closes.
        const channel = this.#waiting.get(ref)?.channel;
        if (channel === undefined) return;
        this.#waiting.delete(ref);
        this.counts.join++;
        this.#held.set(ref, { channel, owner: from });
        this.#heldByChannel.set(channel, ref);
        void channel.closed.then(() => {
          this.#held.delete(ref);
          this.#heldByChannel.delete(channel);
          this.#bus(from, { nt: 'ch', op: 'closed', ref });
        });
        return;
      }
      case 'write': {
        const held = this.#held.get(ref);
        if (held !== undefined && !held.channel.socket.destroyed) held.channel.socket.write(asBuffer(message['bytes']));
        return;
      }
      case 'end':
        this.#held.get(ref)?.channel.end();
        return;
      case 'msg':
        this.#remote.get(`${from}:${ref}`)?.deliver(asBuffer(message['txid']), message['cls'] as number, message['method'] as number);
        return;
      case 'closed':
        this.#remote.get(`${from}:${ref}`)?.close();
        return;
      default:
    }
  }
}

/** The hex attempt ID of a Join, or undefined when it has none (or a malformed one): served here. */
function attemptOf(request: StunMessage): string | undefined {
  try {
    const id = getAttemptId(request);
    return id === undefined ? undefined : Buffer.from(id).toString('hex');
  } catch {
    return undefined;
  }
}
