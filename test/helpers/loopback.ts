/** Loopback fixtures for unit tests: a broker and a registered recipient, always closed. */
import { once } from 'node:events';
import { createBroker, type Broker } from '../../src/broker/broker.js';
import type { BrokerEvent } from '../../src/broker/events.js';
import type { BrokerOptions } from '../../src/broker/options.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { createServer, type NattravServer } from '../../src/peer/server.js';
import type { ServerOptions } from '../../src/peer/options.js';

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
