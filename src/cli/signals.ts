/**
 * SIGINT and SIGTERM for long-running commands: the first one asks the command to
 * wind down cleanly (abort setup, end the connection, withdraw the registration);
 * a second one exits at once. Either way the exit code is 128 + the signal number.
 */
import { ErrorCode, NattravError } from '../errors.js';

/** The signals that stop a command. */
export type StopSignalName = 'SIGINT' | 'SIGTERM';

/** Exit code for each stop signal: 128 + its number. */
export const SIGNAL_EXIT_CODES: Readonly<Record<StopSignalName, number>> = { SIGINT: 130, SIGTERM: 143 };

/** Watches for SIGINT and SIGTERM while a command runs. */
export class StopSignals {
  readonly #controller = new AbortController();
  readonly #exitNow: (code: number) => void;
  #received: StopSignalName | undefined;
  readonly #handlers: ReadonlyArray<readonly [StopSignalName, () => void]>;

  /** `exitNow` runs on the second signal (default: `process.exit`). */
  constructor(exitNow: (code: number) => void = (code) => process.exit(code)) {
    this.#exitNow = exitNow;
    this.#handlers = (['SIGINT', 'SIGTERM'] as const).map((name) => [name, () => this.#on(name)] as const);
    for (const [name, handler] of this.#handlers) process.on(name, handler);
  }

  /** Aborts on the first signal; the reason is an ERR_ABORTED error naming it. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The first signal received, if any. */
  get received(): StopSignalName | undefined {
    return this.#received;
  }

  /** The exit code for the signal received (130, 143), or undefined. */
  get exitCode(): number | undefined {
    return this.#received === undefined ? undefined : SIGNAL_EXIT_CODES[this.#received];
  }

  /** Resolves with the first signal. */
  wait(): Promise<StopSignalName> {
    if (this.#received !== undefined) return Promise.resolve(this.#received);
    return new Promise((resolve) => this.#controller.signal.addEventListener('abort', () => resolve(this.#received as StopSignalName), { once: true }));
  }

  /** Stops watching. */
  dispose(): void {
    for (const [name, handler] of this.#handlers) process.off(name, handler);
  }

  #on(name: StopSignalName): void {
    if (this.#received !== undefined) {
      this.#exitNow(SIGNAL_EXIT_CODES[name]);
      return;
    }
    this.#received = name;
    this.#controller.abort(new NattravError(ErrorCode.Aborted, `interrupted by ${name}`));
  }
}
