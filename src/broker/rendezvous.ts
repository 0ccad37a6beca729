/**
 * The rendezvous of one connection attempt, as the broker runs it:
 *
 * 1. The initiator opens a TCP exchange and sends Connect(URI, its private endpoints).
 * 2. The broker looks the URI up; unknown -> 404 at once. Otherwise it sends a
 *    ConnectionRequest(attempt ID) to the recipient's registered UDP endpoint (or
 *    control connection; registered through another broker of a cluster: through
 *    that broker, with JOIN-AT naming this one, cluster.ts), retransmitting until
 *    the recipient acknowledges or joins.
 * 3. The recipient opens a fresh TCP exchange and sends Join(attempt ID, its private endpoints).
 * 4. With both exchanges open the broker knows both public TCP endpoints. It
 *    probes each exchange once to measure its round-trip time.
 * 5. Meanwhile each peer has opened a MappingProbe connection from its
 *    exchange's local port to the broker's alternate port: two public
 *    endpoints per side tell how its NAT maps TCP (none, endpoint-independent,
 *    sequential with a step, random). Only probes from the exchange's own
 *    address count (probe-book.ts).
 * 6. From both sides, the round trips and what it scheduled before for this
 *    initiator and URI, the broker decides (schedule.ts, a pure function) the
 *    strategy, each side's answer and start delay; it answers both at the same
 *    instant, so the two SYNs cross, then closes its side of both exchanges
 *    first (the TIME_WAIT stays with the broker).
 *
 * A warm recipient (standby.ts) skips steps 2-5: its standby exchange, with its round
 * trip and its NAT's mapping measured ahead, takes the place of the Join, the initiator's
 * round trip comes in its Connect (CONNECT-RTT), and the broker answers both the moment
 * the Connect arrives (when the initiator's mapping is remembered, mapping-memory.ts). A
 * standby behind a symmetric NAT, which no strategy could punch from, serves only an attempt
 * the two NATs' kinds leave to the relay (schedule.ts relayCertain; the initiator's kind
 * remembered for its address): the relay is then scheduled at once, without either probe.
 *
 * This file does the I/O and the timers around those decisions: every handler
 * parses the whole request (exchange-requests.ts) before it changes any state, and time comes from the
 * injected clock, so tests run the whole rendezvous on a fake one.
 */
import { randomBytes } from 'node:crypto';
import { sameEndpoint } from '../common/endpoint.js';
import { clockDeadline, systemClock, type Clock, type TimerHandle } from '../common/clock.js';
import { isNattravError } from '../errors.js';
import { claimsNoNat, encodeMappingKind, type MappingKind } from '../nat/mapping.js';
import { strategyCost } from '../nat/plan.js';
import { StrategyCode, type StrategyName } from '../nat/strategy.js';
import { ATTEMPT_ID_LENGTH, AttrType, MessageClass, Method, StunErrorCode, TransportCode } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { newAttemptSecret, recipientSealKey, sealSecret } from '../security/attempt-secret.js';
import { newEphemeralKey, sessionKey } from '../security/proof.js';
import { verifyMessageIntegritySha256 } from '../wire/codec.js';
import {
  addAttemptId,
  addJoinAt,
  addPeerKey,
  addU32,
  addUri,
  addXorAddress,
  getErrorCode,
  type RoleName,
} from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import { AttemptHistory } from './attempt-history.js';
import { parseConnect, parseJoin, parseMappingProbe, remoteEndpoint, type ExchangeChannel } from './exchange-requests.js';
import { RateLimiter, resolveLimits, type BrokerLimits, type LimitedReport } from './limits.js';
import { ProbeBook, type ProbeOutcome } from './probe-book.js';
import { LateProbeChecks, MappingMemory } from './mapping-memory.js';
import { Standbys, type Standby } from './standby.js';
import type { Registration, Registry } from './registry/registry.js';
import { SequenceCounter } from './sequences.js';
import { relayCertain, relayOnly, scheduleAttempt, type Answer, type Schedule, type ScheduledBefore } from './schedule.js';
import { datagramSide, isDatagramRequest, scheduleDatagram } from './datagram-plan.js';
import { registrationInFamily } from './family.js';

export type { ExchangeChannel } from './exchange-requests.js';

/** The phases of an attempt (step numbers as in the module comment). */
export type AttemptState = 'notifying' | 'probing' | 'done' | 'failed';

interface Side {
  readonly channel: ExchangeChannel;
  readonly request: StunMessage;
  readonly publicEndpoint: TransportAddress;
  readonly privateEndpoints: TransportAddress[];
}

