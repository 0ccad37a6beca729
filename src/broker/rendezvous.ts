/**
 * The rendezvous of one connection attempt, as the broker runs it:
 *
 * 1. The initiator opens a TCP exchange and sends Connect(URI, its private endpoints).
 * 2. The broker looks the URI up; unknown -> 404 at once. Otherwise it sends a
 *    ConnectionRequest(attempt ID) to the recipient's registered UDP endpoint,
 *    retransmitting until the recipient acknowledges or joins.
 * 3. The recipient opens a fresh TCP exchange and sends Join(attempt ID, its private endpoints).
 * 4. With both exchanges open the broker knows both public TCP endpoints. It
 *    probes each exchange once to measure its round-trip time.
 * 5. Meanwhile each peer has opened a MappingProbe connection from its
 *    exchange's local port to the broker's alternate port: two public
 *    endpoints per side tell how its NAT maps TCP (none, endpoint-independent,
 *    sequential with a step, random). From both, the broker plans the
 *    strategies (nat/plan.ts) and picks the first that has not failed yet.
 * 6. It answers both requests at the same instant with the strategy, the other
 *    side's endpoints and mapping, and a start delay, so the two SYNs cross,
 *    then closes its side of both exchanges first (the TIME_WAIT stays with the broker).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { toTransportAddress } from '../common/endpoint.js';
import { startPhase } from '../common/signal.js';
import type { StunChannel } from '../common/stun-channel.js';
import { isNattravError } from '../errors.js';
import { ATTEMPT_ID_LENGTH, AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import {
  addAttemptId,
  addU32,
  addUri,
  addXorAddress,
  getAttemptId,
  getU32Attr,
  getUri,
  getXorAddressAttrs,
} from '../wire/nattrav.js';
import type { TransportAddress } from '../wire/types.js';
import type { Registration, Registry } from './registry/registry.js';
import { startDelays } from './timing.js';
import { classifyTcpMapping, encodeMappingKind, lastObservedPort, type MappingKind } from '../nat/mapping.js';
import { nextStrategy, planStrategies } from '../nat/plan.js';
import { StrategyCode, strategiesInMask, type StrategyName } from '../nat/strategy.js';

/** The phases of an attempt (step numbers as in the module comment). */
export type AttemptState = 'notifying' | 'probing' | 'done' | 'failed';

interface Side {
  readonly channel: StunChannel;
  readonly request: StunMessage;
  readonly publicEndpoint: TransportAddress;
  readonly privateEndpoints: TransportAddress[];
}

interface Attempt {
  readonly failed: ReadonlySet<StrategyName>;
  readonly key: string;
  readonly id: Uint8Array;
  readonly uri: string;
  state: AttemptState;
  readonly initiator: Side;
  recipient: Side | undefined;
  readonly startedAt: number;
  notifyTimer: NodeJS.Timeout | undefined;
  deadline: NodeJS.Timeout | undefined;
  readonly requestTxid: Uint8Array;
}

/** What the rendezvous needs from the broker around it. */
export interface RendezvousContext {
  readonly registry: Registry;
  /** Sends a connection request to a registered recipient: over UDP to its mapping, or down its TCP control connection. */
  notify(registration: Registration, message: StunMessage): void;
  /** Sends a message on an exchange, with the broker's SOFTWARE and FINGERPRINT. */
  reply(channel: StunChannel, message: StunMessage): void;
  readonly recipientTimeoutMs: number;
  readonly probeTimeoutMs: number;
  readonly maxPendingAttempts: number;
  /** Reports progress (for logs). */
  emit(event: RendezvousEvent): void;
  /** Allows one relay for the attempt (hex ID); false when the relay is full. */
  authorizeRelay(attemptId: string): boolean;
}

/** A progress report of the rendezvous. */
export type RendezvousEvent =
  | { type: 'attempt'; uri: string; attemptId: string; initiator: TransportAddress }
  | {
      type: 'scheduled';
      uri: string;
      attemptId: string;
      strategy: StrategyName;
      plan: StrategyName[];
      initiatorMapping: string;
      recipientMapping: string;
      rttInitiatorMs: number;
      rttRecipientMs: number;
      setupMs: number;
    }
  | { type: 'attempt-failed'; uri: string; attemptId: string; reason: string };

/** Retransmission schedule of ConnectionRequest over UDP (RFC 8489 §6.2.1 style, faster start). */
const NOTIFY_FIRST_RTO_MS = 250;
/** Mapping probes a peer sends per attempt (with its exchange: two observations from one local port). */
export const MAPPING_PROBES = 1;
/** How long to wait for late mapping probes after both exchanges are in, in ms; they leave with the exchange, so only loss delays them. */
const MAPPING_WAIT_MS = 1_000;
/** Probe observations kept for attempts the broker has not seen yet, at most (memory bound). */
const MAX_PROBE_KEYS = 8192;
/** Birthday: the cone side starts this much later, so the random side's mappings exist when its probes arrive. */
const BIRTHDAY_CONE_LAG_MS = 200;

