/**
 * Standby exchanges (issue 13, the warm recipient): a registered recipient keeps one TCP
 * connection to the broker open, so the broker can answer it the moment an initiator's
 * Connect arrives, with no ConnectionRequest, no fresh exchange, no Join and no Probe:
 *
 * 1. The broker announces in its answer to a first registration how many standbys it
 *    grants (STANDBY-GRANT: 1 while it holds fewer than `maxStandby`, else 0).
 * 2. The recipient opens a TCP connection from a port it can punch from and sends
 *    Standby(URI, its private endpoints) under its session key. Anything unproven, a
 *    URI it does not hold, a registration through another broker of a cluster, over a
 *    control connection or a WebSocket, or a full table, is refused and closed.
 * 3. The broker answers (XOR-MAPPED-ADDRESS, an ATTEMPT-ID naming the standby's mapping
 *    probe, ALTERNATE-PORT, STANDBY-REFRESH-MS) under the session key and keeps the
 *    connection: one per URI, a new one replaces the old.
 * 4. The recipient sends its MappingProbe from the standby's local port, once: the broker
 *    learns how its NAT maps TCP ahead of any attempt (probe-book.ts, mapping-memory.ts).
 * 5. Every `refreshMs` (and once at once) the broker sends StandbyRefresh down it: the
 *    traffic keeps the NATs' TCP state alive and its answer measures the round trip the
 *    start delays are computed from. A refresh unanswered, or a registration that is gone
 *    or belongs to another session now, closes it.
 * 6. An attempt takes it ({@link Standbys.take}): the rendezvous answers the recipient down
 *    it (StandbyAttempt) and closes it; the recipient opens the next one.
 *
 * The table and its timers run on the injected clock, the connections are
 * {@link ExchangeChannel}s: the unit tests run it on a fake clock with fake channels.
 */
import { randomBytes } from 'node:crypto';
import { clockDeadline, type Clock, type TimerHandle } from '../common/clock.js';
import { claimsNoNat, classifyTcpMapping, type MappingKind } from '../nat/mapping.js';
import { verifyMessageIntegritySha256 } from '../wire/codec.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method, StunErrorCode } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addAttemptId, addU32, addXorAddress, getUri, getXorAddressAttrs } from '../wire/nattrav.js';
import type { AddressFamilyName, TransportAddress } from '../wire/types.js';
import { remoteEndpoint, type ExchangeChannel } from './exchange-requests.js';
import type { MappingMemory } from './mapping-memory.js';
import type { ProbeBook } from './probe-book.js';
import type { Registration, Registry } from './registry/registry.js';

/** Standby exchanges one broker process holds at most by default: each is an open TCP connection and a timer (a few KB). */
export const DEFAULT_MAX_STANDBY = 10_000;
/** How often the broker refreshes a standby, in ms: well below the TCP established timeouts of NATs (RFC 5382: 2 h 4 min; some keep far less). */
export const STANDBY_REFRESH_MS = 60_000;
/** A refresh unanswered this long means the standby is gone, in ms. */
export const STANDBY_REFRESH_TIMEOUT_MS = 10_000;
/** How long the broker waits for a standby's mapping probe, in ms: it leaves right after the answer, so only loss delays it. */
export const STANDBY_PROBE_WAIT_MS = 3_000;

/** One recipient's standby exchange, as the broker holds it. */
export interface Standby {
  readonly uri: string;
  readonly channel: ExchangeChannel;
  /** The Standby request (an attempt answered down the standby names it). */
  readonly request: StunMessage;
  /** The standby's public endpoint, as the broker sees it: the recipient punches from its local port. */
  readonly publicEndpoint: TransportAddress;
  readonly privateEndpoints: TransportAddress[];
  /** The session key the standby was proven under. */
  readonly sessionKey: Buffer;
  /** The last round trip a refresh measured, in ms (undefined before the first answer). */
  rttMs: number | undefined;
  /** How the recipient's NAT maps TCP, from its mapping probe (undefined before it came). */
  mapping: MappingKind | undefined;
  timer: TimerHandle | undefined;
}

/** What the standby table needs from the broker around it. */
export interface StandbyContext {
  readonly clock: Clock;
  readonly registry: Registry;
  /** The session key of `uri`'s registration (undefined in open mode: no standby then). */
  sessionKeyFor(uri: string): Promise<Buffer | undefined>;
  /** Sends a message on a channel, with the broker's SOFTWARE and FINGERPRINT (and integrity under `key`). */
  send(channel: ExchangeChannel, message: StunMessage, key?: Buffer): void;
  /** The broker's alternate port (where the standby's mapping probe goes). */
  alternatePort?(): number | undefined;
  /** Where a recipient registered through another broker of a cluster must join: such a registration gets no standby here. */
  joinAt?(registration: Registration): TransportAddress | undefined;
  /** The rendezvous' mapping-probe book: the standby's probe is recorded there under its ATTEMPT-ID. */
  readonly probes: ProbeBook;
  /** Mapping behaviour per public address (mapping-memory.ts): a standby's is remembered there. */
  readonly memory: MappingMemory;
  /** Standbys held at most; 0 grants none. */
  readonly maxStandby: number;
  /** @default STANDBY_REFRESH_MS */
  readonly refreshMs?: number;
}