interface Attempt {
  /** What the initiator's FAILED-STRATEGIES says (a claim: see nat/plan.ts chooseStrategy). */
  readonly claimed: ReadonlySet<StrategyName>;
  readonly key: string;
  readonly id: Uint8Array;
  readonly uri: string;
  /** The fingerprint of the key the recipient registered with (absent in open mode): told to the initiator (PEER-KEY). */
  readonly recipientKey: string | undefined;
  /** The per-attempt secret, sealed to each side in its answer (security/attempt-secret.ts). */
  readonly secret: Buffer;
  /** The initiator's X25519 key from its Connect, to seal the secret for it. */
  readonly initiatorEphemeral: Uint8Array | undefined;
  /** The initiator's TCP handshake time to us, from its Connect (CONNECT-RTT): no Probe of it when given. */
  readonly initiatorRttMs: number | undefined;
  /** The recipient's session key when the Connect came (undefined only in open mode): Join, answers and sealing use it. */
  readonly sessionKey: Buffer | undefined;
  state: AttemptState;
  readonly initiator: Side;
  recipient: Side | undefined;
  readonly startedAt: number;
  notifyTimer: TimerHandle | undefined;
  deadline: TimerHandle | undefined;
  readonly requestTxid: Uint8Array;
  /** Where the ConnectionRequest goes (the registration when the attempt began): only an answer from there counts. */
  readonly notified: AnswerSource;
  /** The recipient's port mapping as registered when the attempt began (path `portmap`), if any. */
  readonly recipientMapped: TransportAddress | undefined;
  /** The address the recipient's SOCKS5 proxy bound for it when the attempt began (path `socks5-bind`), if any. */
  readonly recipientBound: TransportAddress | undefined;
  /** TRANSPORT = datagram: a UDP channel (datagram-plan.ts), not a TCP stream. */
  readonly datagram: boolean;
  /** The recipient registered over a WebSocket (Registration.web): the plan is the relay. */
  readonly recipientWeb: boolean;
  /** The recipient is answered down its standby exchange (standby.ts), not on a Join. */
  warm: boolean;
}

/** Where an answer to a ConnectionRequest came from: the recipient's UDP mapping, or its TCP control connection. */
export interface AnswerSource {
  readonly transport: 'udp' | 'tcp';
  readonly from: TransportAddress;
}

/** What the rendezvous needs from the broker around it. */
export interface RendezvousContext {
  readonly registry: Registry;
  /**
   * Sends a connection request to a registered recipient: over UDP to its mapping, or down
   * its TCP control connection; under integrity with `sessionKey` (the attempt's) when given.
   */
  notify(registration: Registration, message: StunMessage, sessionKey: Buffer | undefined): void;
  /** Sends a message on an exchange, with the broker's SOFTWARE and FINGERPRINT. */
  reply(channel: ExchangeChannel, message: StunMessage): void;
  readonly recipientTimeoutMs: number;
  readonly probeTimeoutMs: number;
  readonly maxPendingAttempts: number;
  /** Reports progress (for logs). */
  emit(event: RendezvousEvent): void;
  /** Allows one relay for the attempt (hex ID), whose Relay requests must carry integrity under `secret`; false when the relay is full. */
  authorizeRelay(attemptId: string, secret: Buffer): boolean;
  /** The session key of the registration holding `uri` (undefined in open mode): a Join must carry integrity under it. */
  sessionKeyFor(uri: string): Promise<Buffer | undefined>;
  /**
   * Cluster (cluster.ts): where a recipient registered through another broker must join,
   * i.e. this broker's address (JOIN-AT in the ConnectionRequest); undefined for our own.
   */
  joinAt?(registration: Registration): TransportAddress | undefined;
  /**
   * The next ConnectionRequest SEQUENCE of `uri`'s session, drawn from the store every
   * broker shares (sessions.ts nextRequestSequence); undefined without a session (open
   * mode), when the broker's own counter numbers the request.
   */
  nextSequence?(uri: string): Promise<number | undefined>;
  /** An answer to a ConnectionRequest none of our attempts sent (cluster.ts: maybe one we relayed for another broker). */
  foreignAnswer?(response: StunMessage, source: AnswerSource): void;
  /** The broker's alternate port, announced in every final answer (peers send their mapping probes there). */
  alternatePort?(): number | undefined;
  /** The broker's limits; `expensivePerUri` and `expensivePerSource` apply here. @default BROKER_LIMITS_DEFAULTS */
  readonly limits?: BrokerLimits;
  /** Reports a limit that bit (the broker throttles the reports). */
  limited?(report: LimitedReport): void;
  /** Time and timers. @default systemClock */
  readonly clock?: Clock;
  /**
   * What the whole broker scheduled per initiator address and URI, when its processes share
   * one record (`--workers`: the primary's AttemptHistory). @default this rendezvous's own
   */
  readonly history?: {
    recent(source: string, uri: string, now: number): Promise<ScheduledBefore[]>;
    record(source: string, uri: string, strategy: StrategyName, at: number): void;
  };
  /** The transaction ID of a new ConnectionRequest (with `--workers`, it names the worker that sends it). @default random */
  transactionId?(): Uint8Array;
  /** Standby exchanges granted at most (standby.ts); 0 grants none (`--workers` grants none). @default 0 */
  readonly maxStandby?: number;
  /** How often standbys are refreshed, in ms. @default STANDBY_REFRESH_MS */
  readonly standbyRefreshMs?: number;
}

/** A progress report of the rendezvous. */
export type RendezvousEvent =
  /** A Connect was taken on; `retry`: the initiator said earlier strategies of its connect failed (FAILED-STRATEGIES). */
  | { type: 'attempt'; uri: string; attemptId: string; initiator: TransportAddress; retry: boolean }
  | {
      type: 'scheduled';
      uri: string;
      attemptId: string;
      strategy: StrategyName;
      plan: StrategyName[];
      /** Strategies of the plan passed over, and why (nat/plan.ts SkipReason). */
      skipped: Array<{ strategy: StrategyName; reason: string }>;
      initiatorMapping: string;
      recipientMapping: string;
      rttInitiatorMs: number;
      rttRecipientMs: number;
      setupMs: number;
      /** The recipient was answered down its standby exchange: no ConnectionRequest, Join or Probe (standby.ts). */
      warm: boolean;
    }
  /** A ConnectionRequest went out for the attempt (its first transmission): the recipient had no usable standby. */
  | { type: 'connection-request'; uri: string; attemptId: string }
  | { type: 'attempt-failed'; uri: string; attemptId: string; reason: string };

