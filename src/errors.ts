/**
 * The one error class of nattrav. Callers branch on {@link NattravError.code},
 * never on the message text. This module imports nothing, so every layer
 * (including the pure `wire` codec) may use it.
 */

/** Stable error codes. New codes may be added; existing ones never change meaning. */
export const ErrorCode = {
  /** An argument or option was invalid; the message names it and says what to pass instead. */
  InvalidArgument: 'ERR_INVALID_ARGUMENT',
  /** Bytes that should have been a STUN message were not (bad header, length, attribute, fingerprint). */
  StunMalformed: 'ERR_STUN_MALFORMED',
  /** A STUN message was well formed but not what the protocol expected at this point. */
  Protocol: 'ERR_PROTOCOL',
  /** The broker has no registration for the URI that was looked up. */
  UnknownUri: 'ERR_UNKNOWN_URI',
  /** The broker could not be reached (connection refused, no answer, reset). */
  BrokerUnreachable: 'ERR_BROKER_UNREACHABLE',
  /** The broker answered with an error response other than "unknown URI". */
  BrokerError: 'ERR_BROKER_ERROR',
  /** The broker could not prove its identity (wrong CA, bad signature, missing integrity): a possible fake broker. */
  BrokerAuth: 'ERR_BROKER_AUTH',
  /** The broker refused: the URI is held by another key, or the proof did not verify. */
  Forbidden: 'ERR_FORBIDDEN',
  /** The recipient did not answer the broker's connection request. */
  RecipientUnreachable: 'ERR_RECIPIENT_UNREACHABLE',
  /** Every attempt to open the direct connection failed. */
  ConnectFailed: 'ERR_CONNECT_FAILED',
  /** A named time limit fired; the message says which limit and what was going on. */
  Timeout: 'ERR_TIMEOUT',
  /** The caller's signal aborted the operation. */
  Aborted: 'ERR_ABORTED',
  /** The object was closed while the operation was pending, or used after close. */
  Closed: 'ERR_CLOSED',
  /** A network lab operation failed (needs root, a command failed). */
  Lab: 'ERR_LAB',
  /** The TLS handshake or the check of the peer's certificate failed; the message says what was wrong. */
  Tls: 'ERR_TLS',
  /** An identity (certificate, key, CA files) could not be loaded, saved or used. */
  Identity: 'ERR_IDENTITY',
  /** A local address to listen on or bind to is in use; `port` (and `address`) name it. */
  AddressInUse: 'ERR_ADDRESS_IN_USE',
  /** The other peer requires TLS and this side was set up without it (`tls` / `--tls`). */
  TlsRequired: 'ERR_TLS_REQUIRED',
  /** The other peer runs without TLS and this side requires it. */
  PlainRequired: 'ERR_PLAIN_REQUIRED',
  /**
   * The peer's key is not the one expected: not the pinned key (`expectKey`), or not the key
   * remembered for its URI (known keys) and the change was not accepted.
   */
  KeyMismatch: 'ERR_KEY_MISMATCH',
  /**
   * The recipient does not accept connections from our identity (its allow-list): on the
   * initiator, the message carries the recipient's reason; on the recipient, it names the initiator.
   */
  NotAllowed: 'ERR_NOT_ALLOWED',
  /** An established connection ended badly: reset, timed out, cut by a relay quota. The message says which. */
  ConnectionBroken: 'ERR_CONNECTION_BROKEN',
  /**
   * The broker's shared registry (Redis) did not answer, or answered with an error: at start
   * (the message names the server, never its password), or for one request (the peer is told
   * "registry unavailable" and the broker reports it).
   */
  RegistryUnavailable: 'ERR_REGISTRY_UNAVAILABLE',
  /**
   * The service behind `expose` did not take the connection: it refused or could not be
   * reached, or the exposer was at its connection limit. The message carries the reason.
   */
  ServiceRefused: 'ERR_SERVICE_REFUSED',
  /**
   * A port-mapping gateway (UPnP IGD, NAT-PMP, PCP) refused a request or answered with bytes
   * that do not parse; the message names the protocol, the gateway and its result code.
   */
  PortMapping: 'ERR_PORTMAP',
  /**
   * The proxy the peer must go through (SOCKS5) could not be reached, refused our
   * credentials, or failed; the message names the proxy (never its password) and why.
   */
  Proxy: 'ERR_PROXY',
  /**
   * The URI is held by another live process (instance) of the same key: two listeners with one
   * identity. The message names the URI; `takeover` (`--takeover`) takes it from the other one.
   */
  UriHeldByInstance: 'ERR_URI_HELD_BY_INSTANCE',
  /**
   * An attempt's address family (IPv4 or IPv6, `connect({ family })` or one side of the race
   * between them) cannot be used: we, the broker or the recipient have no address of it.
   */
  FamilyUnavailable: 'ERR_FAMILY_UNAVAILABLE',
  /** Another instance of our key took our URI over (`takeover`): we stopped refreshing it. The message names the URI. */
  TakenOver: 'ERR_TAKEN_OVER',
} as const;

/** One of the {@link ErrorCode} values. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Extra context an error may carry. */
export interface NattravErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** The IP address involved, when there is one. */
  address?: string;
  /** The port involved, when there is one. */
  port?: number;
}

/** The base error of nattrav: a stable `code`, a human message, the cause and the endpoint involved. */
export class NattravError extends Error {
  /** Stable machine-readable code; see {@link ErrorCode}. */
  readonly code: ErrorCodeValue;
  /** The IP address involved, when there is one. */
  readonly address?: string;
  /** The port involved, when there is one. */
  readonly port?: number;

  constructor(code: ErrorCodeValue, message: string, options: NattravErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NattravError';
    this.code = code;
    if (options.address !== undefined) this.address = options.address;
    if (options.port !== undefined) this.port = options.port;
  }
}

/** True when `err` is a {@link NattravError}, optionally with the given code. */
export function isNattravError(err: unknown, code?: ErrorCodeValue): err is NattravError {
  return err instanceof NattravError && (code === undefined || err.code === code);
}