/** The standby exchanges of one broker process, one per URI. */
export class Standbys {
  readonly #ctx: StandbyContext;
  readonly #byUri = new Map<string, Standby>();
  readonly #refreshMs: number;
  #closed = false;

  constructor(ctx: StandbyContext) {
    this.#ctx = ctx;
    this.#refreshMs = ctx.refreshMs ?? STANDBY_REFRESH_MS;
  }

  /** Standbys held. */
  get size(): number {
    return this.#byUri.size;
  }

  /** STANDBY-GRANT for a new registration: 1 while the table has room, else 0 (at the cap a grant costs nothing). */
  grant(): number {
    return !this.#closed && this.#byUri.size < this.#ctx.maxStandby ? 1 : 0;
  }

  /**
   * Steps 2-5: a Standby request arrived on `channel`. Resolves once it is answered (the mapping
   * probe is waited for in the background): true when it is held, false when refused (answered,
   * and the channel closed). Never rejects on a bad request.
   */
  async serve(channel: ExchangeChannel, request: StunMessage): Promise<boolean> {
    let uri: string | undefined;
    let privateEndpoints: TransportAddress[];
    try {
      uri = getUri(request);
      privateEndpoints = getXorAddressAttrs(request, AttrType.PrivateEndpoint);
    } catch {
      uri = undefined;
      privateEndpoints = [];
    }
    if (uri === undefined) return this.#refuse(channel, request, StunErrorCode.BadRequest, 'Standby needs a well-formed URI');
    const registration = await this.#ctx.registry.get(uri);
    if (registration === undefined) return this.#refuse(channel, request, StunErrorCode.NotFound, `unknown URI: ${uri}`);
    const key = await this.#ctx.sessionKeyFor(uri);
    if (key === undefined || !verifyMessageIntegritySha256(request, key)) {
      return this.#refuse(channel, request, StunErrorCode.Forbidden, `a Standby needs integrity under the session of ${uri}`);
    }
    if (registration.transport === 'tcp' || registration.web === true || this.#ctx.joinAt?.(registration) !== undefined) {
      return this.#refuse(channel, request, StunErrorCode.Forbidden, 'no standby for a registration over a control connection, a WebSocket or another broker');
    }
    const replaced = this.#byUri.get(uri);
    if (this.#closed || (replaced === undefined && this.#byUri.size >= this.#ctx.maxStandby)) {
      return this.#refuse(channel, request, StunErrorCode.ServerError, 'broker busy: no standby granted');
    }
    if (replaced !== undefined) this.#drop(replaced);
    const publicEndpoint = remoteEndpoint(channel);
    const standby: Standby = {
      uri,
      channel,
      request,
      publicEndpoint,
      privateEndpoints,
      sessionKey: key,
      rttMs: undefined,
      // Until its own probe comes: 'none' by its own claim, else 'eim' if remembered (its probe then still checks it).
      mapping: claimsNoNat(publicEndpoint, privateEndpoints) ? { kind: 'none' } : this.#ctx.memory.known(publicEndpoint.address, this.#ctx.clock.now()),
      timer: undefined,
    };
    this.#byUri.set(uri, standby);
    channel.closed.then(() => this.#forget(standby), () => this.#forget(standby));
    // Step 3: the answer names the mapping probe's ID; only a probe under the session key counts.
    const probeId = Buffer.from(randomBytes(ATTEMPT_ID_LENGTH));
    const probeKey = probeId.toString('hex');
    this.#ctx.probes.require(probeKey, 'recipient', (probe) => verifyMessageIntegritySha256(probe, key));
    const response = request.successResponse();
    addXorAddress(response, AttrType.XorMappedAddress, publicEndpoint);
    addAttemptId(response, probeId);
    const alternatePort = this.#ctx.alternatePort?.();
    if (alternatePort !== undefined) addU32(response, AttrType.AlternatePort, alternatePort);
    addU32(response, AttrType.StandbyRefreshMs, this.#refreshMs);
    this.#ctx.send(channel, response, key);
    // Step 5 at once: the first round trip.
    this.#refresh(standby);
    // Step 4: the mapping, once, in the background.
    void this.#learnMapping(standby, probeKey);
    return true;
  }

  /** Step 4: waits for the standby's mapping probe (under `probeKey`) and classifies it. Never rejects. */
  async #learnMapping(standby: Standby, probeKey: string): Promise<void> {
    const { address } = standby.publicEndpoint;
    await this.#ctx.probes.wait(probeKey, 'recipient', address, STANDBY_PROBE_WAIT_MS);
    const probes = this.#ctx.probes.take(probeKey, 'recipient', address);
    if (probes.length === 0) return;
    const mapping = classifyTcpMapping(standby.publicEndpoint, probes, standby.privateEndpoints);
    standby.mapping = mapping;
    this.#ctx.memory.record(address, mapping, this.#ctx.clock.now());
  }

  /**
   * Step 6: the standby of `uri`, taken out of the table, when an attempt can be answered
   * down it: proven under `sessionKey` (the URI's session now), its round trip measured
   * and its mapping known ahead (mapping-memory.ts knownAhead), or known to be symmetric
   * when `relayed` says the attempt will be relayed whatever else comes (schedule.ts
   * relayCertain: the relay needs no port of the standby's). A standby of another
   * session, or from another public address than `registered` (the registration's public
   * endpoint now, in the attempt's family: its holder moved, the standby's path is dead), is
   * dropped; one not ready yet stays for the next attempt.
   */
  take(uri: string, sessionKey: Buffer | undefined, family?: AddressFamilyName, registered?: TransportAddress, relayed?: (mapping: MappingKind, publicAddress: string) => boolean): Standby | undefined {
    const standby = this.#byUri.get(uri);
    if (standby === undefined) return undefined;
    // An attempt runs in the family its Connect came in (family.ts): a standby of the other family stays for another.
    if (family !== undefined && standby.publicEndpoint.family !== family) return undefined;
    const moved = registered !== undefined && registered.family === standby.publicEndpoint.family && registered.address !== standby.publicEndpoint.address;
    if (sessionKey === undefined || !standby.sessionKey.equals(sessionKey) || moved) {
      this.#drop(standby);
      return undefined;
    }
    const mapping = standby.mapping;
    if (standby.rttMs === undefined || mapping === undefined) return undefined;
    // A port that cannot be punched from serves an attempt only when it will be relayed (`relayed`).
    const punchable = mapping.kind === 'eim' || mapping.kind === 'none';
    if (!punchable && (mapping.kind === 'unknown' || relayed?.(mapping, standby.publicEndpoint.address) !== true)) return undefined;
    this.#forget(standby);
    return standby;
  }

  /** Closes the standby of `uri`, if any (its registration was withdrawn). */
  dropUri(uri: string): void {
    const standby = this.#byUri.get(uri);
    if (standby !== undefined) this.#drop(standby);
  }

  /** Closes every standby held now; new ones are granted as before. */
  dropAll(): void {
    for (const standby of [...this.#byUri.values()]) this.#drop(standby);
  }

  /** Closes every standby; grants none from now on (broker shutdown). */
  close(): void {
    this.#closed = true;
    this.dropAll();
  }

  /** Step 5: one refresh now, then the next in `refreshMs`; a failure or a registration gone drops the standby. */
  #refresh(standby: Standby): void {
    const { clock } = this.#ctx;
    const deadline = clockDeadline(clock, STANDBY_REFRESH_TIMEOUT_MS, `refreshing the standby of ${standby.uri}`);
    const started = clock.now();
    standby.channel
      .request(StunMessage.request(Method.StandbyRefresh), deadline.signal)
      .then(async () => {
        standby.rttMs = clock.now() - started;
        const key = await this.#ctx.sessionKeyFor(standby.uri);
        if (this.#byUri.get(standby.uri) !== standby) return;
        if (key === undefined || !key.equals(standby.sessionKey)) {
          this.#drop(standby);
          return;
        }
        standby.timer = clock.setTimeout(() => this.#refresh(standby), this.#refreshMs);
      })
      .catch(() => this.#drop(standby))
      .finally(() => deadline.dispose());
  }

  /** Closes `standby` and forgets it. */
  #drop(standby: Standby): void {
    this.#forget(standby);
    standby.channel.end();
  }

  /** Forgets `standby` (if it is still the URI's) and stops its timer. */
  #forget(standby: Standby): void {
    this.#ctx.clock.clearTimeout(standby.timer);
    standby.timer = undefined;
    if (this.#byUri.get(standby.uri) === standby) this.#byUri.delete(standby.uri);
  }

  #refuse(channel: ExchangeChannel, request: StunMessage, code: number, reason: string): false {
    this.#ctx.send(channel, request.errorResponse(code, reason));
    channel.end();
    return false;
  }
}
