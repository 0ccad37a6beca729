/**
 * How the CLI reports: human lines by default, or with --json one JSON object
 * per line. Progress, logs and errors go to stderr; a command's result
 * (netcheck's profile, what `ca` made or read, the matrix, the demo's outcome)
 * goes to stdout. listen/connect print no result: their stdout is the connection's data.
 */
import { isNattravError, ErrorCode, type ErrorCodeValue } from '../errors.js';

/** Exit codes of the `nattrav` command (also in the README). */
export const ExitCode = {
  Ok: 0,
  /** An unexpected failure. */
  Failure: 1,
  /** Bad command line or option value; for `listen`, also: another running process with the same key holds the URI (without --takeover). */
  Usage: 2,
  /** The broker has no registration for the URI. */
  UnknownUri: 3,
  /** The broker could not be reached (for `broker --redis`: its Redis). */
  BrokerUnreachable: 4,
  /** A time limit fired. */
  Timeout: 5,
  /** Every connection attempt failed, the recipient did not answer, or the family asked is not available (ERR_FAMILY_UNAVAILABLE). */
  ConnectFailed: 6,
  /** The network lab could not be built or used. */
  Lab: 7,
  /** Authentication failed: TLS, a broker that cannot prove itself, a URI held by another key, or the recipient's allow-list refused us. */
  Security: 8,
  /** An established connection broke: reset, timed out, cut by a relay quota, or the peer died before ending cleanly. */
  ConnectionBroken: 9,
  /** The address or port to listen on is in use. */
  AddressInUse: 10,
  /** `portmap`: the gateway speaks no port-mapping protocol, or refused or botched the mapping. */
  PortMapping: 11,
  /** The SOCKS5 proxy (--socks5, ALL_PROXY, SOCKS_PROXY) could not be reached, refused our username/password, or failed. */
  Proxy: 12,
  /** `listen`/`expose`: another process with the same key took the URI over (--takeover); this one stopped. */
  TakenOver: 13,
  /** Interrupted by SIGINT (128 + 2). */
  Interrupted: 130,
  /** Stopped by SIGTERM (128 + 15). */
  Terminated: 143,
} as const;

const EXIT_BY_CODE: Partial<Record<ErrorCodeValue, number>> = {
  [ErrorCode.InvalidArgument]: ExitCode.Usage,
  [ErrorCode.UnknownUri]: ExitCode.UnknownUri,
  [ErrorCode.BrokerUnreachable]: ExitCode.BrokerUnreachable,
  [ErrorCode.RegistryUnavailable]: ExitCode.BrokerUnreachable,
  [ErrorCode.Timeout]: ExitCode.Timeout,
  [ErrorCode.ConnectFailed]: ExitCode.ConnectFailed,
  [ErrorCode.RecipientUnreachable]: ExitCode.ConnectFailed,
  [ErrorCode.FamilyUnavailable]: ExitCode.ConnectFailed,
  [ErrorCode.Lab]: ExitCode.Lab,
  [ErrorCode.Tls]: ExitCode.Security,
  [ErrorCode.BrokerAuth]: ExitCode.Security,
  [ErrorCode.Forbidden]: ExitCode.Security,
  [ErrorCode.Aborted]: ExitCode.Interrupted,
  [ErrorCode.TlsRequired]: ExitCode.Security,
  [ErrorCode.PlainRequired]: ExitCode.Security,
  [ErrorCode.NotAllowed]: ExitCode.Security,
  [ErrorCode.KeyMismatch]: ExitCode.Security,
  [ErrorCode.ConnectionBroken]: ExitCode.ConnectionBroken,
  [ErrorCode.AddressInUse]: ExitCode.AddressInUse,
  [ErrorCode.PortMapping]: ExitCode.PortMapping,
  [ErrorCode.Proxy]: ExitCode.Proxy,
  [ErrorCode.UriHeldByInstance]: ExitCode.Usage,
  [ErrorCode.TakenOver]: ExitCode.TakenOver,
};

/** The exit code for an error. */
export function exitCodeFor(err: unknown): number {
  return isNattravError(err) ? (EXIT_BY_CODE[err.code] ?? ExitCode.Failure) : ExitCode.Failure;
}

/** Writes progress events (stderr) and results (stdout) as human text or JSON lines. */
export class Reporter {
  constructor(readonly json: boolean) {}

  /** Reports progress on stderr: `human` is the text line, `fields` the JSON body (with `event`). */
  event(event: string, fields: Record<string, unknown>, human: string): void {
    process.stderr.write(this.#line(event, fields, human));
  }

  /**
   * Prints a result on stdout, in the same shape as {@link Reporter.event}: with
   * --json stdout carries nothing but such lines, one JSON object each.
   * Never for listen/connect, whose stdout is application data.
   */
  result(event: string, fields: Record<string, unknown>, human: string): void {
    process.stdout.write(this.#line(event, fields, human));
  }

  #line(event: string, fields: Record<string, unknown>, human: string): string {
    return this.json ? `${JSON.stringify({ event, ...fields })}\n` : `${human}\n`;
  }

  /** Reports a failure and returns the exit code to use. */
  error(err: unknown): number {
    const code = exitCodeFor(err);
    const message = err instanceof Error ? err.message : String(err);
    const errorCode = isNattravError(err) ? err.code : 'ERR_UNEXPECTED';
    if (this.json) process.stderr.write(`${JSON.stringify({ event: 'error', code: errorCode, message, exitCode: code })}\n`);
    else process.stderr.write(`nattrav: error: ${message}\n`);
    return code;
  }
}
