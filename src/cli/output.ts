/**
 * How the CLI reports: human lines on stderr by default, or with --json one
 * JSON object per line on stderr. stdout is reserved for application data.
 */
import { isNattravError, ErrorCode, type ErrorCodeValue } from '../index.js';

/** Exit codes of the `nattrav` command (also in the README). */
export const ExitCode = {
  Ok: 0,
  /** An unexpected failure. */
  Failure: 1,
  /** Bad command line or option value. */
  Usage: 2,
  /** The broker has no registration for the URI. */
  UnknownUri: 3,
  /** The broker could not be reached. */
  BrokerUnreachable: 4,
  /** A time limit fired. */
  Timeout: 5,
  /** Every connection attempt failed, or the recipient did not answer. */
  ConnectFailed: 6,
  /** The network lab could not be built or used. */
  Lab: 7,
  /** Authentication failed: TLS, a broker that cannot prove itself, or a URI held by another key. */
  Security: 8,
  /** Interrupted by SIGINT. */
  Interrupted: 130,
} as const;

const EXIT_BY_CODE: Partial<Record<ErrorCodeValue, number>> = {
  [ErrorCode.InvalidArgument]: ExitCode.Usage,
  [ErrorCode.UnknownUri]: ExitCode.UnknownUri,
  [ErrorCode.BrokerUnreachable]: ExitCode.BrokerUnreachable,
  [ErrorCode.Timeout]: ExitCode.Timeout,
  [ErrorCode.ConnectFailed]: ExitCode.ConnectFailed,
  [ErrorCode.RecipientUnreachable]: ExitCode.ConnectFailed,
  [ErrorCode.Lab]: ExitCode.Lab,
  [ErrorCode.Tls]: ExitCode.Security,
  [ErrorCode.BrokerAuth]: ExitCode.Security,
  [ErrorCode.Forbidden]: ExitCode.Security,
  [ErrorCode.Aborted]: ExitCode.Interrupted,
};

/** The exit code for an error. */
export function exitCodeFor(err: unknown): number {
  return isNattravError(err) ? (EXIT_BY_CODE[err.code] ?? ExitCode.Failure) : ExitCode.Failure;
}

/** Writes events as human text or JSON lines, always on stderr. */
export class Reporter {
  constructor(readonly json: boolean) {}

  /** Reports an event: `human` is the text line, `fields` the JSON body (with `event`). */
  event(event: string, fields: Record<string, unknown>, human: string): void {
    if (this.json) process.stderr.write(`${JSON.stringify({ event, ...fields })}\n`);
    else process.stderr.write(`${human}\n`);
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
