/**
 * A tiny SOCKS5 server for unit tests (RFC 1928 CONNECT to IPv4 targets, RFC 1929
 * username/password when `credentials` is set). It records what it was asked; real
 * proxy behaviour is tested against danted in test/lab.
 */
import { once } from 'node:events';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';

/** A running test proxy. */
export interface TestSocks5 {
  readonly port: number;
  /** The CONNECT targets asked for, as `address:port`. */
  readonly targets: string[];
  close(): Promise<void>;
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

async function serve(client: Socket, credentials: { username: string; password: string } | undefined, targets: string[]): Promise<void> {
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
export async function startTestSocks5(credentials?: { username: string; password: string }): Promise<TestSocks5> {
  const targets: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    serve(client, credentials, targets).catch(() => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    targets,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
