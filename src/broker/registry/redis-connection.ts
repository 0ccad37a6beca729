/**
 * One connection to Redis (>= 7) for the broker's shared state: a single server, or a
 * Redis Cluster (found by asking the server given). Every command has a deadline
 * (`commandTimeoutMs`), commands are not queued while the connection is down (they fail
 * at once), and every failure becomes ERR_REGISTRY_UNAVAILABLE naming the server (never
 * its password). The connection reconnects by itself once it has been up.
 */
import { createHash } from 'node:crypto';
import { createClient, createCluster, RESP_TYPES } from '@redis/client';
import { ErrorCode, NattravError } from '../../errors.js';
import { maskUrlPassword } from '../../common/url.js';

/** Options of {@link RedisConnection.connect}. */
export interface RedisConnectionOptions {
  /** `redis://[user[:password]@]host[:port][/db]` or `rediss://...` (TLS). A cluster is found by itself. */
  url: string;
  /** Longest wait for one command, in ms. @default 2000 */
  commandTimeoutMs?: number;
  /** Longest wait for the connection at start (and for each reconnection), in ms. @default 5000 */
  connectTimeoutMs?: number;
  /** Told about failures of the connection and of commands (a lost server, a failed reconnection, a command without answer), at most one report per 5 s. */
  onError?: (err: NattravError) => void;
  /** Aborts connecting (the error is the signal's reason). */
  signal?: AbortSignal;
}

/** A Redis state shared by brokers answers in well under a millisecond on a LAN; 2 s means it is gone. */
const DEFAULT_COMMAND_TIMEOUT_MS = 2_000;
/** One TCP (and TLS) handshake and AUTH on any usable path. */
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** Reconnection backoff: from 100 ms, doubling, at most 2 s, so a returning server is used within 2 s. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 2_000;
/** Connection failures are reported at most this often: an outage must not flood the log. */
const REPORT_INTERVAL_MS = 5_000;
/**
 * Commands waiting at once on one connection. A server that takes commands and never
 * answers leaves each one waiting after its deadline; this bounds them (then fail at once).
 */
const MAX_QUEUED_COMMANDS = 10_000;
/** GETDEL, and the Lua and hash commands used, are in Redis 6.2; 7 is what is tested and supported. */
const MIN_REDIS_MAJOR = 7;
/** Keys asked for per SCAN step. */
const SCAN_COUNT = 1_000;

/** Replies as this module asks for them: bulk strings as Buffers (values are binary). */
const TYPE_MAPPING = { [RESP_TYPES.BLOB_STRING]: Buffer } as const;

/** Receives sharded pub/sub messages as Buffers (bufferMode). */
type BufferListener = (message: Buffer, channel: Buffer) => void;

/** The sharded pub/sub part of a node-redis client or cluster this module uses (Redis 7: SSUBSCRIBE, SPUBLISH). */
interface ShardedSubscriber {
  sSubscribe(channel: string, listener: BufferListener, bufferMode: true): Promise<void>;
  sUnsubscribe(channel: string, listener: BufferListener, bufferMode: true): Promise<void>;
}

/** The part of a node-redis client this module uses. */
interface CommandClient extends ShardedSubscriber {
  duplicate(): CommandClient;
  sendCommand(args: ReadonlyArray<string | Buffer>, options?: { timeout?: number; typeMapping?: typeof TYPE_MAPPING }): Promise<unknown>;
  on(event: 'error', listener: (err: Error) => void): unknown;
  connect(): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
}

/** The part of a node-redis cluster this module uses. */
interface ClusterClient extends ShardedSubscriber {
  sendCommand(key: string, readonly: boolean, args: ReadonlyArray<string | Buffer>, options?: { timeout?: number; typeMapping?: typeof TYPE_MAPPING }): Promise<unknown>;
  readonly masters: readonly unknown[];
  nodeClient(node: never): Promise<CommandClient>;
  on(event: 'error' | 'node-error', listener: (err: Error) => void): unknown;
  connect(): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
}

/** A Lua script run by EVALSHA (EVAL when the server does not have it yet). */
export interface RedisScript {
  readonly source: string;
  readonly sha1: string;
}

/** Makes a {@link RedisScript} of Lua source. */
export function redisScript(source: string): RedisScript {
  return { source, sha1: createHash('sha1').update(source).digest('hex') };
}

/** A parsed Redis URL: what the client needs of it. */
export interface RedisTarget {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly username?: string;
  readonly password?: string;
  readonly database: number;
  /** The URL without its password, for messages. */
  readonly display: string;
}

