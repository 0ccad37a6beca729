/**
 * The peers of the per-strategy setup benchmark (bench/setup-run.ts) and of the timeline
 * (bench/timeline.ts), run inside the lab's namespaces. One JSON argument says what to be;
 * every result is one JSON line on stdout:
 * - `{"mode":"recipient","broker":B,"uri":U,"keyDir":D}`: createServer with TLS (the
 *   default); prints `{"event":"listening"}`, then closes every connection it accepts.
 * - `{"mode":"connect","broker":B,"uri":U,"count":N}`: N connect() calls in a row (TLS on,
 *   the default), 100 ms apart; prints `{"event":"setups","setups":[...]}`, one
 *   {@link SetupSample} per call (a failed call has `error` instead of the times).
 */
import { performance } from 'node:perf_hooks';
import { connect } from '../../src/peer/connect.js';
import { createServer } from '../../src/peer/server.js';

/** What the lab side passes. */
export type SetupPeerConfig =
  | { mode: 'recipient'; broker: string; uri: string; keyDir: string }
  | { mode: 'connect'; broker: string; uri: string; count: number };

/** One connect() call. */
export interface SetupSample {
  /** Wall-clock time (ms since the epoch) when connect() was called: the timeline's zero. */
  readonly startedAt: number;
  /** From the call until the socket was returned, ms (TLS done). */
  readonly wallMs?: number;
  /** ConnectionInfo.setupMs: until usable, TLS included. */
  readonly setupMs?: number;
  /** ConnectionInfo.traversalMs: until the Hello proved the path, before TLS. */
  readonly traversalMs?: number;
  readonly path?: string;
  /** Which attempt succeeded (1 = the first). */
  readonly attempts?: number;
  /** Every strategy that ran, in order, with its outcome. */
  readonly strategies?: string[];
  /** Why the call failed. */
  readonly error?: string;
}

/** Pause between two timed connects, so one attempt's teardown does not overlap the next. */
const BETWEEN_SETUPS_MS = 100;
/** One connect's own limit (the library's default is 30 s). */
const CONNECT_TIMEOUT_MS = 20_000;

const print = (value: object): void => console.log(JSON.stringify(value));

const config = JSON.parse(process.argv[2] ?? '{}') as SetupPeerConfig;
switch (config.mode) {
  case 'recipient': {
    const server = createServer({ broker: config.broker, uri: config.uri, keyDir: config.keyDir }, (socket) => {
      socket.on('error', () => undefined);
      socket.end();
    });
    server.on('error', (err: unknown) => console.error(String(err)));
    server.once('listening', () => print({ event: 'listening' }));
    server.listen();
    break;
  }
  case 'connect': {
    const setups: SetupSample[] = [];
    for (let i = 0; i < config.count; i++) {
      const startedAt = Date.now();
      const began = performance.now();
      try {
        const socket = await connect({ broker: config.broker, uri: config.uri, knownKeysFile: false, timeoutMs: CONNECT_TIMEOUT_MS });
        const wallMs = performance.now() - began;
        const info = socket.nattrav;
        setups.push({ startedAt, wallMs, setupMs: info.setupMs, traversalMs: info.traversalMs, path: info.path, attempts: info.attempts, strategies: info.trace.map((t) => `${t.strategy}:${t.outcome}`) });
        socket.on('error', () => undefined);
        socket.destroy();
      } catch (err) {
        setups.push({ startedAt, error: err instanceof Error ? err.message : String(err) });
      }
      await new Promise((resolve) => setTimeout(resolve, BETWEEN_SETUPS_MS));
    }
    print({ event: 'setups', setups });
    process.exit(0);
    break;
  }
  default:
    console.error(`setup-peer: unknown mode in ${process.argv[2] ?? '(nothing)'}`);
    process.exit(2);
}
