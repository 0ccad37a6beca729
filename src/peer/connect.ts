/**
 * The initiator: ask the broker for a URI, learn the recipient's endpoints, and
 * open a direct TCP connection by simultaneous open. A failed attempt is retried
 * from a fresh local port (a new exchange), as the NatTrav paper does.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { brokerFailed, describeTarget, dialTo, resolveBrokers, toBrokerList, type BrokerTarget } from './brokers.js';
import { startPhase, throwIfAborted } from '../common/signal.js';
import type { HostPort } from '../common/endpoint.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import { strategyMask, type StrategyName } from '../nat/strategy.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { addAttemptId, addU32, addUri } from '../wire/nattrav.js';
import { brokerPeerKeyOf, runAttempt } from './attempt.js';
import { sentHelloCertificate } from './hello.js';
import { checkFingerprint, defaultKnownKeysFile, expectedKey, readKnownKeys, rememberKey, type ExpectedKey } from '../security/known-keys.js';
import { uriKeyFingerprint } from '../security/uri.js';
import { handOver, type NattravSocket, type StrategyTrace } from './info.js';
import type { PeerTls } from './options.js';
import type { Identity } from '../security/identity.js';
import { PEER_DEFAULTS, type CommonConnectOptions, type ConnectOptions } from './options.js';
import { checkUri, positiveInt } from './validate.js';
import { unusableStrategies } from './dialer.js';
import { ReachWatch, whyStopped } from './reach.js';
import { dialerFromOptions } from './socks5.js';
import { checkFamily, checkFamilyDelay, raceFamilies, shouldRace, targetsInFamily } from './connect-race.js';
import { addFamilyOnly } from '../wire/family.js';

/** Errors after which another attempt cannot help (datagram/connect.ts shares them). */
export const FINAL_CODES: ReadonlySet<string> = new Set([
  ErrorCode.UnknownUri,
  ErrorCode.BrokerUnreachable,
  ErrorCode.RecipientUnreachable,
  ErrorCode.FamilyUnavailable,
  ErrorCode.BrokerAuth,
  ErrorCode.Forbidden,
  ErrorCode.Aborted,
  ErrorCode.InvalidArgument,
  ErrorCode.Tls,
  ErrorCode.TlsRequired,
  ErrorCode.PlainRequired,
  ErrorCode.KeyMismatch,
  // The recipient's allow-list refused our identity: it will refuse it again.
  ErrorCode.NotAllowed,
  // Our own files (identity, known keys): another attempt would fail the same way.
  ErrorCode.Identity,
  // The proxy we must go through failed (unreachable, refused our credentials).
  ErrorCode.Proxy,
]);

/** The options {@link connect} and `connectDatagram` share, checked (ERR_INVALID_ARGUMENT) and with their defaults. */
export interface CheckedConnectOptions {
  readonly brokers: HostPort[];
  readonly uri: string;
  readonly timeoutMs: number;
  readonly maxAttempts: number;
  readonly exchangeTimeoutMs: number;
  readonly punchTimeoutMs: number;
}

/**
 * Checks the options {@link connect} and `connectDatagram` (datagram/connect.ts) share:
 * throws at once when `options.signal` is aborted, else ERR_INVALID_ARGUMENT for a bad
 * broker, URI or limit; fills in the defaults (PEER_DEFAULTS).
 */
export function checkConnectOptions(options: CommonConnectOptions): CheckedConnectOptions {
  throwIfAborted(options.signal);
  const brokers = toBrokerList(options.broker);
  const uri = checkUri(options.uri);
  const timeoutMs = positiveInt(options.timeoutMs, PEER_DEFAULTS.timeoutMs, 'timeoutMs');
  const maxAttempts = positiveInt(options.maxAttempts, PEER_DEFAULTS.maxAttempts, 'maxAttempts');
  const exchangeTimeoutMs = positiveInt(options.exchangeTimeoutMs, PEER_DEFAULTS.exchangeTimeoutMs, 'exchangeTimeoutMs');
  const punchTimeoutMs = positiveInt(options.punchTimeoutMs, PEER_DEFAULTS.punchTimeoutMs, 'punchTimeoutMs');
  return { brokers, uri, timeoutMs, maxAttempts, exchangeTimeoutMs, punchTimeoutMs };
}

