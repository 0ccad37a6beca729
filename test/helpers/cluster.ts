/**
 * Three brokers sharing one registry, for cluster tests: in this process on a memory
 * registry and an in-process bus, or each with its own Redis connection and RedisBus on
 * a real redis-server (as three processes would have). Everything is closed by `closers`.
 */
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Broker } from '../../src/broker/broker.js';
import type { BrokerOptions } from '../../src/broker/options.js';
import { MemoryBusHub } from '../../src/broker/bus/memory-bus.js';
import { RedisBus } from '../../src/broker/bus/redis-bus.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { connectRedis } from '../../src/broker/registry/redis.js';
import { SessionTable } from '../../src/broker/sessions.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import type { ConnectOptions, ServerOptions } from '../../src/peer/options.js';
import { createServer, type NattravServer } from '../../src/peer/server.js';
import { startBroker } from './loopback.js';

/** Brokers of one cluster: `addresses[i]` is `brokers[i]`'s `127.0.0.1:port`. */
export interface TestCluster {
  readonly brokers: Broker[];
  readonly addresses: string[];
  /** Starts one more broker on the same registry and bus (with `options` besides, e.g. its certificate). */
  add(options?: BrokerOptions): Promise<{ broker: Broker; address: string }>;
}

/** Makes a cluster of `count` brokers; `closers` gets everything to close. */
export type ClusterFactory = (count: number, closers: Array<() => unknown>) => Promise<TestCluster>;

/** Brokers in this process: one MemoryRegistry, one SessionTable, one MemoryBusHub; `options` for each broker besides. */
export const memoryCluster = async (count: number, closers: Array<() => unknown>, options: BrokerOptions = {}): Promise<TestCluster> => {
  const registry = new MemoryRegistry();
  const sessions = new SessionTable(1_000);
  const hub = new MemoryBusHub();
  closers.push(() => registry.close());
  const add = async (extra: BrokerOptions = options): Promise<{ broker: Broker; address: string }> => {
    const bus = hub.join();
    const started = await startBroker({ ...extra, registry, sessions, bus });
    closers.push(() => bus.close());
    closers.push(() => started.broker.close());
    return started;
  };
  return fill(count, add);
};

/** Brokers on the redis-server at `url`, each with its own connection and bus, under one fresh key prefix. */
export function redisCluster(url: string, keyPrefix: string): ClusterFactory {
  return async (count, closers) => {
    const add = async (): Promise<{ broker: Broker; address: string }> => {
      const backend = await connectRedis({ url, keyPrefix, commandTimeoutMs: 1_000 });
      closers.push(() => backend.close());
      const bus = await RedisBus.open(backend.connection, { keyPrefix });
      closers.push(() => bus.close());
      const started = await startBroker({ registry: backend.registry, sessions: backend.sessions, bus });
      closers.push(() => started.broker.close());
      return started;
    };
    return fill(count, add);
  };
}

async function fill(count: number, add: (options?: BrokerOptions) => Promise<{ broker: Broker; address: string }>): Promise<TestCluster> {
  const brokers: Broker[] = [];
  const addresses: string[] = [];
  for (let i = 0; i < count; i++) {
    const { broker, address } = await add();
    brokers.push(broker);
    addresses.push(address);
  }
  return { brokers, addresses, add };
}

/** A temporary key directory, removed by `closers`. */
export async function tempKeyDir(closers: Array<() => unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'nattrav-cluster-'));
  closers.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An echoing recipient, registered (resolves once 'listening'). */
export async function echoRecipient(options: ServerOptions, closers: Array<() => unknown>): Promise<NattravServer> {
  const server = createServer(options, (socket: NattravSocket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.listen();
  await once(server, 'listening');
  return server;
}

/** Connects and checks that bytes come back; resolves with the connection's info. */
export async function echoes(options: Omit<ConnectOptions, 'knownKeysFile'>): Promise<NattravSocket['nattrav']> {
  const socket = await connect({ knownKeysFile: false, timeoutMs: 20_000, ...options });
  try {
    socket.write('ping through the cluster');
    const [data] = (await once(socket, 'data')) as [Buffer];
    if (data.toString() !== 'ping through the cluster') throw new Error(`echo returned ${JSON.stringify(data.toString())}`);
    return socket.nattrav;
  } finally {
    socket.destroy();
  }
}