/**
 * Checks a Redis URL; throws ERR_INVALID_ARGUMENT saying what is wrong (the message shows
 * the URL with its password masked).
 */
export function parseRedisUrl(url: string): RedisTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new NattravError(ErrorCode.InvalidArgument, `Redis URL ${JSON.stringify(maskUrlPassword(url))} is not a URL; pass redis://[user:password@]host[:port][/db] or rediss://... for TLS`);
  }
  // An unencoded '/' (or '?', '#') in the password ends the authority early: the parser sees
  // part of the password as a port and the rest as a path. Refuse it without echoing it.
  if (parsed.username === '' && parsed.password === '' && maskUrlPassword(url) !== url) {
    throw new NattravError(
      ErrorCode.InvalidArgument,
      `Redis URL ${JSON.stringify(maskUrlPassword(url))}: its user and password did not parse; percent-encode them ('/' as %2F, '@' as %40, ':' in a user as %3A)`,
    );
  }
  const display = `${parsed.protocol}//${parsed.username}${parsed.password === '' ? '' : ':***'}${parsed.username !== '' || parsed.password !== '' ? '@' : ''}${parsed.host}${parsed.pathname}`;
  const bad = (why: string): never => {
    throw new NattravError(ErrorCode.InvalidArgument, `Redis URL ${display}: ${why}`);
  };
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') bad(`the scheme must be redis:// or rediss:// (TLS), not ${parsed.protocol}//`);
  if (parsed.hostname === '') bad('no host; pass redis://host:port');
  if (parsed.search !== '' || parsed.hash !== '') bad('no query or fragment is understood');
  const path = parsed.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,2}$/.test(path)) bad(`the path must be a database number (e.g. /0), not /${path}`);
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: parsed.port === '' ? 6379 : Number(parsed.port),
    tls: parsed.protocol === 'rediss:',
    ...(parsed.username === '' ? {} : { username: decodeURIComponent(parsed.username) }),
    ...(parsed.password === '' ? {} : { password: decodeURIComponent(parsed.password) }),
    database: path === '' ? 0 : Number(path),
    display,
  };
}

/** An open connection to a Redis server or cluster. */
export class RedisConnection {
  /** The server as given, without its password. */
  readonly display: string;
  /** Whether the server is part of a Redis Cluster. */
  readonly cluster: boolean;
  readonly #client: CommandClient | undefined;
  readonly #clusterClient: ClusterClient | undefined;
  readonly #commandTimeoutMs: number;
  readonly #report: (err: Error) => void;
  #closed = false;

  private constructor(display: string, commandTimeoutMs: number, report: (err: Error) => void, client: CommandClient | undefined, cluster: ClusterClient | undefined) {
    this.display = display;
    this.#report = report;
    this.cluster = cluster !== undefined;
    this.#client = client;
    this.#clusterClient = cluster;
    this.#commandTimeoutMs = commandTimeoutMs;
  }

