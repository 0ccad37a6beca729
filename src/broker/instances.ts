/**
 * One key, one live holder per URI. Every registering process names itself with a random
 * INSTANCE-ID (wire/instance.ts). When a proof of key arrives for a URI whose live session
 * belongs to the same key, the broker must tell apart:
 *
 * 1. the same instance registering again from a new place (it moved, or made a new socket):
 *    accept, replace;
 * 2. another live instance of the key (two `nattrav listen` with one identity): refuse with
 *    409 naming the URI, unless the proof carries TAKEOVER;
 * 3. a holder that is gone (a crashed listener restarted): accept at once, not after a lifetime.
 *
 * How: the broker asks the holder. It sends an INSTANCE-CHECK under the holder's session key,
 * the way connection requests go (its UDP mapping, its control connection, or through the
 * cluster broker that holds it), and waits at most {@link INSTANCE_CHECK_TIMEOUT_MS}. The
 * holder answers with its INSTANCE-ID under the same key; no answer means gone (so does a
 * peer too old to know the check: the behaviour before instances, replace). Freshness of the
 * last refresh cannot tell a crashed-and-restarted listener from a live twin for up to a
 * keepalive interval; the check tells in one round trip. The same instance needs no check: a
 * proof that carries PREVIOUS-SESSION under the holder's session key (only the holder knows it)
 * is case 1 at once, also through another broker of a cluster.
 *
 * Not abusable: only a proof of key (a signed, unused nonce echoed from its source) starts a
 * check, so only a holder of the key can make the broker talk to that key's holder; checks of
 * one URI share one exchange, and at most {@link MAX_PENDING_CHECKS} run at once (more are
 * refused 429). While a check runs, retransmissions of the proof that started it are ignored
 * (it was taken; answering them "replayed" would fail the peer's transaction).
 *
 * {@link decideInstance} is the decision (pure); {@link InstanceChecks} does the I/O around it.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, TimerHandle } from '../common/clock.js';
import { verifyMessageIntegritySha256 } from '../wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../wire/constants.js';
import { addInstanceCheck, getInstanceId, getPreviousSession, type InstanceCheckKind } from '../wire/instance.js';
import { verifyPreviousSessionMac } from '../security/previous-session.js';
import { StunMessage } from '../wire/message.js';
import { addUri } from '../wire/nattrav.js';
import type { Registration } from './registry/registry.js';
import type { Session } from './sessions.js';

/** How long the holder has to answer, in ms: a few round trips of any path, and short next to a peer's 2 s UDP try (registration.ts). */
export const INSTANCE_CHECK_TIMEOUT_MS = 1_000;
/** When the check is sent (again), in ms from its start: a lost datagram costs one retransmission, not the verdict. */
const CHECK_SENDS_MS: readonly number[] = [0, 200, 500];
/** Checks running at once (each holds a timer and a map entry); beyond, proofs that need one are refused 429. */
export const MAX_PENDING_CHECKS = 1_024;

/** What the broker does with a proof of key for a URI (see the module comment). */
export type InstanceDecision =
  /** Nothing to check: no live holder of this key, or the newcomer names no instance (an older peer). */
  | 'accept'
  /** The holder answered with the newcomer's own instance: it is the same process. */
  | 'same-instance'
  /** The holder did not answer: it is gone; the newcomer takes the URI. */
  | 'holder-gone'
  /** Another live instance holds it and the newcomer asked to take over. */
  | 'take-over'
  /** Another live instance holds it: refuse. */
  | 'refuse';

/**
 * The decision, from what the newcomer sent and what the holder answered (`holder`: its
 * INSTANCE-ID; 'no answer' when it did not answer in time; 'no holder' when there was none
 * of this key to ask).
 */
export function decideInstance(newcomer: Uint8Array | undefined, takeover: boolean, holder: Uint8Array | 'no answer' | 'no holder'): InstanceDecision {
  if (newcomer === undefined || holder === 'no holder') return 'accept';
  if (holder === 'no answer') return 'holder-gone';
  if (Buffer.from(holder).equals(Buffer.from(newcomer))) return 'same-instance';
  return takeover ? 'take-over' : 'refuse';
}

/** The holder to ask: its registration (where messages go) and its session (the key). */
export interface Holder {
  readonly registration: Registration;
  readonly session: Session;
}

/** What {@link InstanceChecks} needs from the broker around it. */
export interface InstanceCheckContext {
  /** Sends `message` to the recipient of `registration` under `key`, the way connection requests go. */
  send(registration: Registration, message: StunMessage, key: Buffer): void;
  readonly clock: Clock;
  /** The transaction ID of a new check (with `--workers`, it names the worker that sends it). @default random */
  transactionId?(): Uint8Array;
}

interface Pending {
  readonly key: Buffer;
  readonly settle: (instance: Uint8Array | undefined) => void;
}

/** The broker's instance checks (see the module comment). */
export class InstanceChecks {
  readonly #ctx: InstanceCheckContext;
  /** Check transaction ID (hex) -> who awaits its answer. */
  readonly #pending = new Map<string, Pending>();
  /** URI -> the check running for it (concurrent proofs share it). */
  readonly #byUri = new Map<string, Promise<Uint8Array | undefined>>();
  /** Transaction IDs (hex) of proofs waiting for a check: their retransmissions are ignored. */
  readonly #waiting = new Set<string>();

  constructor(ctx: InstanceCheckContext) {
    this.#ctx = ctx;
  }

  /** Checks running now. */
  get pending(): number {
    return this.#byUri.size;
  }

  /** Whether the proof with this transaction ID waits for a check (a retransmission of it is to be ignored). */
  isWaiting(transactionId: Uint8Array): boolean {
    return this.#waiting.has(hex(transactionId));
  }