/** Mapping-probe observations of one side of one attempt. */
interface ProbeRecord {
  readonly endpoints: TransportAddress[];
  readonly expires: number;
  waiters: Array<() => void>;
}

/** Runs every attempt of one broker. */
export class Rendezvous {
  readonly #ctx: RendezvousContext;
  readonly #attempts = new Map<string, Attempt>();
  /** ConnectionRequest transaction ID (hex) -> attempt key. */
  readonly #byTxid = new Map<string, string>();
  /** `<attempt id hex>/<role>` -> probe observations. */
  readonly #probes = new Map<string, ProbeRecord>();

  constructor(ctx: RendezvousContext) {
    this.#ctx = ctx;
  }

  /** Attempts still running. */
  get pending(): number {
    return this.#attempts.size;
  }

  /** Mapping-probe records held (bounded; each is taken when its attempt is scheduled or abandoned). */
  get probeRecords(): number {
    return this.#probes.size;
  }

  /** Steps 1-2: an initiator's Connect request arrived on `channel`. */
  async connect(channel: StunChannel, request: StunMessage): Promise<void> {
    const uri = getUri(request);
    if (uri === undefined) {
      this.#fail(channel, request, StunErrorCode.BadRequest, 'Connect needs a URI attribute');
      return;
    }
    const registration = await this.#ctx.registry.get(uri);
    if (registration === undefined) {
      this.#fail(channel, request, StunErrorCode.NotFound, `unknown URI: ${uri}`);
      return;
    }
    if (this.#attempts.size >= this.#ctx.maxPendingAttempts) {
      this.#fail(channel, request, StunErrorCode.ServerError, 'broker busy: too many pending attempts');
      return;
    }
    // The initiator proposes the ID so its mapping probes can name the attempt before we answer.
    const proposed = getAttemptId(request);
    const proposedKey = proposed === undefined ? undefined : Buffer.from(proposed).toString('hex');
    const id = proposed !== undefined && !this.#attempts.has(proposedKey as string) ? proposed : new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
    const key = Buffer.from(id).toString('hex');
    const notify = StunMessage.request(Method.ConnectionRequest);
    addAttemptId(notify, id);
    addUri(notify, uri);
    const attempt: Attempt = {
      failed: new Set(strategiesInMask(getU32Attr(request, AttrType.FailedStrategies) ?? 0)),
      key,
      id,
      uri,
      state: 'notifying',
      initiator: this.#side(channel, request),
      recipient: undefined,
      startedAt: performance.now(),
      notifyTimer: undefined,
      deadline: undefined,
      requestTxid: notify.transactionId,
    };
    this.#attempts.set(key, attempt);
    this.#byTxid.set(Buffer.from(notify.transactionId).toString('hex'), key);
    this.#ctx.emit({ type: 'attempt', uri, attemptId: key, initiator: attempt.initiator.publicEndpoint });

    // Retransmit the ConnectionRequest with doubling intervals until acknowledged or joined.
    const send = (rto: number): void => {
      if (attempt.state !== 'notifying') return;
      this.#ctx.notify(registration, notify);
      attempt.notifyTimer = setTimeout(() => send(rto * 2), rto);
    };
    send(NOTIFY_FIRST_RTO_MS);
    attempt.deadline = setTimeout(() => {
      this.#abandon(attempt, StunErrorCode.RecipientUnreachable, `recipient ${uri} did not join within ${this.#ctx.recipientTimeoutMs} ms`);
    }, this.#ctx.recipientTimeoutMs);
    channel.closed.then(() => {
      if (attempt.state === 'notifying' || attempt.state === 'probing') {
        this.#abandon(attempt, StunErrorCode.ServerError, 'the initiator closed its exchange');
      }
    }, () => undefined);
  }

  /** A response to a ConnectionRequest arrived over UDP: stop retransmitting it. */
  acknowledge(response: StunMessage): void {
    const txid = Buffer.from(response.transactionId).toString('hex');
    const key = this.#byTxid.get(txid);
    if (key === undefined) return;
    const attempt = this.#attempts.get(key);
    if (attempt === undefined) return;
    clearTimeout(attempt.notifyTimer);
    attempt.notifyTimer = undefined;
    if (response.cls === MessageClass.ErrorResponse) {
      this.#abandon(attempt, StunErrorCode.RecipientUnreachable, `recipient ${attempt.uri} refused the connection request`);
    }
  }

  /** Steps 3-5: the recipient joined on `channel`. */
  async join(channel: StunChannel, request: StunMessage): Promise<void> {
    const id = getAttemptId(request);
    const attempt = id === undefined ? undefined : this.#attempts.get(Buffer.from(id).toString('hex'));
    if (attempt === undefined || attempt.state !== 'notifying') {
      this.#fail(channel, request, StunErrorCode.NotFound, 'unknown or finished attempt');
      return;
    }
    clearTimeout(attempt.notifyTimer);
    clearTimeout(attempt.deadline);
    attempt.recipient = this.#side(channel, request);
    attempt.state = 'probing';
    channel.closed.then(() => {
      if (attempt.state === 'probing') this.#abandon(attempt, StunErrorCode.ServerError, 'the recipient closed its exchange');
    }, () => undefined);

    // Step 4: one probe per exchange, both at once.
    let rtts: [number, number];
    try {
      rtts = await Promise.all([this.#probe(attempt.initiator.channel), this.#probe(channel)]);
    } catch (err) {
      const reason = isNattravError(err) ? err.message : String(err);
      this.#abandon(attempt, StunErrorCode.ServerError, `round-trip probe failed: ${reason}`);
      return;
    }
    if (attempt.state !== 'probing') return;

    // Step 5: how each NAT maps TCP, and the strategy for this attempt.
    await Promise.all([this.#waitForProbes(`${attempt.key}/initiator`), this.#waitForProbes(`${attempt.key}/recipient`)]);
    // Take the records whatever became of the attempt: left behind with their waiters they would never be pruned.
    const initiatorProbes = this.#takeProbes(`${attempt.key}/initiator`);
    const recipientProbes = this.#takeProbes(`${attempt.key}/recipient`);
    if (attempt.state !== 'probing') return;
    const recipient = attempt.recipient;
    const initiatorMapping = classifyTcpMapping(attempt.initiator.publicEndpoint, initiatorProbes, attempt.initiator.privateEndpoints);
    const recipientMapping = classifyTcpMapping(recipient.publicEndpoint, recipientProbes, recipient.privateEndpoints);
    const plan = planStrategies(
      { mapping: initiatorMapping, publicAddress: attempt.initiator.publicEndpoint.address },
      { mapping: recipientMapping, publicAddress: recipient.publicEndpoint.address },
    );
    const strategy = nextStrategy(plan, attempt.failed);
    if (strategy === 'relay' && !this.#ctx.authorizeRelay(attempt.key)) {
      this.#abandon(attempt, StunErrorCode.ServerError, 'broker busy: no relay capacity');
      return;
    }

    // Step 6: answer both at once, then close our side first.
    const delays = startDelays(rtts[0], rtts[1]);
    let initiatorDelay = delays.initiatorMs;
    let recipientDelay = delays.recipientMs;
    if (strategy === 'birthday') {
      if (initiatorMapping.kind === 'random') recipientDelay += BIRTHDAY_CONE_LAG_MS;
      else initiatorDelay += BIRTHDAY_CONE_LAG_MS;
    }
    // For prediction the other side is named by the last port its NAT gave out.
    const endpointFor = (side: Side, mapping: MappingKind, probes: TransportAddress[]): TransportAddress =>
      strategy === 'predicted' && mapping.kind === 'sequential'
        ? { ...side.publicEndpoint, port: lastObservedPort(side.publicEndpoint, probes) }
        : side.publicEndpoint;
    const initiatorView = { endpoint: endpointFor(attempt.initiator, initiatorMapping, initiatorProbes), mapping: initiatorMapping };
    const recipientView = { endpoint: endpointFor(recipient, recipientMapping, recipientProbes), mapping: recipientMapping };
    this.#ctx.reply(attempt.initiator.channel, this.#final(attempt, attempt.initiator, initiatorView, recipient, recipientView, strategy, initiatorDelay));
    this.#ctx.reply(recipient.channel, this.#final(attempt, recipient, recipientView, attempt.initiator, initiatorView, strategy, recipientDelay));
    attempt.state = 'done';
    this.#forget(attempt);
    attempt.initiator.channel.end();
    recipient.channel.end();
    this.#ctx.emit({
      type: 'scheduled',
      uri: attempt.uri,
      attemptId: attempt.key,
      strategy,
      plan,
      initiatorMapping: describeMapping(initiatorMapping),
      recipientMapping: describeMapping(recipientMapping),
      rttInitiatorMs: rtts[0],
      rttRecipientMs: rtts[1],
      setupMs: Math.round(performance.now() - attempt.startedAt),
    });
  }

  /**
   * A MappingProbe arrived (on the alternate port): record the public endpoint
   * the broker sees for that side of that attempt, answer, and close first.
   */
  mappingProbe(channel: StunChannel, request: StunMessage): void {
    const id = getAttemptId(request);
    const role = getU32Attr(request, AttrType.Role);
    if (id === undefined || (role !== 0 && role !== 1)) {
      this.#fail(channel, request, StunErrorCode.BadRequest, 'MappingProbe needs ATTEMPT-ID and ROLE');
      return;
    }
    const socket = channel.socket;
    const endpoint = toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0);
    const key = `${Buffer.from(id).toString('hex')}/${role === 0 ? 'initiator' : 'recipient'}`;
    this.#pruneProbes();
    let record = this.#probes.get(key);
    if (record === undefined) {
      if (this.#probes.size >= MAX_PROBE_KEYS) {
        this.#fail(channel, request, StunErrorCode.ServerError, 'broker busy');
        return;
      }
      record = { endpoints: [], expires: Date.now() + 30_000, waiters: [] };
      this.#probes.set(key, record);
    }
    if (record.endpoints.length < MAPPING_PROBES) record.endpoints.push(endpoint);
    const response = request.successResponse();
    addXorAddress(response, AttrType.XorMappedAddress, endpoint);
    this.#ctx.reply(channel, response);
    channel.end();
    if (record.endpoints.length >= MAPPING_PROBES) for (const wake of record.waiters.splice(0)) wake();
  }

  #waitForProbes(key: string): Promise<void> {
    const record = this.#probes.get(key);
    if (record !== undefined && record.endpoints.length >= MAPPING_PROBES) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, MAPPING_WAIT_MS);
      let entry = this.#probes.get(key);
      if (entry === undefined) {
        entry = { endpoints: [], expires: Date.now() + 30_000, waiters: [] };
        this.#probes.set(key, entry);
      }
      entry.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #takeProbes(key: string): TransportAddress[] {
    const record = this.#probes.get(key);
    this.#probes.delete(key);
    return record?.endpoints ?? [];
  }

