/** Loopback fixtures for unit tests: a broker and a registered recipient, always closed. */
import { once } from 'node:events';
import { connect as netConnect, createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { createBroker, type Broker } from '../../src/broker/broker.js';
import type { BrokerEvent } from '../../src/broker/events.js';
import type { BrokerOptions } from '../../src/broker/options.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { createServer, type NattravServer } from '../../src/peer/server.js';
import type { ServerOptions } from '../../src/peer/options.js';
import { encodeMessage } from '../../src/wire/codec.js';
import { Method } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';

/** Starts a broker on 127.0.0.1 with a free port. */
export async function startBroker(options: BrokerOptions = {}): Promise<{ broker: Broker; address: string }> {
  const broker = createBroker({ host: '127.0.0.1', port: 0, ...options });
  const { port } = await broker.listen();
  return { broker, address: `127.0.0.1:${port}` };
}

/** A broker on loopback whose events are collected; `closers` gets its close. */
export async function startWatchedBroker(
  closers: Array<() => unknown>,
  options: BrokerOptions = {},
): Promise<{ broker: Broker; address: string; port: number; events: BrokerEvent[] }> {
  const started = await startBroker(options);
  closers.push(() => started.broker.close());
  const events: BrokerEvent[] = [];
  started.broker.on('event', (e: BrokerEvent) => events.push(e));
  return { ...started, port: started.broker.address().port, events };
}

/** Starts a recipient registered as `uri` and collects its connections. */
export async function startRecipient(
  address: string,
  uri: string,
  options: Partial<ServerOptions> = {},
): Promise<{ server: NattravServer; accepted: NattravSocket[] }> {
  const accepted: NattravSocket[] = [];
  const server = createServer({ broker: address, uri, ...options }, (socket) => accepted.push(socket));
  server.listen();
  await once(server, 'listening');
  return { server, accepted };
}

/** Resolves when `predicate` holds, polling every 10 ms, or rejects after `timeoutMs`. */
export async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Resolves once an in-process broker on `port` has read every byte written to it before
 * the call: a Binding on a fresh TCP connection from `localAddress` is answered only
 * after the broker's event loop (the test's own) went through the poll in which the
 * earlier bytes, already in the kernel, were read. So a test on a fake clock can move
 * the clock knowing what the broker has seen, without sleeping.
 */
export async function brokerCaughtUp(port: number, localAddress = '127.0.0.99'): Promise<void> {
  const socket = netConnect({ host: '127.0.0.1', port, localAddress });
  try {
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    const request = StunMessage.request(Method.Binding);
    socket.write(encodeMessage(request));
    const decoder = new StunStreamDecoder();
    for await (const chunk of socket) {
      if (decoder.push(chunk as Buffer).some((m) => Buffer.from(m.transactionId).equals(request.transactionId))) return;
    }
    throw new Error('the broker closed the connection instead of answering');
  } finally {
    socket.destroy();
  }
}

/** A TCP connection to 127.0.0.1:`port` from `localAddress` (errors ignored: attackers and slow clients get closed). */
export function tcpFrom(port: number, localAddress: string): Socket {
  const socket = netConnect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  return socket;
}

/** A {@link socketPair} whose sockets ignore errors (tests that make them fail on purpose); its close is added to `closers`, for teardown. */
export async function quietSocketPair(closers: Array<() => unknown>): Promise<{ a: Socket; b: Socket }> {
  const pair = await socketPair();
  closers.push(pair.close);
  pair.a.on('error', () => undefined);
  pair.b.on('error', () => undefined);
  return pair;
}

/** A connected pair of loopback TCP sockets; `close` destroys both and the listener. */
export async function socketPair(): Promise<{ a: Socket; b: Socket; close: () => void }> {
  const server: Server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const a = netConnect({ host: '127.0.0.1', port: (server.address() as { port: number }).port });
  const b = await accepted;
  return { a, b, close: () => (a.destroy(), b.destroy(), server.close()) };
}
