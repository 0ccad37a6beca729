/** Starting the servers under test as pinned child processes: the bench broker, the Node floor, coturn. */
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchBrokerConfig } from '../servers/broker.js';
import { start, startNode, sleep, type Child } from './procs.js';

/** How long coturn may take to answer its first Binding (SQLite setup on a busy machine). */
const COTURN_READY_MS = 15_000;
/** Starts of coturn on fresh free ports: a port found free may be taken before coturn binds it. */
const COTURN_TRIES = 3;

const script = (name: string): string => fileURLToPath(new URL(`../servers/${name}.js`, import.meta.url));

/** A server under test: its UDP/TCP port on 127.0.0.1, its PID, and how to stop it. */
export interface RunningServer {
  readonly port: number;
  readonly child: Child;
  stop(): Promise<void>;
}

let profileDir: string | undefined;

/** From now on, bench brokers write a CPU profile (`node --cpu-prof`) into `dir` when they stop. */
export function profileBrokersInto(dir: string): void {
  profileDir = dir;
}

/** Starts the bench broker (servers/broker.ts) pinned to `core`. */
export async function startBenchBroker(config: BenchBrokerConfig, core?: number): Promise<RunningServer> {
  const profile = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  const child = startNode('broker', script('broker'), [JSON.stringify(config)], core, ['--expose-gc', '--max-old-space-size=4096', ...profile]);
  try {
    const { port } = await child.json<{ port: number }>();
    return { port, child, stop: () => child.stop() };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** Asks a running bench broker for its resident memory after a full GC, in bytes. */
export async function brokerRss(server: RunningServer): Promise<number> {
  server.child.send('rss');
  const { rss } = await server.child.json<{ rss: number }>(60_000);
  return rss;
}

/** Starts the bare Node dgram responder (servers/floor.ts) pinned to `core`. */
export async function startFloor(core?: number): Promise<RunningServer> {
  const child = startNode('floor', script('floor'), [], core);
  try {
    const { port } = await child.json<{ port: number }>();
    return { port, child, stop: () => child.stop() };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** The path of coturn's `turnserver`, or undefined when it is not installed. */
export function findTurnserver(): string | undefined {
  for (const candidate of ['turnserver', '/usr/bin/turnserver', '/usr/sbin/turnserver', '/usr/local/bin/turnserver']) {
    const probe = spawnSync(candidate, ['--help'], { timeout: 5_000 });
    if (probe.error === undefined) return candidate;
  }
  return undefined;
}

/** A UDP port free on 127.0.0.1 right now. */
export async function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** Resolves once something on 127.0.0.1:`port` answers `request` over UDP. */
async function answering(port: number, request: Buffer, timeoutMs: number): Promise<void> {
  const socket = createSocket('udp4');
  try {
    let answered = false;
    socket.on('message', () => (answered = true));
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const deadline = Date.now() + timeoutMs;
    while (!answered) {
      if (Date.now() > deadline) throw new Error(`nothing answered on 127.0.0.1:${port} within ${timeoutMs} ms`);
      socket.send(request, port, '127.0.0.1');
      await sleep(100);
    }
  } finally {
    socket.close();
  }
}

/**
 * Starts coturn's turnserver pinned to `core`, STUN only, on 127.0.0.1 and a free port, with a
 * temporary database and pid file (removed on stop), no TLS/DTLS, one relay thread (`-m 0`):
 * Binding needs no authentication. Resolves once it answers `probe`.
 */
export async function startCoturn(binary: string, probe: Buffer, core?: number): Promise<RunningServer> {
  let last: unknown;
  for (let attempt = 0; attempt < COTURN_TRIES; attempt++) {
    try {
      return await startCoturnOnce(binary, probe, core);
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

async function startCoturnOnce(binary: string, probe: Buffer, core?: number): Promise<RunningServer> {
  const dir = await mkdtemp(join(tmpdir(), 'nattrav-bench-coturn-'));
  const port = await freeUdpPort();
  const child = start('turnserver', binary, [
    '-n', '--no-cli', '--no-tls', '--no-dtls', '--stun-only', '-L', '127.0.0.1', '-p', String(port), '-m', '0',
    '--db', join(dir, 'turndb'), '--pidfile', join(dir, 'turnserver.pid'), '--log-file', join(dir, 'turn.log'), '--no-stdout-log',
  ], core);
  const stop = async (): Promise<void> => {
    await child.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await answering(port, probe, COTURN_READY_MS);
  } catch (err) {
    await stop();
    throw new Error(`coturn did not start: ${err instanceof Error ? err.message : String(err)}; stderr: ${child.stderr.slice(-400)}`);
  }
  return { port, child, stop };
}
