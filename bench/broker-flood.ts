/**
 * Broker under flood, on loopback: sustained UDP Binding requests per second
 * the broker answers (limits opened wide, so this measures the broker, not its
 * rate limits), the same with default limits from one source (how much a
 * single flooding address gets through), TCP Connect lookups per second, and
 * the process's RSS. Prints numbers; asserts nothing. Bounded in time.
 * Run: `node dist/bench/broker-flood.js`.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect as netConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createBroker } from '../src/broker/broker.js';
import type { BrokerLimitsOptions, RateSpec } from '../src/broker/limits.js';
import { encodeMessage } from '../src/wire/codec.js';
import { Method } from '../src/wire/constants.js';
import { StunStreamDecoder } from '../src/wire/framing.js';
import { StunMessage } from '../src/wire/message.js';
import { addUri } from '../src/wire/nattrav.js';
import { addRequestPadding } from '../src/wire/request-padding.js';

/** How long each UDP phase runs, in ms. */
const PHASE_MS = 3_000;
/** Requests in flight per UDP socket before waiting for a tick. */
const UDP_WINDOW = 64;
/** Sender sockets (all 127.0.0.1). */
const SENDERS = 4;
/** TCP lookups in all, and at once. */
const TCP_LOOKUPS = 5_000;
const TCP_PARALLEL = 64;
const WIDE: RateSpec = { perSecond: 1e9, burst: 1e9 };
const WIDE_LIMITS: BrokerLimitsOptions = { udpBinding: WIDE, udpOther: WIDE, tcpAccept: WIDE, tcpRequest: WIDE, connect: WIDE, connectPerUri: WIDE };

const mb = (n: number): string => `${(n / 1024 / 1024).toFixed(0)} MB`;

function bind(): Promise<UdpSocket> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.on('error', () => undefined);
    socket.bind(0, '127.0.0.1', () => resolve(socket));
  });
}

async function udpPhase(name: string, limits: BrokerLimitsOptions): Promise<void> {
  const broker = createBroker({ host: '127.0.0.1', port: 0, limits });
  const { port } = await broker.listen();
  const sockets = await Promise.all(Array.from({ length: SENDERS }, () => bind()));
  const request = encodeMessage(addRequestPadding(StunMessage.request(Method.Binding)), { fingerprint: true });
  let sent = 0;
  let answered = 0;
  for (const s of sockets) s.on('message', () => answered++);
  const started = performance.now();
  while (performance.now() - started < PHASE_MS) {
    for (const s of sockets) for (let i = 0; i < UDP_WINDOW; i++, sent++) s.send(request, port, '127.0.0.1');
    await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  const seconds = (performance.now() - started) / 1000;
  console.log(`${name}: sent ${(sent / seconds).toFixed(0)}/s, answered ${(answered / seconds).toFixed(0)}/s (${((answered / sent) * 100).toFixed(1)}%), RSS ${mb(process.memoryUsage().rss)}`);
  for (const s of sockets) s.close();
  await broker.close();
}

async function tcpPhase(): Promise<void> {
  const broker = createBroker({ host: '127.0.0.1', port: 0, limits: WIDE_LIMITS });
  const { port } = await broker.listen();
  const started = performance.now();
  let next = 0;
  let answered = 0;
  const worker = async (): Promise<void> => {
    while (next++ < TCP_LOOKUPS) {
      await new Promise<void>((resolve) => {
        const socket = netConnect({ host: '127.0.0.1', port });
        const decoder = new StunStreamDecoder();
        socket.on('error', () => resolve());
        socket.on('close', () => resolve());
        socket.on('data', (chunk) => {
          if (decoder.push(chunk).length > 0) answered++;
          socket.destroy();
        });
        socket.write(encodeMessage(addUri(StunMessage.request(Method.Connect), 'nattrav://nobody')));
      });
    }
  };
  await Promise.all(Array.from({ length: TCP_PARALLEL }, () => worker()));
  const seconds = (performance.now() - started) / 1000;
  console.log(`TCP Connect lookups (unknown URI, one connection each): ${(answered / seconds).toFixed(0)}/s, RSS ${mb(process.memoryUsage().rss)}`);
  await broker.close();
}

console.log(`broker flood on loopback, ${SENDERS} UDP senders, ${PHASE_MS} ms per phase; RSS at start ${mb(process.memoryUsage().rss)}`);
await udpPhase('UDP Binding, limits opened wide', WIDE_LIMITS);
await udpPhase('UDP Binding, default limits (one flooding source)', {});
await tcpPhase();