/** A new attempt's Connect: a fresh attempt id, the URI and, when any, the strategies claimed failed (FAILED-STRATEGIES). */
export function connectRequest(uri: string, failed: ReadonlySet<StrategyName>): { attemptId: Uint8Array; request: StunMessage } {
  const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
  const request = StunMessage.request(Method.Connect);
  addUri(request, uri);
  addAttemptId(request, attemptId);
  if (failed.size > 0) addU32(request, AttrType.FailedStrategies, strategyMask(failed));
  return { attemptId, request };
}

/**
 * Connects to the peer registered as `options.uri`. Resolves with a connected
 * `net.Socket` whose other end is the recipient's socket; its `nattrav`
 * property says how it was made. Rejects with a {@link NattravError}.
 */
export async function connect(options: ConnectOptions): Promise<NattravSocket> {
  const { brokers, uri, timeoutMs, maxAttempts, exchangeTimeoutMs, punchTimeoutMs } = checkConnectOptions(options);
  const family = checkFamily(options.family);
  checkFamilyDelay(options.familyDelayMs);
  // TLS (our identity, the certificate library) is made ready once a connection exists, not
  // before the first packet: see tlsSettings. Once a connect in this process has loaded
  // secure.ts, our identity is made while the attempt runs.
  const tlsWanted = options.tls === false ? undefined : (options.tls ?? true);
  const pinned = options.expectKey === undefined ? undefined : checkFingerprint(options.expectKey, 'expectKey');
  const dialer = dialerFromOptions(options);
  if (tlsWanted === undefined && pinned !== undefined) {
    throw new NattravError(ErrorCode.InvalidArgument, 'expectKey needs TLS: the key is checked in the TLS handshake (drop tls: false / --no-tls)');
  }
  let tlsReady = tlsWanted !== undefined && secureModule !== undefined ? tlsSettings(tlsWanted) : undefined;
  // Awaited once the attempt has a connection, and its failure surfaces there; none, if no attempt gets that far.
  tlsReady?.catch(() => undefined);
  // TLS will check the recipient's key whatever the broker says (the one-flight Hello needs that, hello.ts).
  const keyChecked = uriKeyFingerprint(uri) !== undefined || pinned !== undefined || hasCa(tlsWanted);
  const knownKeysFile = options.knownKeysFile === false ? undefined : (options.knownKeysFile ?? defaultKnownKeysFile());
  const started = performance.now();
  const whole = startPhase(options.signal, timeoutMs, `connecting to ${uri}`);
  // Every dial goes through it: a time limit that runs out before one reached a broker is ERR_BROKER_UNREACHABLE.
  const reach = new ReachWatch(dialer);
  const stopped = (): NattravError => whyStopped(whole.error(), options.signal, reach, timeoutMs, brokers.map((b) => `${b.host}:${b.port}`).join(', '));
  // Every address of every broker, tried in order while they do not answer.
  let targets: BrokerTarget[];
  try {
    targets = await resolveBrokers(brokers, whole.signal);
    // An attempt runs in one family; without one asked, IPv6 and IPv4 race when both can work
    // (not through a proxy or tunnel: it, not we, reaches the broker in some family).
    if (family !== undefined) targets = targetsInFamily(targets, family);
    else if (unusableStrategies(dialer).length === 0 && shouldRace(targets)) {
      whole.dispose();
      return await raceFamilies(options, connect);
    }
  } catch (err) {
    whole.dispose();
    throw whole.signal.aborted ? stopped() : err;
  }
  let current = 0;
  // Our Hello carries our certificate (hello.ts) until a recipient closes on it, as one older than
  // that Hello does: then the next attempt sends the Hello without it, and TLS confirms as before.
  let certify = true;
  let retryUncertified = false;
  const uncertify = (): void => {
    certify = false;
    retryUncertified = true;
  };
  // Through a proxy, strategies that need our own sockets are claimed failed up front: the broker plans what can work.
  const failed = new Set<StrategyName>(unusableStrategies(dialer));
  const trace: StrategyTrace[] = [];
  let lastError: NattravError | undefined;
  try {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const { attemptId, request } = connectRequest(uri, failed);
      if (family !== undefined) addFamilyOnly(request);
      try {
        const socket = await runAttempt({
          broker: dialTo(targets, current), request, attemptId, role: 'initiator', uri, tls: tlsWanted !== undefined, signal: whole.signal, exchangeTimeoutMs, punchTimeoutMs, started, attempt, trace,
          recipientKeyChecked: (exchange) => keyChecked || exchange.peerKeyFingerprint !== undefined,
          ...(tlsWanted === undefined
            ? {}
            : {
                helloCertificate: () => (certify ? helloCertificate((tlsReady ??= tlsSettings(tlsWanted))) : Promise.resolve(undefined)),
                onCertifiedHelloClosed: uncertify,
              }),
          ...(options.brokerCa === undefined ? {} : { brokerCa: options.brokerCa }),
          dialer: reach,
          onTrace: (event) => {
            if (event.outcome === 'failed') trace.push(event);
            options.onTrace?.(event);
          },
        });
        if (tlsWanted === undefined) return handOver(socket);
        try {
          const tls = await (tlsReady ??= tlsSettings(tlsWanted));
          const expected = await expectedRecipientKey(uri, socket, {
            pinned,
            knownKeysFile,
            acceptChange: options.acceptChangedKey === true,
            caConfigured: tls.ca.length > 0 || tls.identity.ca.length > 0,
          });
          const secured = await tls.secure(socket, {
            identity: tls.identity,
            ca: tls.ca,
            expectedPeerUri: uri,
            ...(expected.fingerprint === undefined ? {} : { expectedKeyFingerprint: expected.fingerprint, keyPinned: pinned !== undefined }),
            signal: whole.signal,
            started,
          });
          const info = secured.nattrav;
          if (expected.remember && knownKeysFile !== undefined && info.peerVouchedBy === 'key' && info.peerKeyFingerprint !== undefined) {
            await rememberKey(knownKeysFile, uri, info.peerKeyFingerprint);
          }
          return handOver(secured);
        } catch (err) {
          socket.destroy();
          if (certify && sentHelloCertificate(socket) && secureModule?.closedDuringTls(err) === true) uncertify();
          throw err;
        }
      } catch (err) {
        if (whole.signal.aborted) throw withTrace(stopped(), trace);
        const error = isNattravError(err) ? err : new NattravError(ErrorCode.ConnectFailed, String(err), { cause: err });
        if (retryUncertified) {
          // The recipient closed on our certified Hello (an older nattrav): the same plan again, the Hello without it.
          retryUncertified = false;
          lastError = error;
          continue;
        }
        // Unreachable, or accepting and never answering (hung, stopped, overloaded): the broker, not the path, failed.
        if (brokerFailed(error, (err as { strategy?: StrategyName }).strategy) && current + 1 < targets.length) {
          // This broker does not answer: the next one of the cluster gets the same attempt.
          options.onBrokerFailed?.({ broker: describeTarget(targets[current] as BrokerTarget), error });
          current++;
          attempt--;
          continue;
        }
        if (FINAL_CODES.has(error.code)) throw targets.length > 1 && error.code === ErrorCode.BrokerUnreachable ? allUnreachable(error, targets) : error;
        const strategy = (err as { strategy?: StrategyName }).strategy;
        if (strategy !== undefined) failed.add(strategy);
        lastError = error;
      }
    }
    throw withTrace(
      new NattravError(ErrorCode.ConnectFailed, `could not connect to ${uri}: ${maxAttempts} attempt(s) failed; last: ${lastError?.message ?? 'unknown'}`, { cause: lastError }),
      trace,
    );
  } finally {
    whole.dispose();
  }
}