  /**
   * Connects to `options.url` (a cluster when the server says it is one). Throws
   * ERR_INVALID_ARGUMENT for a bad URL or timeout, ERR_REGISTRY_UNAVAILABLE naming the
   * server when it does not answer within `connectTimeoutMs` or refuses us.
   */
  static async connect(options: RedisConnectionOptions): Promise<RedisConnection> {
    const target = parseRedisUrl(options.url);
    const commandTimeoutMs = positive(options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, 'commandTimeoutMs');
    const connectTimeoutMs = positive(options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
    const report = reporter(target.display, options.onError);
    // At start a failure is final (the caller is told); once up, the connection comes back by itself.
    let up = false;
    const reconnectStrategy = (retries: number): number | false => (up ? Math.min(RECONNECT_FIRST_MS * 2 ** retries, RECONNECT_MAX_MS) : false);
    const timing = { connectTimeout: connectTimeoutMs, reconnectStrategy };
    const socket = target.tls ? { tls: true as const, ...timing } : { tls: false as const, ...timing };
    const credentials = { ...(target.username === undefined ? {} : { username: target.username }), ...(target.password === undefined ? {} : { password: target.password }) };
    const common = { ...credentials, disableOfflineQueue: true, commandsQueueMaxLength: MAX_QUEUED_COMMANDS, commandOptions: { timeout: commandTimeoutMs } };
    const single: CommandClient = createClient({ ...common, database: target.database, socket: { ...socket, host: target.host, port: target.port } });
    let failure: Error | undefined;
    single.on('error', (err) => {
      failure = err;
      if (up) report(err);
    });
    const { signal } = options;
    try {
      await withDeadline(single.connect(), connectTimeoutMs, signal);
      const info = String(await withDeadline(single.sendCommand(['INFO'], { timeout: commandTimeoutMs }), commandTimeoutMs, signal));
      const version = /redis_version:(\d+)/.exec(info)?.[1];
      if (version === undefined || Number(version) < MIN_REDIS_MAJOR) {
        throw new NattravError(ErrorCode.RegistryUnavailable, `Redis ${target.display} is version ${version ?? 'unknown'}; the broker needs Redis ${MIN_REDIS_MAJOR} or later`);
      }
      if (!/cluster_enabled:1/.test(info)) {
        up = true;
        return new RedisConnection(target.display, commandTimeoutMs, report, single, undefined);
      }
      await single.close();
      if (target.database !== 0) throw new NattravError(ErrorCode.InvalidArgument, `Redis URL ${target.display}: a Redis Cluster has only database 0`);
      const cluster = createCluster({
        rootNodes: [{ ...credentials, socket: { ...socket, host: target.host, port: target.port } }],
        defaults: { ...common, socket },
      }) as unknown as ClusterClient; // node-redis's generic node types, narrowed to what is used here
      cluster.on('error', (err) => (up ? report(err) : (failure = err)));
      cluster.on('node-error', (err) => (up ? report(err) : (failure = err)));
      try {
        await withDeadline(cluster.connect(), connectTimeoutMs, signal);
      } catch (err) {
        cluster.destroy();
        throw err;
      }
      up = true;
      return new RedisConnection(target.display, commandTimeoutMs, report, undefined, cluster);
    } catch (err) {
      single.destroy();
      if (err instanceof NattravError) throw err;
      if (signal?.aborted === true && err === signal.reason) throw err;
      const cause = failure ?? err;
      throw new NattravError(ErrorCode.RegistryUnavailable, `Redis ${target.display} is unreachable: ${describe(cause)}`, { cause });
    }
  }

  /** Runs one command on the node holding `key`; a failure is ERR_REGISTRY_UNAVAILABLE. */
  async command(key: string, args: ReadonlyArray<string | Buffer>, readonly = false): Promise<unknown> {
    const options = { timeout: this.#commandTimeoutMs, typeMapping: TYPE_MAPPING };
    try {
      if (this.#closed) throw new Error('the connection is closed');
      // node-redis's own timeout covers only the wait to be written: a server that takes the
      // command and never answers (stopped, overloaded) is caught by this deadline.
      const sent = this.#clusterClient !== undefined ? this.#clusterClient.sendCommand(key, readonly, args, options) : (this.#client as CommandClient).sendCommand(args, options);
      return await withDeadline(sent, this.#commandTimeoutMs);
    } catch (err) {
      const failed = new NattravError(ErrorCode.RegistryUnavailable, `Redis ${this.display}: ${args[0] as string} failed: ${describe(err)}`, { cause: err });
      // A script the server does not hold yet is not a failure (script() sends it).
      if (!/NOSCRIPT/.test(describe(err))) this.#report(failed);
      throw failed;
    }
  }

  /** Runs `script` on the node holding `key` (its only key). */
  async script(script: RedisScript, key: string, args: ReadonlyArray<string | Buffer>): Promise<unknown> {
    try {
      return await this.command(key, ['EVALSHA', script.sha1, '1', key, ...args]);
    } catch (err) {
      if (!/NOSCRIPT/.test(describe((err as NattravError).cause))) throw err;
      return this.command(key, ['EVAL', script.source, '1', key, ...args]);
    }
  }

  /**
   * Receives what is published (SPUBLISH, see {@link publish}) on `channel`, as Buffers, on
   * a connection of its own (a subscribed connection takes no other commands); in a cluster
   * the node holding the channel's slot serves it. Resubscribes by itself after a
   * reconnection. Resolves, once subscribed, with the function that unsubscribes and closes
   * that connection. A failure is ERR_REGISTRY_UNAVAILABLE.
   */
  async subscribe(channel: string, listener: (message: Buffer) => void): Promise<() => Promise<void>> {
    const onMessage: BufferListener = (message) => listener(message);
    let subscriber: ShardedSubscriber;
    let dedicated: CommandClient | undefined;
    try {
      if (this.#closed) throw new Error('the connection is closed');
      if (this.#clusterClient !== undefined) {
        subscriber = this.#clusterClient; // node-redis keeps separate pub/sub connections per shard
      } else {
        dedicated = (this.#client as CommandClient).duplicate();
        dedicated.on('error', (err) => this.#report(err));
        await withDeadline(dedicated.connect(), this.#commandTimeoutMs);
        subscriber = dedicated;
      }
      await withDeadline(subscriber.sSubscribe(channel, onMessage, true), this.#commandTimeoutMs);
    } catch (err) {
      dedicated?.destroy();
      throw new NattravError(ErrorCode.RegistryUnavailable, `Redis ${this.display}: SSUBSCRIBE failed: ${describe(err)}`, { cause: err });
    }
    return async () => {
      try {
        await withDeadline(subscriber.sUnsubscribe(channel, onMessage, true), this.#commandTimeoutMs);
      } catch {
        // Gone or closing: the connection is closed next (or with the cluster) anyway.
      }
      if (dedicated !== undefined) await withDeadline(dedicated.close(), this.#commandTimeoutMs).catch(() => dedicated?.destroy());
    };
  }

  /** Publishes `message` on `channel` (SPUBLISH, on the node of the channel's slot); resolves with how many subscribers got it. */
  async publish(channel: string, message: Uint8Array): Promise<number> {
    return Number(await this.command(channel, ['SPUBLISH', channel, Buffer.from(message.buffer, message.byteOffset, message.byteLength)]));
  }

  /** Every key matching the glob `pattern`, on every master, a page at a time. */
  async *keys(pattern: string): AsyncGenerator<Buffer[]> {
    const nodes = this.#clusterClient === undefined ? [this.#client as CommandClient] : await this.#masters();
    for (const node of nodes) {
      let cursor = '0';
      do {
        let reply: unknown;
        try {
          const sent = node.sendCommand(['SCAN', cursor, 'MATCH', pattern, 'COUNT', String(SCAN_COUNT)], { timeout: this.#commandTimeoutMs, typeMapping: TYPE_MAPPING });
          reply = await withDeadline(sent, this.#commandTimeoutMs);
        } catch (err) {
          throw new NattravError(ErrorCode.RegistryUnavailable, `Redis ${this.display}: SCAN failed: ${describe(err)}`, { cause: err });
        }
        const [next, page] = reply as [Buffer, Buffer[]];
        cursor = next.toString();
        yield page;
      } while (cursor !== '0');
    }
  }

  async #masters(): Promise<CommandClient[]> {
    const cluster = this.#clusterClient as ClusterClient;
    try {
      return await Promise.all(cluster.masters.map((master) => cluster.nodeClient(master as never)));
    } catch (err) {
      throw new NattravError(ErrorCode.RegistryUnavailable, `Redis ${this.display}: a cluster node is unreachable: ${describe(err)}`, { cause: err });
    }
  }

  /** Same as {@link RedisConnection.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Closes the connection (commands in flight are answered first, if the server still answers). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const client = this.#clusterClient ?? (this.#client as CommandClient);
    try {
      await withDeadline(client.close(), this.#commandTimeoutMs);
    } catch {
      client.destroy();
    }
  }
}

function positive(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new NattravError(ErrorCode.InvalidArgument, `Redis option ${name} must be a positive whole number of ms, got ${value}`);
  return value;
}

/** At most one report per {@link REPORT_INTERVAL_MS}, saying how many were held back. */
function reporter(display: string, onError: ((err: NattravError) => void) | undefined): (err: Error) => void {
  let last = -Infinity;
  let heldBack = 0;
  return (err) => {
    const now = Date.now();
    if (now - last < REPORT_INTERVAL_MS) {
      heldBack++;
      return;
    }
    last = now;
    const more = heldBack === 0 ? '' : ` (and ${heldBack} more failures since the last report)`;
    heldBack = 0;
    const message = err instanceof NattravError ? err.message : `Redis ${display}: ${describe(err)}`;
    onError?.(new NattravError(ErrorCode.RegistryUnavailable, `${message}${more}`, { cause: err }));
  };
}

function describe(err: unknown): string {
  if (err instanceof AggregateError) return err.errors.map(describe).join('; ');
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
}

/** `promise`, or a rejection after `ms` ("no answer within"), or `signal`'s reason when it aborts first. */
async function withDeadline<T>(promise: Promise<T>, ms: number, signal?: AbortSignal): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    if (signal === undefined) return;
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}