  #pruneProbes(): void {
    const now = Date.now();
    for (const [key, record] of this.#probes) if (record.expires < now && record.waiters.length === 0) this.#probes.delete(key);
  }

  /** Ends every attempt (broker shutdown). */
  close(): void {
    for (const attempt of [...this.#attempts.values()]) {
      this.#abandon(attempt, StunErrorCode.ServerError, 'broker shutting down');
    }
  }

  #side(channel: StunChannel, request: StunMessage): Side {
    const socket = channel.socket;
    return {
      channel,
      request,
      publicEndpoint: toTransportAddress(socket.remoteAddress ?? '0.0.0.0', socket.remotePort ?? 0),
      privateEndpoints: getXorAddressAttrs(request, AttrType.PrivateEndpoint),
    };
  }

  async #probe(channel: StunChannel): Promise<number> {
    const phase = startPhase(undefined, this.#ctx.probeTimeoutMs, 'measuring the round trip to a peer');
    try {
      const started = performance.now();
      await channel.request(StunMessage.request(Method.Probe), phase.signal);
      return performance.now() - started;
    } finally {
      phase.dispose();
    }
  }

  #final(
    attempt: Attempt,
    to: Side,
    own: { endpoint: TransportAddress; mapping: MappingKind },
    other: Side,
    peer: { endpoint: TransportAddress; mapping: MappingKind },
    strategy: StrategyName,
    delayMs: number,
  ): StunMessage {
    const response = to.request.successResponse();
    addXorAddress(response, AttrType.XorMappedAddress, to.publicEndpoint);
    addAttemptId(response, attempt.id);
    addXorAddress(response, AttrType.PeerPublicEndpoint, peer.endpoint);
    for (const endpoint of other.privateEndpoints) addXorAddress(response, AttrType.PeerPrivateEndpoint, endpoint);
    addU32(response, AttrType.StartDelay, delayMs);
    addU32(response, AttrType.Strategy, StrategyCode[strategy]);
    addU32(response, AttrType.Mapping, encodeMappingKind(own.mapping));
    addU32(response, AttrType.PeerMapping, encodeMappingKind(peer.mapping));
    return response;
  }

  #fail(channel: StunChannel, request: StunMessage, code: number, reason: string): void {
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
    clearTimeout(attempt.notifyTimer);
    clearTimeout(attempt.deadline);
    this.#attempts.delete(attempt.key);
    this.#byTxid.delete(Buffer.from(attempt.requestTxid).toString('hex'));
  }
}

/** `eim`, `sequential(+1)`, ... for logs. */
function describeMapping(mapping: MappingKind): string {
  return mapping.kind === 'sequential' ? `sequential(+${mapping.step})` : mapping.kind;
}
