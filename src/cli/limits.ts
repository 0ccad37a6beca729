/**
 * `nattrav broker --limit NAME=VALUE` (repeatable; in the config file a list under
 * "limit"): every rate, cap and timeout of the broker, by the name the library uses
 * (BrokerLimits and the timing options of BrokerOptions). A rate is PER_SECOND/BURST,
 * the rest whole numbers (ms for names ending in Ms). `--list-limits` prints them all.
 */
import { BROKER_DEFAULTS, ErrorCode, NattravError, type BrokerOptions } from '../index.js';
import { BROKER_LIMITS_DEFAULTS, type BrokerLimits, type RateSpec } from '../broker/limits.js';

/** Broker options that are limits too (timeouts and capacities), set with --limit like the rest. */
const OPTION_LIMITS = ['maxLifetimeMs', 'recipientTimeoutMs', 'exchangeIdleTimeoutMs', 'exchangeMaxLifetimeMs', 'messageTimeoutMs', 'probeTimeoutMs', 'maxPendingAttempts', 'maxSessions'] as const;
type OptionLimit = (typeof OPTION_LIMITS)[number];

/** What each --limit name means, for --list-limits (the library's doc comments, shortened). */
const MEANING: Record<keyof BrokerLimits | OptionLimit, string> = {
  trackedBuckets: 'rate-limit buckets (source x kind) tracked at once',
  udpRegister: 'UDP Register requests per source address',
  udpBinding: 'UDP Binding requests per source address',
  udpOther: 'other UDP datagrams per source address',
  tcpAccept: 'TCP connections accepted per source address',
  tcpRequest: 'TCP requests per source address',
  connect: 'Connect and Join requests per source address',
  connectPerUri: 'Connect requests per recipient URI, all sources together',
  maxPendingPerUri: 'Connect requests waiting at once for one URI',
  relay: 'Relay requests per source address',
  mappingProbe: 'MappingProbe requests per source address',
  expensivePerUri: 'expensive-strategy tokens per recipient URI (prediction 1, birthday 8)',
  expensivePerSource: 'expensive-strategy tokens per initiator address',
  maxRegistrationsPerSource: 'live registrations per source address',
  maxRegistrations: 'live registrations in total',
  maxConnections: 'open TCP connections in total',
  maxConnectionsPerSource: 'open TCP connections per source address',
  firstMessageTimeoutMs: 'ms for a TCP connection to deliver its first whole message',
  maxWriteBufferBytes: 'bytes queued for a TCP peer that does not read',
  amplificationAllowance: 'bytes/s unauthenticated UDP answers may exceed their requests, in total',
  amplificationAllowancePerSource: 'the same per source address',
  limitedEventsPerSecond: "'limited' events logged per second at most",
  maxLifetimeMs: 'longest registration lifetime a peer may ask for, ms',
  recipientTimeoutMs: 'ms a recipient has to join an attempt',
  exchangeIdleTimeoutMs: 'ms a TCP exchange may stay idle',
  exchangeMaxLifetimeMs: 'longest life of a TCP exchange, ms',
  messageTimeoutMs: 'ms for a started STUN message to arrive whole on TCP',
  probeTimeoutMs: 'ms a round-trip probe may take',
  maxPendingAttempts: 'attempts waiting for their recipient at once',
  maxSessions: 'registration sessions held at once',
};

const LIMIT_NAMES = Object.keys(MEANING) as Array<keyof typeof MEANING>;

function isRate(name: string): name is keyof BrokerLimits {
  const value = (BROKER_LIMITS_DEFAULTS as unknown as Record<string, unknown>)[name];
  return typeof value === 'object' && value !== null;
}

function isOptionLimit(name: string): name is OptionLimit {
  return (OPTION_LIMITS as readonly string[]).includes(name);
}

function invalid(message: string): NattravError {
  return new NattravError(ErrorCode.InvalidArgument, `--limit ${message}`);
}

/** A non-negative number (rates may be fractional: 0.5 per second). */
function number(text: string, what: string, whole: boolean): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0 || (whole && !Number.isSafeInteger(value))) {
    throw invalid(`${what}: expected ${whole ? 'a whole number' : 'a number'} >= 0, got "${text}"`);
  }
  return value;
}

/**
 * Turns `--limit` values into broker options (`limits` and the timing options). Throws
 * ERR_INVALID_ARGUMENT naming the entry: an unknown name (listing the known ones), a
 * malformed value, a name given twice. The values' ranges are checked by the broker
 * itself (its messages name the option).
 */
export function parseLimits(entries: readonly string[]): Pick<BrokerOptions, 'limits' | OptionLimit> {
  const limits: Record<string, number | RateSpec> = {};
  const options: Partial<Record<OptionLimit, number>> = {};
  const seen = new Set<string>();
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw invalid(`"${entry}": expected NAME=VALUE, e.g. maxConnections=20000 or udpRegister=50/200 (--list-limits lists the names)`);
    const name = entry.slice(0, eq).trim();
    const text = entry.slice(eq + 1).trim();
    if (!(LIMIT_NAMES as string[]).includes(name)) throw invalid(`"${entry}": no limit is called ${name}; known: ${LIMIT_NAMES.join(', ')}`);
    if (seen.has(name)) throw invalid(`"${entry}": ${name} is given twice`);
    seen.add(name);
    if (isRate(name)) {
      const parts = text.split('/');
      if (parts.length !== 2) throw invalid(`"${entry}": ${name} is a rate: expected PER_SECOND/BURST, e.g. ${name}=20/200`);
      limits[name] = { perSecond: number(parts[0] as string, `${name} per second`, false), burst: number(parts[1] as string, `${name} burst`, false) };
    } else if (isOptionLimit(name)) {
      options[name] = number(text, name, true);
    } else {
      limits[name] = number(text, name, true);
    }
  }
  return { ...(Object.keys(limits).length === 0 ? {} : { limits: limits as Partial<BrokerLimits> }), ...options };
}

/** The table `--list-limits` prints: name, default, meaning. */
export function limitsTable(): string {
  const rows = LIMIT_NAMES.map((name) => {
    const value = isOptionLimit(name) ? BROKER_DEFAULTS[name] : BROKER_LIMITS_DEFAULTS[name];
    const shown = typeof value === 'object' ? `${value.perSecond}/${value.burst}` : String(value);
    return [name, shown, MEANING[name]] as const;
  });
  const width = (i: 0 | 1): number => Math.max(...rows.map((r) => r[i].length));
  return `${['NAME'.padEnd(width(0)), 'DEFAULT'.padEnd(width(1)), 'MEANING'].join('  ')}\n${rows.map((r) => `${r[0].padEnd(width(0))}  ${r[1].padEnd(width(1))}  ${r[2]}`).join('\n')}\n`;
}

/** A broker error about a value that came from `--limit` (its message names the option), re-worded to name the flag. */
export function blameLimit(err: unknown, entries: readonly string[]): unknown {
  if (!(err instanceof NattravError)) return err;
  const named = /broker (?:limit|option) (\w+)/.exec(err.message)?.[1];
  const entry = entries.find((e) => e.slice(0, e.indexOf('=')).trim() === named);
  return entry === undefined ? err : new NattravError(err.code, `--limit ${entry}: ${err.message}`, { cause: err });
}