  /**
   * Asks `holder` whether it is alive, for the proof `transactionId`; resolves with its
   * INSTANCE-ID, or undefined when it did not answer within {@link INSTANCE_CHECK_TIMEOUT_MS}.
   * Resolves 'busy' when {@link MAX_PENDING_CHECKS} checks run already.
   */
  async ask(holder: Holder, transactionId: Uint8Array): Promise<Uint8Array | undefined | 'busy'> {
    const uri = holder.registration.uri;
    let check = this.#byUri.get(uri);
    if (check === undefined) {
      if (this.#byUri.size >= MAX_PENDING_CHECKS) return 'busy';
      check = this.#exchange(holder, 'alive');
      this.#byUri.set(uri, check);
      const done = (): void => {
        if (this.#byUri.get(uri) === check) this.#byUri.delete(uri);
      };
      check.then(done, done);
    }
    const proof = hex(transactionId);
    this.#waiting.add(proof);
    try {
      return await check;
    } finally {
      this.#waiting.delete(proof);
    }
  }

  /** Tells `holder` it was taken over (under its session key, sent like a check; its answer is not needed). */
  tellTakenOver(holder: Holder): void {
    if (this.#pending.size >= MAX_PENDING_CHECKS) return;
    void this.#exchange(holder, 'takenOver');
  }

  /**
   * An answer the rendezvous did not know: true when it answers one of our checks (taken, or
   * ignored as forged: no integrity under the holder's session key).
   */
  answered(response: StunMessage): boolean {
    if (response.method !== Method.ConnectionRequest || response.cls !== MessageClass.SuccessResponse) return false;
    const pending = this.#pending.get(hex(response.transactionId));
    if (pending === undefined) return false;
    if (!verifyMessageIntegritySha256(response, pending.key)) return true;
    let instance: Uint8Array | undefined;
    try {
      instance = getInstanceId(response);
    } catch {
      instance = undefined;
    }
    pending.settle(instance);
    return true;
  }

  /** Sends one check (retransmitted per {@link CHECK_SENDS_MS}); resolves with the answer's INSTANCE-ID, or undefined at the deadline. */
  #exchange(holder: Holder, kind: InstanceCheckKind): Promise<Uint8Array | undefined> {
    const message = StunMessage.request(Method.ConnectionRequest, this.#ctx.transactionId?.() ?? randomBytes(12));
    addUri(message, holder.registration.uri);
    addInstanceCheck(message, kind);
    const id = hex(message.transactionId);
    const clock = this.#ctx.clock;
    return new Promise((resolve) => {
      const timers: TimerHandle[] = [];
      const settle = (instance: Uint8Array | undefined): void => {
        if (!this.#pending.delete(id)) return;
        for (const timer of timers) clock.clearTimeout(timer);
        // A 'takenOver' answer carries nothing we need: it only stops the retransmissions.
        resolve(kind === 'alive' ? instance : undefined);
      };
      this.#pending.set(id, { key: holder.session.key, settle });
      for (const at of CHECK_SENDS_MS) timers.push(clock.setTimeout(() => this.#ctx.send(holder.registration, message, holder.session.key), at));
      timers.push(clock.setTimeout(() => settle(undefined), INSTANCE_CHECK_TIMEOUT_MS));
    });
  }
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** What {@link admitInstance} needs of the registration context. */
export interface InstanceGateContext {
  readonly registry: { get(uri: string): Promise<Registration | undefined> };
  readonly sessions: { byUri(uri: string): Promise<Session | undefined> };
  readonly instances: InstanceChecks;
  reply(message: StunMessage): void;
}

/**
 * Step 1-3 of the module comment for a proof of key by `fingerprint` for `uri` (already
 * verified): resolves with the holder the newcomer displaces, if any (to tell it once the new
 * registration stands), or undefined after answering a refusal (409, or 429 when busy).
 */
export async function admitInstance(
  ctx: InstanceGateContext,
  request: StunMessage,
  uri: string,
  fingerprint: string,
  newcomer: Uint8Array | undefined,
  takeover: boolean,
): Promise<{ readonly displaced?: Holder } | undefined> {
  const session = newcomer === undefined ? undefined : await ctx.sessions.byUri(uri);
  const registration = session?.keyFingerprint === fingerprint ? await ctx.registry.get(uri) : undefined;
  if (session === undefined || registration === undefined || registration.keyFingerprint !== fingerprint) return {};
  const holder: Holder = { registration, session };
  // The same instance, with a new session (a new socket, another broker of the cluster): it knows the old session's key.
  if (provesPrevious(request, uri, session)) return {};
  const answer = await ctx.instances.ask(holder, request.transactionId);
  if (answer === 'busy') {
    ctx.reply(request.errorResponse(StunErrorCode.TooManyRequests, 'too many instance checks running; try again'));
    return undefined;
  }
  const decision = decideInstance(newcomer, takeover, answer ?? 'no answer');
  if (decision === 'refuse') {
    ctx.reply(request.errorResponse(StunErrorCode.HeldByInstance, `${uri} is held by another live instance of this key (take it over with --takeover)`));
    return undefined;
  }
  return decision === 'holder-gone' || decision === 'take-over' ? { displaced: holder } : {};
}

/** Whether the proof carries PREVIOUS-SESSION for `session`, under its key (a malformed one proves nothing). */
function provesPrevious(request: StunMessage, uri: string, session: Session): boolean {
  const nonce = request.get(AttrType.Nonce);
  let previous;
  try {
    previous = getPreviousSession(request);
  } catch {
    return false;
  }
  if (previous === undefined || nonce === undefined || hex(previous.sessionId) !== session.id) return false;
  return verifyPreviousSessionMac(session.key, nonce, uri, previous.mac);
}
