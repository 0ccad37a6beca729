/**
 * The I/O around family-race.ts: which address family an initiator's attempt runs in
 * (`connect({ family })`), whether it races IPv6 against IPv4 (the broker has an address of
 * each and this host can use IPv6 towards it), and the race itself: each family is a whole
 * `connect` with FAMILY-ONLY, started, aborted and released as the state machine says.
 */
import { debuglog } from 'node:util';
import { systemClock, type Clock } from '../common/clock.js';
import { ErrorCode, NattravError, isNattravError } from '../errors.js';
import type { BrokerTarget } from './brokers.js';
import { FAMILY_RACE_DELAY_MS, FamilyRace, type Family } from './family-race.js';
import type { NattravSocket, StrategyTrace } from './info.js';
import type { ConnectOptions } from './options.js';
import { hasUsableAddress } from './second-family.js';

/** NODE_DEBUG=nattrav:family: each step of the race (which family started, was aborted, won). */
const debug = debuglog('nattrav:family');

/** The family names of TransportAddress by number. */
const FAMILY_NAMES = { 4: 'IPv4', 6: 'IPv6' } as const;

/** `connect({ family })` checked: undefined (race when both work), 4 or 6; else ERR_INVALID_ARGUMENT. */
export function checkFamily(family: unknown): Family | undefined {
  if (family === undefined || family === 4 || family === 6) return family;
  throw new NattravError(ErrorCode.InvalidArgument, `family: expected 4 (IPv4 only) or 6 (IPv6 only), got ${JSON.stringify(family)}; leave it out to race IPv6 against IPv4`);
}

/** `familyDelayMs` checked: a whole number of ms, 0 or more. @default {@link FAMILY_RACE_DELAY_MS} */
export function checkFamilyDelay(delayMs: unknown): number {
  if (delayMs === undefined) return FAMILY_RACE_DELAY_MS;
  if (typeof delayMs !== 'number' || !Number.isInteger(delayMs) || delayMs < 0) {
    throw new NattravError(ErrorCode.InvalidArgument, `familyDelayMs: expected a whole number of milliseconds, 0 or more, got ${String(delayMs)}`);
  }
  return delayMs;
}

/** The broker addresses of `family`; ERR_FAMILY_UNAVAILABLE when there is none. */
export function targetsInFamily(targets: readonly BrokerTarget[], family: Family): BrokerTarget[] {
  const name = FAMILY_NAMES[family];
  const kept = targets.filter((t) => t.address.family === name);
  if (kept.length === 0) {
    const have = targets.map((t) => t.address.address).join(', ');
    throw new NattravError(ErrorCode.FamilyUnavailable, `the broker has no ${name} address (resolved to ${have}); ${family === 6 ? 'drop --ipv6' : 'drop --ipv4'} or give a broker address of that family`);
  }
  return kept;
}

/** Whether to race: the broker has an address of each family and this host can use IPv6 towards its IPv6 one. */
export function shouldRace(targets: readonly BrokerTarget[], usable = hasUsableAddress): boolean {
  const v6 = targets.find((t) => t.address.family === 'IPv6');
  return v6 !== undefined && targets.some((t) => t.address.family === 'IPv4') && usable('IPv6', v6.address);
}

/**
 * Races IPv6 against IPv4 (family-race.ts): `connectIn` is `connect` itself, called with
 * `family` set for each side. Resolves with the winner's socket (its `nattrav.family` says
 * which); rejects naming both families' errors, or with the caller's abort.
 */
export function raceFamilies(options: ConnectOptions, connectIn: (options: ConnectOptions) => Promise<NattravSocket>, clock: Clock = systemClock): Promise<NattravSocket> {
  const delayMs = checkFamilyDelay(options.familyDelayMs);
  return new Promise<NattravSocket>((resolve, reject) => {
    const controllers = new Map<Family, AbortController>();
    const outer = options.signal;
    const onAbort = (): void => {
      race.abort();
      reject(outer?.reason instanceof Error ? outer.reason : new NattravError(ErrorCode.Aborted, 'connect aborted'));
    };
    const race = new FamilyRace<NattravSocket>(clock, delayMs, (action) => {
      debug('%s: %s IPv%s', options.uri, action.type, action.type === 'failed' ? [...action.errors.keys()].join('+IPv') : action.family);
      switch (action.type) {
        case 'start': {
          const controller = new AbortController();
          controllers.set(action.family, controller);
          const signal = outer === undefined ? controller.signal : AbortSignal.any([outer, controller.signal]);
          const family = action.family;
          const onTrace = (event: StrategyTrace): void => {
            // A direct strategy succeeded: the traversal is done, TLS follows (family-race.ts step 2).
            if (event.outcome === 'succeeded' && event.strategy !== 'relay') race.traversed(family);
            options.onTrace?.({ ...event, family });
          };
          connectIn({ ...options, family, signal, onTrace }).then(
            (socket) => race.settle(family, { ok: true, value: socket, direct: socket.nattrav.path !== 'relay' }),
            (err: unknown) => race.settle(family, { ok: false, error: err instanceof Error ? err : new Error(String(err)) }),
          );
          return;
        }
        case 'abort':
          controllers.get(action.family)?.abort(new NattravError(ErrorCode.Aborted, `the ${FAMILY_NAMES[action.family === 6 ? 4 : 6]} attempt connected first`));
          return;
        case 'release':
          action.value.destroy();
          return;
        case 'won':
          outer?.removeEventListener('abort', onAbort);
          resolve(action.value);
          return;
        case 'failed':
          outer?.removeEventListener('abort', onAbort);
          reject(bothFailed(options.uri, action.errors));
      }
    });
    if (outer?.aborted === true) {
      onAbort();
      return;
    }
    outer?.addEventListener('abort', onAbort, { once: true });
    race.start();
  });
}

/**
 * The error of a race that neither family won: the code of the more telling failure (a family
 * the recipient or broker does not have says less than why the other one failed), and both
 * families' messages.
 */
function bothFailed(uri: string, errors: ReadonlyMap<Family, Error>): NattravError {
  const v6 = errors.get(6);
  const v4 = errors.get(4);
  const telling = [v4, v6].find((e) => e !== undefined && !isNattravError(e, ErrorCode.FamilyUnavailable)) ?? v4 ?? v6;
  const code = isNattravError(telling) ? telling.code : ErrorCode.ConnectFailed;
  const parts = [v6 === undefined ? undefined : `over IPv6: ${v6.message}`, v4 === undefined ? undefined : `over IPv4: ${v4.message}`].filter((p) => p !== undefined);
  const error = new NattravError(code, `could not connect to ${uri} over either family: ${parts.join('; ')}`, { cause: telling });
  const trace = (telling as { trace?: unknown } | undefined)?.trace;
  return trace === undefined ? error : Object.assign(error, { trace });
}
