/**
 * Relay vs direct on loopback: the same recipient (createServer, plain TCP: TLS would cost
 * the same on both paths and hide the transport) receives the same bytes over a direct
 * connection (connect()) and over a relayed one (an attempt that marks every direct strategy
 * failed, as a peer does when punching fails). The broker (pinned to core 0) splices the
 * relay; sender and receiver run in this process on core 1.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import type { NattravSocket } from '../src/peer/info.js';
import { strategyMask } from '../src/nat/strategy.js';
import { runAttempt } from '../src/peer/attempt.js';
import { connect } from '../src/peer/connect.js';
import { createServer, type NattravServer } from '../src/peer/server.js';
import { ATTEMPT_ID_LENGTH, AttrType, Method } from '../src/wire/constants.js';
import { StunMessage } from '../src/wire/message.js';
import { addAttemptId, addU32, addUri } from '../src/wire/nattrav.js';
import { figure, type Target } from './lib/results.js';
import { startBenchBroker } from './lib/servers.js';
import { SERVER_CORE, type Bench } from './lib/suite.js';
import { throughput } from './lib/transfer.js';
import { withCpu } from './lib/cpu.js';

/** Bytes moved over each path. */
const BYTES = { full: 200_000_000, quick: 5_000_000 };
/** One transfer at most, ms. */
const TRANSFER_TIMEOUT_MS = 120_000;
const URI = 'nattrav://bench-relay';
/** Issue 10: relay throughput at least 0.9x direct on loopback. */
const TARGET: Target = { op: '>=', value: 0.9, text: '>= 0.9x direct on loopback' };

/** A connection attempt the broker relays (every direct strategy marked failed). */
function relayed(port: number): Promise<NattravSocket> {
  const attemptId = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
  const request = StunMessage.request(Method.Connect);
  addUri(request, URI);
  addAttemptId(request, attemptId);
  addU32(request, AttrType.FailedStrategies, strategyMask(['lan', 'public', 'direct']));
  return runAttempt({
    broker: { host: '127.0.0.1', port }, request, attemptId, role: 'initiator', tls: false, uri: URI, signal: AbortSignal.timeout(30_000),
    exchangeTimeoutMs: 10_000, punchTimeoutMs: 5_000, started: performance.now(), attempt: 1, trace: [],
  });
}

/** The relay-vs-direct benchmark. */
export const relayBench: Bench = {
  name: 'relay',
  summary: 'Throughput of a relayed connection vs a direct one, on loopback',
  async run(ctx) {
    const bytes = BYTES[ctx.quick ? 'quick' : 'full'];
    const broker = await startBenchBroker({ open: false, max: 1_000 }, SERVER_CORE);
    const dir = await mkdtemp(join(tmpdir(), 'nattrav-bench-relay-'));
    let server: NattravServer | undefined;
    try {
      const accepted: Socket[] = [];
      const waiters: Array<(s: Socket) => void> = [];
      server = createServer({ broker: `127.0.0.1:${broker.port}`, uri: URI, tls: false, keyDir: dir }, (socket) => {
        const waiter = waiters.shift();
        if (waiter === undefined) accepted.push(socket);
        else waiter(socket);
      });
      server.listen();
      await new Promise<void>((resolve, reject) => {
        server?.once('listening', () => resolve());
        server?.once('error', reject);
      });
      const next = (): Promise<Socket> => new Promise((resolve) => {
        const s = accepted.shift();
        if (s === undefined) waiters.push(resolve);
        else resolve(s);
      });
      const measure = async (name: string, open: () => Promise<NattravSocket>): Promise<{ rate: number; busy: number }> => {
        const initiator = await open();
        const recipient = await next();
        try {
          const { result: rate, busy } = await withCpu([broker.child.pid], () => throughput(initiator, recipient, bytes, TRANSFER_TIMEOUT_MS));
          ctx.log(`  ${name}: ${rate.toFixed(0)} MB/s (${initiator.nattrav.path}), broker CPU ${(busy * 100).toFixed(0)}%`);
          return { rate, busy };
        } finally {
          initiator.destroy();
          recipient.destroy();
        }
      };
      const direct = await measure('direct', () => connect({ broker: `127.0.0.1:${broker.port}`, uri: URI, tls: false, knownKeysFile: false }));
      const relay = await measure('relay', () => relayed(broker.port));
      const size = `${(bytes / 1e6).toFixed(0)} MB one way, plain TCP`;
      return [
        figure({ bench: 'relay', id: 'relay.direct', label: 'Direct connection throughput on loopback', value: direct.rate, unit: 'MB/s', note: size }),
        figure({ bench: 'relay', id: 'relay.relay', label: 'Relayed connection throughput on loopback (ratio to direct)', value: relay.rate, unit: 'MB/s', compared: relay.rate / direct.rate, target: TARGET, note: `${size}; broker CPU ${(relay.busy * 100).toFixed(0)}% of a core while relaying` }),
      ];
    } finally {
      await server?.close();
      await broker.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
