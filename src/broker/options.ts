import { ErrorCode, NattravError } from '../errors.js';
import type { AmplificationMode } from './amplification.js';
import type { BrokerLimitsOptions } from './limits.js';
import type { Registry } from './registry/registry.js';

/** Options of {@link createBroker}. */
export interface BrokerOptions {
  /**
   * Accept registrations without proof of key. Only for closed networks: anyone
   * can then take over any URI. The broker warns loudly at start. @default false
   */
  open?: boolean;
  /** Trust anchors (PEM) for peer certificates: URIs that are not self-certifying then need a certificate from this CA. */
  ca?: string;
  /** The broker's certificate (PEM). With `key`, peers that trust its CA can authenticate the broker. */
  cert?: string;
  /** The broker's private key (PEM). */
  key?: string;
  /** Most registration sessions held at once (memory bound). @default 100000 */
  maxSessions?: number;
  /** Address to bind UDP and TCP to. @default '0.0.0.0' */
  host?: string;
  /** Port for both UDP and TCP (0 picks a free one). @default 3478 */
  port?: number;
  /** Where registrations live. @default a new in-memory registry */
  registry?: Registry;
  /** Longest registration lifetime a peer may ask for, in ms. @default 120000 */
  maxLifetimeMs?: number;
  /** How long the recipient has to join an attempt after the broker's connection request, in ms. @default 5000 */
  recipientTimeoutMs?: number;
  /** How long a TCP exchange may stay idle before the broker drops it, in ms. @default 15000 */
  exchangeIdleTimeoutMs?: number;
  /** How long a round-trip probe may take, in ms. @default 3000 */
  probeTimeoutMs?: number;
  /** Most attempts waiting for their recipient at once. @default 4096 */
  maxPendingAttempts?: number;
  /** SOFTWARE attribute value in responses. @default 'nattrav broker' */
  software?: string;
  /**
   * A second IP address of this host (RFC 5780 §3: the "alternate address"). With it the broker
   * also listens on `alternateHost:port` and `alternateHost:alternatePort` (UDP and TCP), sends
   * OTHER-ADDRESS in Binding responses, and honours CHANGE-REQUEST "change IP". `host` must then be
   * a specific address, not a wildcard. No default: without it only "change port" is honoured.
   */
  alternateHost?: string;
  /** The second port (RFC 5780 §3: the "alternate port"), always listened on (UDP and TCP). @default port + 1 */
  alternatePort?: number;
  /** Bytes (both directions) one relayed connection may carry; 0 = unlimited. @default 0 */
  relayMaxBytes?: number;
  /** Milliseconds one relayed connection may last; 0 = unlimited. @default 0 */
  relayMaxDurationMs?: number;
  /** Rate limits and caps against floods and bad input (limits.ts); any subset. @default BROKER_LIMITS_DEFAULTS */
  limits?: BrokerLimitsOptions;
  /**
   * Never answer an unauthenticated UDP request with more bytes than it had
   * (amplification factor <= 1). Standard STUN clients' bare 20-byte Binding
   * requests then get no answer; nattrav's own clients pad their requests and
   * are unaffected. Off, a Binding answer may be up to 2.5 times its request,
   * from byte budgets per source and for the whole broker (amplification.ts,
   * limits `amplificationAllowance*`). Not with `stunCompat`. @default false
   */
  strictAmplification?: boolean;
  /**
   * Give small Binding requests the full RFC 5780 answer (MAPPED-ADDRESS,
   * RESPONSE-ORIGIN and OTHER-ADDRESS besides XOR-MAPPED-ADDRESS), up to 124
   * bytes (amplification up to 6.2 for a bare request), from the same byte
   * budgets. Only coturn's `turnutils_natdiscovery` needs it to print what it
   * prints against coturn's server; it classifies NATs without it. Not with
   * `strictAmplification`. @default false
   */
  stunCompat?: boolean;
}

/** Fully resolved broker options. */
export type ResolvedBrokerOptions = Required<Omit<BrokerOptions, 'registry' | 'alternateHost' | 'alternatePort' | 'limits' | 'ca' | 'cert' | 'key'>> & {
  ca?: string;
  cert?: string;
  key?: string;
  registry?: Registry;
  limits?: BrokerLimitsOptions;
  alternateHost?: string;
  alternatePort?: number;
};

/** Defaults of {@link BrokerOptions}, in one place. */
export const BROKER_DEFAULTS = {
  host: '0.0.0.0',
  /** RFC 8489 §18.4: the default STUN port. */
  port: 3478,
  /** Two minutes: a peer refreshing every 10 s can miss many refreshes before it lapses. */
  maxLifetimeMs: 120_000,
  /** A recipient answers in one UDP round trip plus one TCP handshake; 5 s covers a few lost datagrams. */
  recipientTimeoutMs: 5_000,
  /** An exchange is a few round trips; 15 s idle means the peer is gone. */
  exchangeIdleTimeoutMs: 15_000,
  /** One TCP round trip; 3 s means the path is unusable for a timed punch anyway. */
  probeTimeoutMs: 3_000,
  maxPendingAttempts: 4096,
  software: 'nattrav broker',
  open: false,
  strictAmplification: false,
  stunCompat: false,
  /** A session is ~200 bytes; 100,000 stay well under 100 MB. */
  maxSessions: 100_000,
  /** On one's own broker the relay is not metered; operators of a public broker set quotas. */
  relayMaxBytes: 0,
  relayMaxDurationMs: 0,
} as const satisfies ResolvedBrokerOptions;

/**
 * The anti-amplification mode the options ask for (amplification.ts); throws
 * InvalidArgument for a non-boolean flag or for both flags at once.
 */
export function amplificationMode(options: Pick<ResolvedBrokerOptions, 'strictAmplification' | 'stunCompat'>): AmplificationMode {
  for (const key of ['strictAmplification', 'stunCompat'] as const) {
    if (typeof options[key] !== 'boolean') {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option ${key} must be true or false, got ${JSON.stringify(options[key])}`);
    }
  }
  if (options.strictAmplification && options.stunCompat) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      'broker options strictAmplification and stunCompat contradict each other (answers never larger than requests vs. full RFC 5780 answers to small requests); pass one of them',
    );
  }
  return options.strictAmplification ? 'strict' : options.stunCompat ? 'stun-compat' : 'minimal';
}
