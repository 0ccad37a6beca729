/**
 * stdin/stdout over one nattrav connection, like `nc`: our stdin's end is a FIN
 * (the other direction stays open), the other side's FIN ends our stdout, and we
 * are done when both directions are. How it ended decides the exit code.
 */
import type { Readable, Writable } from 'node:stream';
import type { ConnectionClosed, NattravSocket } from '../index.js';
import { ExitCode, type Reporter } from './output.js';
import type { StopSignals } from './signals.js';

/**
 * After a stop signal, how long the other side has to end its direction (its
 * bytes in flight still reach stdout) before we destroy the connection, in ms.
 * Well under the 2 s a user waits for Ctrl-C to take effect.
 */
export const STOP_GRACE_MS = 1_000;

/** How a pipe ended. */
export interface PipeOutcome {
  readonly closed: ConnectionClosed;
  /** Set when writing to stdout failed (a closed pipe): not every byte was delivered. */
  readonly stdoutError?: Error;
}

/** Pipes `input` to the socket and the socket to `output` until both directions are done. */
export async function pipeStdio(
  socket: NattravSocket,
  stop: AbortSignal,
  input: Readable = process.stdin,
  output: Writable = process.stdout,
): Promise<PipeOutcome> {
  let stdoutError: Error | undefined;
  // Errors are reported through socket.nattrav.closed.
  socket.on('error', () => undefined);
  input.pipe(socket); // input's end -> socket.end(): a FIN, nothing more
  socket.pipe(output, { end: false });
  const onOutputError = (err: Error): void => {
    stdoutError = err;
    socket.destroy();
  };
  output.on('error', onOutputError);
  const stopInput = (): void => {
    input.unpipe(socket);
    input.pause();
  };
  const onStop = (): void => {
    stopInput();
    socket.end();
    setTimeout(() => socket.destroy(), STOP_GRACE_MS).unref();
  };
  if (stop.aborted) onStop();
  else stop.addEventListener('abort', onStop, { once: true });
  try {
    const closed = await socket.nattrav.closed;
    stopInput();
    socket.unpipe(output);
    // Whatever was read is flushed before we report.
    if (output.writableLength > 0 && stdoutError === undefined) {
      await new Promise<void>((resolve) => {
        output.once('drain', resolve);
        output.once('error', () => resolve());
      });
    }
    return stdoutError === undefined ? { closed } : { closed, stdoutError };
  } finally {
    stop.removeEventListener('abort', onStop);
    output.off('error', onOutputError);
  }
}

/** JSON body of the `closed` event. */
function closedFields(closed: ConnectionClosed | undefined, reason?: string): Record<string, unknown> {
  return {
    bytesIn: closed?.bytesIn ?? 0,
    bytesOut: closed?.bytesOut ?? 0,
    durationMs: closed?.durationMs ?? 0,
    reason: reason ?? closed?.reason ?? 'not-connected',
    ...(closed?.error === undefined ? {} : { message: closed.error.message }),
  };
}

/**
 * Reports how a pipe ended (the error, if any, then a final `closed` event) and
 * returns the exit code: the signal's when stopped by one, 1 when stdout failed,
 * 9 when the connection broke, else 0.
 */
export function reportPipe(outcome: PipeOutcome, stop: StopSignals, out: Reporter): number {
  const { closed, stdoutError } = outcome;
  let code: number = ExitCode.Ok;
  let reason: string = closed.reason;
  if (stop.exitCode !== undefined) {
    code = stop.exitCode;
    reason = 'interrupted';
  } else if (stdoutError !== undefined) {
    code = out.error(new Error(`cannot write to stdout: ${stdoutError.message}; the rest of the data was not delivered`));
    reason = 'stdout-error';
  } else if (closed.error !== undefined) {
    code = out.error(closed.error);
  }
  out.event('closed', closedFields(closed, reason), `closed (${reason}): ${closed.bytesIn} bytes in, ${closed.bytesOut} bytes out, ${closed.durationMs} ms`);
  return code;
}

/** Reports the `closed` event of a command that never got a connection. */
export function reportNotConnected(out: Reporter, reason: 'interrupted' | 'not-connected'): void {
  out.event('closed', closedFields(undefined, reason), `closed (${reason}): no connection was made`);
}
