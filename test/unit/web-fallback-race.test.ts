/**
 * The web fallback dialer races instead of waiting: TCP that stays unanswered (a firewall
 * dropping it) starts the web steps after `fallbackDelayMs` beside it, and is given up
 * when a web step connects; TCP that answers late still wins over a web step still
 * handshaking (which is closed); TCP that connects at once never starts a web step.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect, createServer as netServer, type Server, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { abortError } from '../../src/common/signal.js';
import type { Dialer } from '../../src/peer/dialer.js';
import { WebFallbackDialer, type WebFallbackEvent } from '../../src/peer/web/dialer.js';
import { startWatchedBroker, until } from '../helpers/loopback.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** A TCP server that accepts and says nothing (a wss port whose TLS never answers), counting and holding its connections. */
async function silentServer(): Promise<{ port: number; accepted: Socket[]; closed: () => number }> {
  const accepted: Socket[] = [];
  let closed = 0;
  const server: Server = netServer((socket) => {
    accepted.push(socket);
    socket.on('error', () => undefined);
    // Read (and drop) what comes, so the client's close is seen.
    socket.resume();
    socket.on('close', () => closed++);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => {
    for (const socket of accepted) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return { port: (server.address() as { port: number }).port, accepted, closed: () => closed };
}

/** A TCP dialer that never connects (SYNs dropped); records whether it was given up. */
function droppingDialer(): Dialer & { aborted: boolean } {
  const dialer = {
    kind: 'direct',
    aborted: false,
    dial: (_target: unknown, signal: AbortSignal): Promise<Socket> =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          dialer.aborted = true;
          reject(abortError(signal));
        }, { once: true });
      }),
  };
  return dialer;
}

/** A TCP dialer that connects to `port` after `ms`. */
function lateDialer(port: number, ms: number): Dialer {
  return {
    kind: 'direct',
    dial: (_target, signal) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const socket = netConnect(port, '127.0.0.1', () => resolve(socket));
          socket.once('error', reject);
        }, ms);
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          reject(abortError(signal));
        }, { once: true });
      }),
  };
}

test('TCP dropped: the web steps start after the delay beside it, ws wins, TCP is given up and named', async () => {
  const { broker } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
  const wsPort = broker.webSocketEndpoints()[0]?.port as number;
  const wss = await silentServer();
  const tcp = droppingDialer();
  const events: WebFallbackEvent[] = [];
  // wss: a silent port, so its TLS step is cut off by the step limit; then ws answers.
  const dialer = new WebFallbackDialer({ fallbackPorts: { wss: wss.port, ws: wsPort }, httpProxy: false, fallbackDelayMs: 200, stepTimeoutMs: 500, tcpDialer: tcp }, (e) => events.push(e));
  const socket = await dialer.dial({ host: '127.0.0.1', port: 9 }, AbortSignal.timeout(20_000));
  closers.push(() => socket.destroy());
  assert.equal(dialer.kind, 'ws');
  assert.ok(tcp.aborted, 'the unanswered TCP attempt was given up');
  assert.equal(events.length, 1);
  assert.match(events[0]?.reasons[0] ?? '', /^tcp: no answer within 200 ms \(given up when ws:\/\/127\.0\.0\.1:\d+\/ answered\)$/);
  assert.match(events[0]?.reasons[1] ?? '', /^wss:\/\/127\.0\.0\.1:\d+\/: /);
  assert.equal(wss.accepted.length, 1, 'the wss step was tried once');
});

test('TCP answering after the delay still wins over a web step still handshaking, which is closed', async () => {
  const target = await silentServer();
  const wss = await silentServer();
  const events: WebFallbackEvent[] = [];
  const dialer = new WebFallbackDialer({ fallbackPorts: { wss: wss.port, ws: wss.port }, httpProxy: false, fallbackDelayMs: 100, tcpDialer: lateDialer(target.port, 600) }, (e) => events.push(e));
  const socket = await dialer.dial({ host: '127.0.0.1', port: target.port }, AbortSignal.timeout(20_000));
  closers.push(() => socket.destroy());
  assert.equal(dialer.kind, 'direct');
  assert.equal(events.length, 0);
  assert.equal(wss.accepted.length, 1, 'the wss step had started');
  await until(() => wss.closed() === 1, 5_000, 'the losing wss connection closed');
});

test('TCP that connects at once starts no web step at all', async () => {
  const target = await silentServer();
  const wss = await silentServer();
  const dialer = new WebFallbackDialer({ fallbackPorts: { wss: wss.port, ws: wss.port }, httpProxy: false, fallbackDelayMs: 50 });
  for (let i = 0; i < 5; i++) {
    const fresh = new WebFallbackDialer({ fallbackPorts: { wss: wss.port, ws: wss.port }, httpProxy: false, fallbackDelayMs: 50 });
    const socket = await fresh.dial({ host: '127.0.0.1', port: target.port }, AbortSignal.timeout(10_000));
    closers.push(() => socket.destroy());
  }
  const socket = await dialer.dial({ host: '127.0.0.1', port: target.port }, AbortSignal.timeout(10_000));
  closers.push(() => socket.destroy());
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(dialer.kind, 'direct');
  assert.equal(wss.accepted.length, 0, 'no connection to the web port');
});