/** The last broker's error, saying that every broker was tried. */
function allUnreachable(error: NattravError, targets: readonly BrokerTarget[]): NattravError {
  return new NattravError(error.code, `${error.message} (all ${targets.length} brokers tried: ${targets.map(describeTarget).join(', ')})`, { cause: error });
}

/** Appends "strategies tried: ..." to an error's message, so a failing connect says what ran and why each failed. */
function withTrace(error: NattravError, trace: readonly StrategyTrace[]): NattravError {
  if (trace.length === 0) return error;
  const tried = trace.map((t) => `${t.strategy} (attempt ${t.attempt}): ${t.outcome}${t.error === undefined ? '' : ` - ${t.error}`}`).join('; ');
  const annotated = new NattravError(error.code, `${error.message}; strategies tried: ${tried}`, { cause: error.cause ?? error });
  return Object.assign(annotated, { trace });
}

/**
 * The key a plain-name recipient must prove (see known-keys.ts); none for a self-certifying
 * URI, whose name is its key; none but a pinned one when a CA is configured.
 */
async function expectedRecipientKey(
  uri: string,
  socket: NattravSocket,
  options: { pinned: string | undefined; knownKeysFile: string | undefined; acceptChange: boolean; caConfigured: boolean },
): Promise<ExpectedKey> {
  if (uriKeyFingerprint(uri) !== undefined) return { fingerprint: undefined, remember: false };
  // With a CA the CA is the authority for names; only a key the user pinned also counts.
  if (options.caConfigured) return { fingerprint: options.pinned, remember: false };
  const remembered = options.knownKeysFile === undefined ? undefined : (await readKnownKeys(options.knownKeysFile)).get(uri);
  const fromBroker = brokerPeerKeyOf(socket);
  return expectedKey({
    uri,
    acceptChange: options.acceptChange,
    ...(options.pinned === undefined ? {} : { pinned: options.pinned }),
    ...(fromBroker === undefined ? {} : { fromBroker }),
    ...(remembered === undefined ? {} : { remembered }),
    ...(options.knownKeysFile === undefined ? {} : { file: options.knownKeysFile }),
  });
}

