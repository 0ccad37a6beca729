/**
 * A tiny SOCKS5 server for unit tests (RFC 1928 CONNECT to IPv4 targets, BIND on 127.0.0.1,
 * RFC 1929 username/password when `credentials` is set). It records what it was asked; real
 * proxy behaviour is tested against danted in test/lab.
 */
import { once } from 'node:events';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';

/** A running test proxy. */
export interface TestSocks5 {
  readonly port: number;
  /** The CONNECT targets asked for, as `address:port`. */
  readonly targets: string[];
  /** BIND requests answered so far (refused ones included). */
  readonly bindRequests: number;
  /** The ports of the BINDs waiting for their connection now. */
  readonly boundPorts: number[];
  /** Drops every BIND waiting for its connection (closes its listener and control connection), as a proxy restart would. */
  dropBinds(): void;
  close(): Promise<void>;
}

/** How the test proxy answers BIND. */
export interface TestSocks5Options {
  /** 'accept' (default), or a refusal with this RFC 1928 reply code (2 not allowed, 7 command not supported). */
  readonly bind?: 'accept' | number;
  /** The address put in the first BIND reply. @default '127.0.0.1' ('0.0.0.0': "my own address") */
  readonly boundAddress?: string;
  /** How long the first BIND reply takes, in ms. @default 0 */
  readonly bindDelayMs?: number;
}

interface BindState {
  count: number;
  readonly waiting: Map<Server, Socket>;
}

/** RFC 1928 reply with an IPv4 address. */
function reply(code: number, address: string, port: number): Buffer {
  const bytes = Buffer.from([5, code, 0, 1, ...address.split('.').map(Number), 0, 0]);
  bytes.writeUInt16BE(port, 8);
  return bytes;
}

/** BIND (RFC 1928 §4): listen, first reply with the bound port, second reply with whoever connects, then splice. */
async function bind(client: Socket, options: TestSocks5Options, state: BindState): Promise<void> {
  state.count++;
  await take(client, 6); // DST.ADDR and DST.PORT: not used to filter here
  if (options.bind !== undefined && options.bind !== 'accept') {
    client.end(reply(options.bind, '0.0.0.0', 0));
    return;
  }
  await new Promise((resolve) => setTimeout(resolve, options.bindDelayMs ?? 0));
  const listener = createServer({ allowHalfOpen: true });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  state.waiting.set(listener, client);
  const drop = (): void => {
    state.waiting.delete(listener);
    listener.close();
  };
  client.once('close', drop);
  // The client closing its side while it waits gives up the BIND.
  const gaveUp = (): void => {
    client.destroy();
  };
  client.once('end', gaveUp);
  client.write(reply(0, options.boundAddress ?? '127.0.0.1', (listener.address() as { port: number }).port));
  listener.once('connection', (peer) => {
    drop();
    client.off('end', gaveUp);
    peer.on('error', () => client.destroy());
    client.on('error', () => peer.destroy());
    peer.once('close', () => client.destroy());
    client.write(reply(0, peer.remoteAddress ?? '0.0.0.0', peer.remotePort ?? 0));
    client.pipe(peer);
    peer.pipe(client);
  });
}

/** Reads exactly `n` bytes off `socket`. */
async function take(socket: Socket, n: number): Promise<Buffer> {
  for (;;) {
    const chunk = socket.read(n) as Buffer | null;
    if (chunk !== null) return chunk;
    if (socket.readableEnded || socket.destroyed) throw new Error('closed');
    await Promise.race([once(socket, 'readable'), once(socket, 'close')]);
  }
}

async function serve(client: Socket, credentials: { username: string; password: string } | undefined, targets: string[], options: TestSocks5Options, state: BindState): Promise<void> {
  const [, count] = await take(client, 2);
  const methods = await take(client, count ?? 0);
  const wanted = credentials === undefined ? 0x00 : 0x02;
  if (!methods.includes(wanted)) {
    client.end(Buffer.from([5, 0xff]));
    return;
  }
  client.write(Buffer.from([5, wanted]));
  if (credentials !== undefined) {
    const [, userLength] = await take(client, 2);
    const user = (await take(client, userLength ?? 0)).toString();
    const [passLength] = await take(client, 1);
    const pass = (await take(client, passLength ?? 0)).toString();
    const ok = user === credentials.username && pass === credentials.password;
    client.write(Buffer.from([1, ok ? 0 : 1]));
    if (!ok) {
      client.end();
      return;
    }
  }
  const [, command, , type] = await take(client, 4);
  if (command === 2 && type === 1) {
    await bind(client, options, state);
    return;
  }
  if (command !== 1 || type !== 1) {
    client.end(Buffer.from([5, 7, 0, 1, 0, 0, 0, 0, 0, 0]));
    return;
  }
  const address = [...(await take(client, 4))].join('.');
  const port = (await take(client, 2)).readUInt16BE(0);
  targets.push(`${address}:${port}`);
  const upstream = netConnect({ host: address, port, allowHalfOpen: true });
  client.once('close', () => upstream.destroy());
  upstream.once('error', () => {
    // 5 = connection refused
    client.end(Buffer.from([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]));
  });
  upstream.once('connect', () => {
    upstream.removeAllListeners('error');
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]));
    client.pipe(upstream);
    upstream.pipe(client);
  });
}

/** Starts the proxy on 127.0.0.1 (any port); with `credentials`, only username/password is accepted. */
export async function startTestSocks5(credentials?: { username: string; password: string }, options: TestSocks5Options = {}): Promise<TestSocks5> {
  const targets: string[] = [];
  const state: BindState = { count: 0, waiting: new Map() };
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    serve(client, credentials, targets, options, state).catch(() => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    targets,
    get bindRequests() {
      return state.count;
    },
    get boundPorts() {
      return [...state.waiting.keys()].map((listener) => (listener.address() as { port: number }).port);
    },
    dropBinds: () => {
      for (const [listener, client] of state.waiting) {
        listener.close();
        client.destroy();
      }
      state.waiting.clear();
    },
    close: async () => {
      for (const [listener] of state.waiting) listener.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
