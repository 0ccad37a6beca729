/**
 * Real redis-server processes for tests, on free loopback ports in temporary
 * directories, without persistence; stopped by PID and their directories removed
 * in `stop()`. Without redis-server installed, {@link haveRedis} skips the test with
 * the reason, or fails it when env CI is set (.ci/run installs redis-server).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
/** redis-server prints its readiness within a second; 15 s covers a busy machine. */
const START_TIMEOUT_MS = 15_000;
/** Cluster bus ports are the client port + 10000. */
const CLUSTER_BUS_OFFSET = 10_000;
/** How long a cluster may take to agree on its slots after `redis-cli --cluster create`. */
const CLUSTER_READY_TIMEOUT_MS = 30_000;

/** A running redis-server (or cluster of them). */
export interface RedisServer {
  /** `redis://127.0.0.1:PORT` of the (first) server. */
  readonly url: string;
  readonly port: number;
  /** PIDs of the servers. */
  readonly pids: readonly number[];
  /** Stops every process of it (SIGTERM, then SIGKILL), waits for them, removes the temp dirs. Idempotent. */
  stop(): Promise<void>;
  /** Pauses the (first) server with SIGSTOP, so it accepts but never answers; `resume` continues it. */
  pause(): void;
  resume(): void;
}

/** True when redis-server is installed; else skips `t` with the reason, or throws in CI. */
export async function haveRedis(t: { skip(reason: string): void }, withCluster = false): Promise<boolean> {
  const programs = withCluster ? ['redis-server', 'redis-cli'] : ['redis-server'];
  for (const program of programs) {
    try {
      await run(program, ['--version'], { timeout: 5_000 });
    } catch {
      if (process.env.CI) throw new Error(`${program} (Debian packages redis-server, redis-tools) is required in CI; .ci/run installs it`);
      t.skip(`${program} is not installed (apt-get install redis-server)`);
      return false;
    }
  }
  return true;
}

/** A free loopback TCP port (and, for a cluster node, a free bus port above it). */
async function freePort(withBus = false): Promise<number> {
  for (;;) {
    const port = await listenOnce(0);
    if (!withBus) return port;
    if (port + CLUSTER_BUS_OFFSET > 65_535) continue;
    try {
      await listenOnce(port + CLUSTER_BUS_OFFSET);
      return port;
    } catch {
      // bus port taken: another try
    }
  }
}

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const bound = (server.address() as { port: number }).port;
      server.close(() => resolve(bound));
    });
  });
}

interface Started {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly port: number;
}

/** A certificate and key (PEM files) for a TLS-only redis-server. */
export interface RedisTls {
  readonly certFile: string;
  readonly keyFile: string;
}

async function startOne(extra: readonly string[] = [], withBus = false, tls?: RedisTls): Promise<Started> {
  const dir = await mkdtemp(join(tmpdir(), 'nattrav-redis-'));
  const port = await freePort(withBus);
  const listen = tls === undefined ? ['--port', String(port)] : ['--port', '0', '--tls-port', String(port), '--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile, '--tls-auth-clients', 'no'];
  const child = spawn('redis-server', ['--save', '', '--appendonly', 'no', ...listen, '--bind', '127.0.0.1', '--dir', dir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server on port ${port} not ready within ${START_TIMEOUT_MS} ms:\n${output}`)), START_TIMEOUT_MS);
      const onData = (chunk: Buffer): void => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server on port ${port} exited (${code}):\n${output}`));
      });
    });
  } catch (err) {
    await stopOne({ child, dir, port });
    throw err;
  }
  child.stdout?.resume();
  child.stderr?.resume();
  return { child, dir, port };
}

async function stopOne(started: Started): Promise<void> {
  const { child } = started;
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid, 'SIGCONT');
    process.kill(child.pid, 'SIGTERM');
    const timer = setTimeout(() => child.pid !== undefined && child.exitCode === null && process.kill(child.pid, 'SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(started.dir, { recursive: true, force: true });
}

function serverOf(started: readonly Started[], scheme = 'redis'): RedisServer {
  const first = started[0] as Started;
  let stopped: Promise<void> | undefined;
  return {
    url: `${scheme}://127.0.0.1:${first.port}`,
    port: first.port,
    pids: started.map((s) => s.child.pid as number),
    stop: () => (stopped ??= Promise.all(started.map(stopOne)).then(() => undefined)),
    pause: () => process.kill(first.child.pid as number, 'SIGSTOP'),
    resume: () => process.kill(first.child.pid as number, 'SIGCONT'),
  };
}

/** Starts one redis-server; `extra` arguments are appended (e.g. `--requirepass`); with `tls` it speaks TLS only (`rediss://`). */
export async function startRedis(extra: readonly string[] = [], tls?: RedisTls): Promise<RedisServer> {
  return serverOf([await startOne(extra, false, tls)], tls === undefined ? 'redis' : 'rediss');
}

/** Writes a self-signed certificate for 127.0.0.1 (openssl) into `dir`: the server's, and the CA a client must trust. */
export async function selfSignedForLoopback(dir: string): Promise<RedisTls> {
  const certFile = join(dir, 'redis-cert.pem');
  const keyFile = join(dir, 'redis-key.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { timeout: 10_000 });
  return { certFile, keyFile };
}

/** Starts `nodes` redis-servers as one Redis Cluster (masters only) and waits until it serves every slot. */
export async function startRedisCluster(nodes = 3): Promise<RedisServer> {
  const started: Started[] = [];
  try {
    for (let i = 0; i < nodes; i++) {
      started.push(await startOne(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000'], true));
    }
    const addresses = started.map((s) => `127.0.0.1:${s.port}`);
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], { timeout: CLUSTER_READY_TIMEOUT_MS });
    const deadline = Date.now() + CLUSTER_READY_TIMEOUT_MS;
    for (const s of started) {
      for (;;) {
        const { stdout } = await run('redis-cli', ['-p', String(s.port), 'cluster', 'info'], { timeout: 5_000 });
        if (stdout.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${s.port} not ready: ${stdout}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    return serverOf(started);
  } catch (err) {
    await Promise.all(started.map(stopOne));
    throw err;
  }
}