/** True when `tls` names trust anchors (its own or its identity's): a CA then vouches for the recipient's name. */
function hasCa(tls: true | PeerTls | undefined): boolean {
  return typeof tls === 'object' && ((tls.ca?.length ?? 0) > 0 || (tls.identity?.ca.length ?? 0) > 0);
}

/** Our identity and trust anchors for TLS, and the function that runs it. */
interface TlsSettings {
  readonly identity: Identity;
  readonly ca: string[];
  readonly secure: typeof import('./secure.js').secure;
  /** Our certificate (DER) for the Hello to carry (hello.ts); undefined when it cannot be read. */
  readonly certificate: Uint8Array | undefined;
}

/**
 * Our identity and trust anchors for TLS, made when the first attempt has a connection.
 * secure.ts and the certificate library under it are loaded here, not at start: a CLI
 * process spends its first 100-200 ms on them otherwise, before its first packet
 * (issue 13). Not during the exchange either: blocking the event loop then would delay
 * our answer to the broker's round-trip probe and skew the timing of the punch.
 */
async function tlsSettings(tls: true | PeerTls): Promise<TlsSettings> {
  const settings = tls === true ? {} : tls;
  secureModule ??= await import('./secure.js');
  const { secure, throwawayIdentity } = secureModule;
  const identity = settings.identity ?? (await throwawayIdentity());
  return { identity, ca: settings.ca ?? [], secure, certificate: certificateDer(identity.certPem) };
}

/** The first certificate of `pem` as DER; undefined when it cannot be read (TLS then reports what is wrong). */
function certificateDer(pem: string): Uint8Array | undefined {
  try {
    return new X509Certificate(pem).raw;
  } catch {
    return undefined;
  }
}

/** Our certificate for the Hello once `tls` is ready; undefined when TLS failed to get ready (its error is reported where TLS awaits it). */
function helloCertificate(tls: Promise<TlsSettings>): Promise<Uint8Array | undefined> {
  return tls.then((settings) => settings.certificate, () => undefined);
}

/** secure.ts, once a connect in this process has loaded it (tlsSettings). */
let secureModule: typeof import('./secure.js') | undefined;