/** Retransmission schedule of ConnectionRequest over UDP (RFC 8489 §6.2.1 style, faster start). */
export const NOTIFY_FIRST_RTO_MS = 250;
/** How long to wait for late mapping probes after both exchanges are in, in ms; they leave with the exchange, so only loss delays them. */
export const MAPPING_WAIT_MS = 1_000;
/** A recipient's refusal reason is passed on to the initiator up to this many characters. */
const MAX_REFUSAL_REASON = 200;

/** Runs every attempt of one broker. */
export class Rendezvous {
  readonly #ctx: RendezvousContext;
  readonly #clock: Clock;
  readonly #attempts = new Map<string, Attempt>();
  /** ConnectionRequest transaction ID (hex) -> attempt key. */
  readonly #byTxid = new Map<string, string>();
  readonly #probes: ProbeBook;
  /** What was scheduled per initiator address and URI: the evidence retries are planned from. */
  readonly #history = new AttemptHistory();
  /** Expensive-strategy budgets per recipient URI and per initiator address. */
  readonly #budgets: RateLimiter;
  /** The last ConnectionRequest SEQUENCE per URI (unless the context numbers them: `--workers`). */
  readonly #sequences = new SequenceCounter();
  /** How each NAT maps TCP, per public address (mapping-memory.ts). */
  readonly #memory = new MappingMemory();
  /** Attempts scheduled with a remembered mapping, whose late probes still check it. */
  readonly #late = new LateProbeChecks();
  /** The recipients' standby exchanges (standby.ts). */
  readonly #standbys: Standbys;

  constructor(ctx: RendezvousContext) {
    this.#ctx = ctx;
    this.#clock = ctx.clock ?? systemClock;
    this.#probes = new ProbeBook(this.#clock);
    this.#budgets = new RateLimiter(ctx.limits ?? resolveLimits(), () => this.#clock.now());
    this.#standbys = new Standbys({
      clock: this.#clock,
      registry: ctx.registry,
      sessionKeyFor: (uri) => ctx.sessionKeyFor(uri),
      send: (channel, message, key) => (key === undefined ? ctx.reply(channel, message) : sendUnder(channel, message, key)),
      ...(ctx.alternatePort === undefined ? {} : { alternatePort: () => ctx.alternatePort?.() }),
      ...(ctx.joinAt === undefined ? {} : { joinAt: (registration: Registration) => ctx.joinAt?.(registration) }),
      probes: this.#probes,
      memory: this.#memory,
      maxStandby: ctx.maxStandby ?? 0,
      ...(ctx.standbyRefreshMs === undefined ? {} : { refreshMs: ctx.standbyRefreshMs }),
    });
  }

  /** Standby exchanges held (standby.ts). */
  get standbys(): number {
    return this.#standbys.size;
  }

  /** The registration of `uri` was withdrawn by its holder: its standby closes with it. */
  withdrawn(uri: string): void {
    this.#standbys.dropUri(uri);
  }

  /** Closes every standby held now (standby.ts); new ones are granted as before. */
  dropStandbys(): void {
    this.#standbys.dropAll();
  }

  /** STANDBY-GRANT for a new registration (0 or 1; standby.ts). */
  standbyGrant(): number {
    return this.#standbys.grant();
  }

  /** A recipient's Standby request arrived on `channel` (standby.ts steps 2-5): true when it is held. Never rejects on a bad request. */
  standby(channel: ExchangeChannel, request: StunMessage): Promise<boolean> {
    return this.#standbys.serve(channel, request);
  }

  /** Attempts still running. */
  get pending(): number {
    return this.#attempts.size;
  }

  /** Mapping-probe records held (bounded; each is taken when its attempt is scheduled or abandoned). */
  get probeRecords(): number {
    return this.#probes.size;
  }

  /** Steps 1-2: an initiator's Connect request arrived on `channel`. Throws StunMalformed (nothing changed) on a malformed request. */
  async connect(channel: ExchangeChannel, request: StunMessage): Promise<void> {
    const parsed = parseConnect(request);
    const uri = parsed.uri;
    if (uri === undefined) {
      this.#fail(channel, request, StunErrorCode.BadRequest, 'Connect needs a URI attribute');
      return;
    }
    const found = await this.#ctx.registry.get(uri);
    if (found === undefined) {
      this.#fail(channel, request, StunErrorCode.NotFound, `unknown URI: ${uri}`);
      return;
    }
    // A dual-stack recipient is asked in the family the Connect came in (family.ts); FAMILY-ONLY: only there.
    const family = remoteEndpoint(channel).family;
    const registration = registrationInFamily(found, family, this.#clock.now()) ?? (parsed.familyOnly ? undefined : found);
    if (registration === undefined) {
      this.#fail(channel, request, StunErrorCode.NoRegistrationInFamily, `${uri} is not registered over ${family}`);
      return;
    }
    // Taken now: a session that ends later (a withdrawal) must not turn the checks off for this attempt.
    const uriSessionKey = await this.#ctx.sessionKeyFor(uri);
    // Shared by every broker of the session (a recipient acts on each number once, whichever broker
    // sent it); without a session (open mode: the recipient ignores SEQUENCE) the processes' own count.
    const sequence = (await this.#ctx.nextSequence?.(uri)) ?? this.#sequences.next(uri);
    if (this.#attempts.size >= this.#ctx.maxPendingAttempts) {
      this.#fail(channel, request, StunErrorCode.ServerError, 'broker busy: too many pending attempts');
      return;
    }
    // The initiator proposes the ID so its mapping probes can name the attempt before we answer.
    const proposed = parsed.proposedId;
    const id = proposed !== undefined && !this.#attempts.has(hex(proposed)) ? proposed : new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
    const key = hex(id);
    const notify = StunMessage.request(Method.ConnectionRequest, this.#ctx.transactionId?.());
    addAttemptId(notify, id);
    addUri(notify, uri);
    // Rising per URI, under the session's integrity: the recipient acts on each number once (its
    // replay window counts its own requests, so other recipients' traffic must not push it along).
    addU32(notify, AttrType.Sequence, sequence);
    // Registered through another broker of the cluster: that one passes the request on, and the recipient joins here.
    const joinAt = this.#ctx.joinAt?.(registration);
    if (joinAt !== undefined) addJoinAt(notify, joinAt);
    const datagram = isDatagramRequest(request);
    if (datagram) addU32(notify, AttrType.Transport, TransportCode.datagram);
    const attempt: Attempt = {
      claimed: parsed.claimed,
      key,
      id,
      uri,
      recipientKey: registration.keyFingerprint,
      secret: newAttemptSecret(),
      initiatorEphemeral: parsed.ephemeralKey,
      initiatorRttMs: parsed.connectRttMs,
      sessionKey: uriSessionKey,
      state: 'notifying',
      initiator: side(channel, request, parsed.privateEndpoints),
      recipient: undefined,
      startedAt: this.#clock.now(),
      notifyTimer: undefined,
      deadline: undefined,
      requestTxid: notify.transactionId,
      notified: { transport: registration.transport ?? 'udp', from: registration.publicEndpoint },
      recipientMapped: registration.mappedEndpoint,
      recipientBound: registration.boundEndpoint,
      datagram,
      recipientWeb: registration.web === true,
      warm: false,
    };
    this.#attempts.set(key, attempt);
    this.#byTxid.set(hex(notify.transactionId), key);
    // Each side's mapping probes count only under its key (probe-book.ts).
    const { mappingKey } = parsed;
    if (mappingKey !== undefined) this.#probes.require(key, 'initiator', (probe) => verifyMessageIntegritySha256(probe, mappingKey));
    const recipientKey = attempt.sessionKey;
    if (recipientKey !== undefined) this.#probes.require(key, 'recipient', (probe) => verifyMessageIntegritySha256(probe, recipientKey));
    this.#ctx.emit({ type: 'attempt', uri, attemptId: key, initiator: attempt.initiator.publicEndpoint, retry: parsed.claimed.size > 0 });

    channel.closed.then(() => {
      if (attempt.state === 'notifying' || attempt.state === 'probing') {
        this.#abandon(attempt, StunErrorCode.ServerError, 'the initiator closed its exchange');
      }
    }, () => undefined);
    // A warm recipient (standby.ts): answered down its standby, no ConnectionRequest.
    // A standby behind a symmetric NAT serves only an attempt the NATs' kinds leave to the relay.
    const initiatorKind = ownMapping(attempt.initiator) ?? this.#memory.behaviour(attempt.initiator.publicEndpoint.address, this.#clock.now());
    const relayed = (mapping: MappingKind, address: string): boolean =>
      initiatorKind !== undefined &&
      relayCertain(
        { mapping: initiatorKind, publicAddress: attempt.initiator.publicEndpoint.address },
        { mapping, publicAddress: address, mapped: attempt.recipientMapped !== undefined, bound: attempt.recipientBound !== undefined, web: attempt.recipientWeb },
      );
    const standby = datagram || joinAt !== undefined ? undefined : this.#standbys.take(uri, uriSessionKey, family, registration.publicEndpoint, relayed);
    const cold = (): void => this.#requestConnection(attempt, registration, notify);
    if (standby !== undefined) {
      const punchable = standby.mapping?.kind === 'eim' || standby.mapping?.kind === 'none';
      await this.#warm(attempt, standby, parsed.connectRttMs, cold, punchable ? undefined : initiatorKind);
      return;
    }
    cold();
  }

  /** Step 2, cold: the ConnectionRequest, retransmitted with doubling intervals until acknowledged or joined, under the recipient's deadline. */
  #requestConnection(attempt: Attempt, registration: Registration, notify: StunMessage): void {
    const { uri, key } = attempt;
    this.#ctx.emit({ type: 'connection-request', uri, attemptId: key });
    const send = (rto: number): void => {
      if (attempt.state !== 'notifying') return;
      this.#ctx.notify(registration, notify, attempt.sessionKey);
      attempt.notifyTimer = this.#clock.setTimeout(() => send(rto * 2), rto);
    };
    send(NOTIFY_FIRST_RTO_MS);
    attempt.deadline = this.#clock.setTimeout(() => {
      this.#abandon(attempt, StunErrorCode.RecipientUnreachable, `recipient ${uri} did not join within ${this.#ctx.recipientTimeoutMs} ms`);
    }, this.#ctx.recipientTimeoutMs);
  }

  /**
   * The attempt of a warm recipient: its standby stands for the Join (step 3) with its round
   * trip measured by the refreshes, the initiator's round trip is its CONNECT-RTT (a Probe
   * only when it sent none), and step 5 waits only for a mapping not remembered. A standby
   * that closes before its answer went down it (the recipient stopped it: busy, moving,
   * closing) hands the attempt to the cold path (`cold`): the recipient's answer to the
   * ConnectionRequest, a Join or a refusal with its reason, decides.
   * `initiatorKind`: the initiator's mapping kind from the memory, when the standby was taken
   * because the two kinds leave only the relay: scheduled with it, without its probe.
   */
  async #warm(attempt: Attempt, standby: Standby, initiatorRttMs: number | undefined, cold: () => void, initiatorKind?: MappingKind): Promise<void> {
    const recipient: Side = { channel: standby.channel, request: standby.request, publicEndpoint: standby.publicEndpoint, privateEndpoints: standby.privateEndpoints };
    attempt.recipient = recipient;
    attempt.warm = true;
    attempt.state = 'probing';
    standby.channel.closed.then(() => {
      if (attempt.state !== 'probing' || attempt.recipient !== recipient) return;
      attempt.recipient = undefined;
      attempt.warm = false;
      attempt.state = 'notifying';
      cold();
    }, () => undefined);
    let rtt = initiatorRttMs;
    if (rtt === undefined) {
      try {
        rtt = await this.#probe(attempt.initiator.channel);
      } catch (err) {
        this.#abandon(attempt, StunErrorCode.ServerError, `round-trip probe failed: ${isNattravError(err) ? err.message : String(err)}`);
        return;
      }
      // Gone cold meanwhile (its standby closed): the cold Join concludes it.
      if (attempt.state !== 'probing' || attempt.recipient !== recipient) return;
    }
    await this.#conclude(attempt, recipient, [rtt, standby.rttMs ?? 0], standby.mapping, initiatorKind);
  }

  /**
   * The recipient answered a ConnectionRequest (over UDP, or on its control connection):
   * stop retransmitting it, and on a refusal fail the attempt at once with the recipient's
   * reason. Only the recipient's own answer counts: with a session it must carry integrity
   * under the session key of the attempt's URI, and `source` (the UDP and TCP paths always
   * give it) must be where the request went. Anything else is ignored, so a forged
   * acknowledgement or refusal changes nothing.
   */
  acknowledge(response: StunMessage, source?: AnswerSource): void {
    const key = this.#byTxid.get(hex(response.transactionId));
    if (key === undefined) {
      if (source !== undefined) this.#ctx.foreignAnswer?.(response, source);
      return;
    }
    const attempt = this.#attempts.get(key);
    if (attempt === undefined || attempt.state !== 'notifying') return;
    const sessionKey = attempt.sessionKey;
    if (sessionKey !== undefined && !verifyMessageIntegritySha256(response, sessionKey)) return;
    if (source !== undefined && (source.transport !== attempt.notified.transport || !sameEndpoint(source.from, attempt.notified.from))) return;
    let refusal: string | undefined;
    if (response.cls === MessageClass.ErrorResponse) {
      try {
        refusal = getErrorCode(response)?.reason ?? 'no reason given';
      } catch {
        refusal = 'no reason given'; // a malformed ERROR-CODE from the recipient itself still refuses
      }
    }
    this.#clock.clearTimeout(attempt.notifyTimer);
    attempt.notifyTimer = undefined;
    if (refusal !== undefined) {
      this.#abandon(attempt, StunErrorCode.RecipientUnreachable, `recipient ${attempt.uri} refused the connection request: ${refusal.slice(0, MAX_REFUSAL_REASON)}`);
    }
  }

  /** Steps 3-6: the recipient joined on `channel`. Throws StunMalformed (nothing changed) on a malformed request. */
  async join(channel: ExchangeChannel, request: StunMessage): Promise<void> {
    const parsed = parseJoin(request);
    const attempt = parsed.id === undefined ? undefined : this.#attempts.get(hex(parsed.id));
    if (attempt === undefined || attempt.state !== 'notifying') {
      this.#fail(channel, request, StunErrorCode.NotFound, 'unknown or finished attempt');
      return;
    }
    // Only the holder of the registration may join: a bystander who learned the attempt ID cannot.
    const sessionKey = attempt.sessionKey;
    if (sessionKey !== undefined && !verifyMessageIntegritySha256(request, sessionKey)) {
      this.#fail(channel, request, StunErrorCode.Forbidden, `a Join needs integrity under the session of ${attempt.uri}`);
      return;
    }
    this.#clock.clearTimeout(attempt.notifyTimer);
    this.#clock.clearTimeout(attempt.deadline);
    const recipient = side(channel, request, parsed.privateEndpoints);
    attempt.recipient = recipient;
    attempt.state = 'probing';
    channel.closed.then(() => {
      if (attempt.state === 'probing') this.#abandon(attempt, StunErrorCode.ServerError, 'the recipient closed its exchange');
    }, () => undefined);

    // Step 4: each side's round trip, from its TCP handshake (CONNECT-RTT in its Connect or Join),
    // else one probe per exchange, both at once.
    let rtts: [number, number];
    try {
      rtts = await Promise.all([attempt.initiatorRttMs ?? this.#probe(attempt.initiator.channel), parsed.connectRttMs ?? this.#probe(channel)]);
    } catch (err) {
      const reason = isNattravError(err) ? err.message : String(err);
      this.#abandon(attempt, StunErrorCode.ServerError, `round-trip probe failed: ${reason}`);
      return;
    }
    if (attempt.state !== 'probing') return;

    await this.#conclude(attempt, recipient, rtts, undefined);
  }

  /**
   * Steps 5-6 with both sides in: each side's mapping probes, not waited for when its mapping
   * is known ahead (`recipientMapping`, from a standby; else remembered for the side's public
   * address, mapping-memory.ts; `initiatorKind`, a symmetric kind remembered, for an attempt
   * relayed at once), the decision, and both answers at the same instant (the recipient's down
   * its standby when the attempt is warm).
   */
  async #conclude(attempt: Attempt, recipient: Side, rtts: [number, number], recipientMapping: MappingKind | undefined, initiatorKind?: MappingKind): Promise<void> {
    // Step 5: the mapping probes of each side, from its exchange's own address (unless only the relay can come of it).
    const initiatorSource = attempt.initiator.publicEndpoint.address;
    const recipientSource = recipient.publicEndpoint.address;
    // 'none' is each side's own claim, read from its request; the memory holds only 'eim' (and a
    // symmetric kind for an attempt relayed at once), and only while its address looks uniform.
    // The memory spares the warm path the wait for the probes;
    // a probe that comes late still checks it (mapping-memory.ts LateProbeChecks).
    const remembered = {
      initiator: ownMapping(attempt.initiator) === undefined ? (initiatorKind ?? this.#memory.known(initiatorSource, this.#clock.now())) : undefined,
      recipient: recipientMapping === undefined && ownMapping(recipient) === undefined ? this.#memory.known(recipientSource, this.#clock.now()) : undefined,
    };
    const known = {
      initiator: ownMapping(attempt.initiator) ?? remembered.initiator,
      recipient: recipientMapping ?? ownMapping(recipient) ?? remembered.recipient,
    };
    const mappingWaitMs = relayOnly(attempt.recipientWeb, attempt.claimed) ? 0 : MAPPING_WAIT_MS;
    await Promise.all([
      known.initiator === undefined ? this.#probes.wait(attempt.key, 'initiator', initiatorSource, mappingWaitMs) : undefined,
      known.recipient === undefined ? this.#probes.wait(attempt.key, 'recipient', recipientSource, mappingWaitMs) : undefined,
    ]);
    // A warm attempt whose standby closed meanwhile went cold (#warm): its own Join concludes it, with these probes.
    if (attempt.recipient !== recipient) return;
    const checks = { initiator: this.#probes.checkOf(attempt.key, 'initiator'), recipient: this.#probes.checkOf(attempt.key, 'recipient') };
    // Take the records whatever became of the attempt: left behind they would only expire.
    const initiatorProbes = this.#probes.take(attempt.key, 'initiator', initiatorSource);
    const recipientProbes = this.#probes.take(attempt.key, 'recipient', recipientSource);
    // With --workers the evidence is the whole broker's: an earlier attempt may have run on another worker.
    const shared = this.#ctx.history === undefined ? undefined : await this.#ctx.history.recent(initiatorSource, attempt.uri, this.#clock.now());
    if (attempt.state !== 'probing' || attempt.recipient !== recipient) return;

    // Step 6: decide (pure), then act.
    const now = this.#clock.now();
    const rttPair = { initiatorMs: rtts[0], recipientMs: rtts[1] };
    const failures = { history: shared ?? this.#history.recent(initiatorSource, attempt.uri, now), claimed: attempt.claimed, budget: this.#budget(initiatorSource, attempt.uri, now) };
    const schedule = attempt.datagram
      ? scheduleDatagram(
          {
            initiator: datagramSide(attempt.initiator.request, attempt.initiator.publicEndpoint, attempt.initiator.privateEndpoints),
            recipient: datagramSide(recipient.request, recipient.publicEndpoint, recipient.privateEndpoints),
          },
          rttPair,
          failures,
          now,
        )
      : scheduleAttempt(
          {
            initiator: { ...attempt.initiator, probes: initiatorProbes, ...(known.initiator === undefined ? {} : { mapping: known.initiator }) },
            recipient: { ...recipient, probes: recipientProbes, ...(known.recipient === undefined ? {} : { mapping: known.recipient }), ...(attempt.recipientMapped === undefined ? {} : { mappedEndpoint: attempt.recipientMapped }), ...(attempt.recipientBound === undefined ? {} : { boundEndpoint: attempt.recipientBound }), web: attempt.recipientWeb },
          },
          rttPair,
          failures,
          now,
        );
    // What the probes showed is remembered for each NAT's address: its next attempt need not wait for them.
    if (!attempt.datagram) {
      if (initiatorProbes.length > 0) this.#memory.record(initiatorSource, schedule.mappings.initiator, now);
      if (recipientProbes.length > 0) this.#memory.record(recipientSource, schedule.mappings.recipient, now);
      if (initiatorProbes.length === 0 && remembered.initiator !== undefined) this.#late.expect(attempt.key, 'initiator', attempt.initiator.publicEndpoint, checks.initiator, now, remembered.initiator.kind);
      if (recipientProbes.length === 0 && remembered.recipient !== undefined) this.#late.expect(attempt.key, 'recipient', recipient.publicEndpoint, checks.recipient, now, remembered.recipient.kind);
    }
    this.#reportBudget(schedule, initiatorSource, attempt.uri, now);
    if (schedule.strategy === 'relay' && !this.#ctx.authorizeRelay(attempt.key, attempt.secret)) {
      this.#abandon(attempt, StunErrorCode.ServerError, 'broker busy: no relay capacity');
      return;
    }
    if (schedule.cost > 0) {
      this.#budgets.bucket('expensive-per-uri', attempt.uri).take(schedule.cost, now);
      this.#budgets.bucket('expensive-per-source', initiatorSource).take(schedule.cost, now);
    }
    this.#history.record(initiatorSource, attempt.uri, schedule.strategy, now);
    this.#ctx.history?.record(initiatorSource, attempt.uri, schedule.strategy, now);

    // Answer both at once, then close our side first.
    this.#ctx.reply(attempt.initiator.channel, this.#final(attempt, attempt.initiator, schedule.answers.initiator, schedule.strategy));
    if (attempt.warm) {
      // Down the standby: a request of its own, under the session key (the recipient checks it is the broker's).
      const answer = this.#final(attempt, recipient, schedule.answers.recipient, schedule.strategy, StunMessage.request(Method.StandbyAttempt));
      sendUnder(recipient.channel, answer, attempt.sessionKey);
    } else {
      this.#ctx.reply(recipient.channel, this.#final(attempt, recipient, schedule.answers.recipient, schedule.strategy));
    }
    attempt.state = 'done';
    this.#forget(attempt);
    attempt.initiator.channel.end();
    recipient.channel.end();
    this.#ctx.emit({
      type: 'scheduled',
      uri: attempt.uri,
      attemptId: attempt.key,
      strategy: schedule.strategy,
      plan: [...schedule.plan],
      skipped: schedule.skipped.map((s) => ({ ...s })),
      initiatorMapping: describeMapping(schedule.mappings.initiator),
      recipientMapping: describeMapping(schedule.mappings.recipient),
      rttInitiatorMs: rtts[0],
      rttRecipientMs: rtts[1],
      setupMs: Math.round(now - attempt.startedAt),
      warm: attempt.warm,
    });
  }

  /**
   * A MappingProbe arrived (on the alternate port): note the public endpoint the
   * broker sees for that side of that attempt (probe-book.ts decides whether it
   * counts), answer with it, and close first.
   */
  mappingProbe(channel: ExchangeChannel, request: StunMessage): void {
    const parsed = parseMappingProbe(request);
    if (parsed === undefined) {
      this.#fail(channel, request, StunErrorCode.BadRequest, 'MappingProbe needs ATTEMPT-ID and ROLE');
      return;
    }
    const endpoint = remoteEndpoint(channel);
    this.answerProbe(channel, request, parsed.role, endpoint, this.observeProbe(hex(parsed.id), parsed.role, endpoint, request));
  }

  /** Notes a mapping probe of (`attemptId` hex, `role`) from `endpoint` (probe-book.ts decides whether it counts). */
  observeProbe(attemptId: string, role: RoleName, endpoint: TransportAddress, request: StunMessage): ProbeOutcome {
    this.#late.observe(attemptId, role, endpoint, request, this.#memory, this.#clock.now());
    return this.#probes.observe(attemptId, role, endpoint, request);
  }

  /** Answers a mapping probe from `endpoint` after {@link Rendezvous.observeProbe} (here or in the worker running its attempt), and closes first. */
  answerProbe(channel: ExchangeChannel, request: StunMessage, role: RoleName, endpoint: TransportAddress, outcome: ProbeOutcome): void {
    if (outcome === 'full') {
      this.#fail(channel, request, StunErrorCode.ServerError, 'broker busy');
      return;
    }
    if (outcome === 'forged') {
      this.#fail(channel, request, StunErrorCode.Forbidden, `a MappingProbe of the ${role} needs integrity under its ${role === 'initiator' ? 'MAPPING-KEY' : 'session key'}`);
      return;
    }
    const response = request.successResponse();
    addXorAddress(response, AttrType.XorMappedAddress, endpoint);
    this.#ctx.reply(channel, response);
    channel.end();
  }

  /** True while the attempt (hex ID) runs here. */
  has(attemptId: string): boolean {
    return this.#attempts.has(attemptId);
  }

  /** Ends every attempt (broker shutdown). */
  close(): void {
    this.#standbys.close();
    for (const attempt of [...this.#attempts.values()]) {
      this.#abandon(attempt, StunErrorCode.ServerError, 'broker shutting down');
    }
  }

  /** Expensive-strategy tokens left for `uri` and `source`: the smaller of the two budgets. */
  #budget(source: string, uri: string, now: number): number {
    return Math.min(this.#budgets.bucket('expensive-per-uri', uri).available(now), this.#budgets.bucket('expensive-per-source', source).available(now));
  }

  /** Reports which budget made the schedule pass over an expensive strategy. */
  #reportBudget(schedule: Schedule, source: string, uri: string, now: number): void {
    const blocked = schedule.skipped.find((s) => s.reason === 'budget');
    if (blocked === undefined || this.#ctx.limited === undefined) return;
    const cost = strategyCost(blocked.strategy);
    const perUri = this.#budgets.bucket('expensive-per-uri', uri).available(now) < cost;
    this.#ctx.limited({ kind: perUri ? 'expensive-per-uri' : 'expensive-per-source', source, uri });
  }

  /** Adds ALTERNATE-PORT (where mapping probes go) to `message`, when the broker is listening. */
  #announceAlternatePort(message: StunMessage): void {
    const alternatePort = this.#ctx.alternatePort?.();
    if (alternatePort !== undefined) addU32(message, AttrType.AlternatePort, alternatePort);
  }

  async #probe(channel: ExchangeChannel): Promise<number> {
    const deadline = clockDeadline(this.#clock, this.#ctx.probeTimeoutMs, 'measuring the round trip to a peer');
    try {
      const started = this.#clock.now();
      const probe = StunMessage.request(Method.Probe);
      // Where mapping probes go: a peer new to this broker guessed port + 1, and probes again if that was wrong.
      this.#announceAlternatePort(probe);
      await channel.request(probe, deadline.signal);
      return this.#clock.now() - started;
    } finally {
      deadline.dispose();
    }
  }

  /** The final answer to `to`'s request (step 6). */
  #final(attempt: Attempt, to: Side, answer: Answer, strategy: StrategyName, response: StunMessage = to.request.successResponse()): StunMessage {
    addXorAddress(response, AttrType.XorMappedAddress, answer.publicEndpoint);
    addAttemptId(response, attempt.id);
    addXorAddress(response, AttrType.PeerPublicEndpoint, answer.peerPublicEndpoint);
    for (const endpoint of answer.peerPrivateEndpoints) addXorAddress(response, AttrType.PeerPrivateEndpoint, endpoint);
    addU32(response, AttrType.StartDelay, answer.startDelayMs);
    addU32(response, AttrType.Strategy, StrategyCode[strategy]);
    addU32(response, AttrType.Mapping, encodeMappingKind(answer.mapping));
    addU32(response, AttrType.PeerMapping, encodeMappingKind(answer.peerMapping));
    if (attempt.datagram) addU32(response, AttrType.Transport, TransportCode.datagram);
    this.#announceAlternatePort(response);
    if (to === attempt.initiator) {
      // The initiator authenticates a plain name end to end with the key its holder proved to us.
      if (attempt.recipientKey !== undefined) addPeerKey(response, attempt.recipientKey);
      // The attempt secret, sealed under X25519 with the initiator's ephemeral key.
      const ours = newEphemeralKey();
      const key = attempt.initiatorEphemeral === undefined ? undefined : sessionKey(ours, attempt.initiatorEphemeral, attempt.id);
      if (key !== undefined) {
        response.add(AttrType.EphemeralKey, ours.publicKey);
        response.add(AttrType.AttemptSecret, sealSecret(key, attempt.secret, attempt.id));
      }
    } else {
      response.add(AttrType.AttemptSecret, sealSecret(recipientSealKey(attempt.sessionKey, attempt.id), attempt.secret, attempt.id));
    }
    return response;
  }

  #fail(channel: ExchangeChannel, request: StunMessage, code: number, reason: string): void {
    this.#ctx.reply(channel, request.errorResponse(code, reason));
    channel.end();
  }

  #abandon(attempt: Attempt, code: number, reason: string): void {
    if (attempt.state === 'done' || attempt.state === 'failed') return;
    attempt.state = 'failed';
    this.#forget(attempt);
    this.#fail(attempt.initiator.channel, attempt.initiator.request, code, reason);
    if (attempt.recipient !== undefined) {
      this.#fail(attempt.recipient.channel, attempt.recipient.request, code, reason);
    }
    this.#ctx.emit({ type: 'attempt-failed', uri: attempt.uri, attemptId: attempt.key, reason });
  }

  #forget(attempt: Attempt): void {
    this.#clock.clearTimeout(attempt.notifyTimer);
    this.#clock.clearTimeout(attempt.deadline);
    this.#attempts.delete(attempt.key);
    this.#byTxid.delete(hex(attempt.requestTxid));
  }
}

function side(channel: ExchangeChannel, request: StunMessage, privateEndpoints: TransportAddress[]): Side {
  return { channel, request, publicEndpoint: remoteEndpoint(channel), privateEndpoints };
}

/** Sends `message` on `channel` with FINGERPRINT and, when there is a key, integrity under it. */
function sendUnder(channel: ExchangeChannel, message: StunMessage, key: Buffer | undefined): void {
  channel.send(message, { fingerprint: true, ...(key === undefined ? {} : { integritySha256Key: key }) });
}

/** 'none' when the side claims its public endpoint as its own (PRIVATE-ENDPOINT): no probe can add to that. */
function ownMapping(side: Side): MappingKind | undefined {
  return claimsNoNat(side.publicEndpoint, side.privateEndpoints) ? { kind: 'none' } : undefined;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** `eim`, `sequential(+1)`, ... for logs. */
function describeMapping(mapping: MappingKind): string {
  return mapping.kind === 'sequential' ? `sequential(+${mapping.step})` : mapping.kind;
}
