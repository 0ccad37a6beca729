/**
 * Fuzzing a running broker on loopback: well over 100,000 malformed and mutated
 * messages over UDP and TCP (bit flips, truncation, length edits, random bytes
 * of valid Binding/Register/Connect/Join/Relay/MappingProbe messages; TCP
 * connections streaming garbage, half messages and oversize lengths). Meanwhile
 * a valid client keeps getting Binding answers, a recipient stays registered
 * and connectable, nothing escapes as an uncaught exception, and the heap after
 * a forced GC stays within a bound. Bounded in count and time.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect as netConnect } from 'node:net';
import { after, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { connect } from '../../src/peer/connect.js';
import { encodeChangeRequest } from '../../src/wire/change-request.js';
import { decodeMessage, encodeMessage, isStunMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addU32, addUri, addXorAddress } from '../../src/wire/nattrav.js';
import { encodePadding } from '../../src/wire/padding.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { encodeResponsePort } from '../../src/wire/response-port.js';
import type { RateSpec } from '../../src/broker/limits.js';
import { startBroker, startRecipient } from '../helpers/loopback.js';

/** UDP datagrams sent in all. */
const UDP_MESSAGES = 90_000;
/** TCP messages (mutated or garbage chunks) sent in all, over {@link TCP_CONNECTIONS} connections. */
const TCP_MESSAGES = 20_000;
const TCP_CONNECTIONS = 400;
/** Datagrams per burst, then a short pause: loopback buffers are finite and loss is fine, but the valid client must get through. */
const UDP_BURST = 200;
/** Pause between bursts, in ms: about 10,000 datagrams a second, ~10 s in all. */
const UDP_BURST_PAUSE_MS = 20;
/** Heap growth allowed after a forced GC. */
const MAX_HEAP_GROWTH_BYTES = 50 * 1024 * 1024;
/** Limits high enough that the fuzz reaches the parsers instead of stopping at the rate limits. */
const OPEN_RATE: RateSpec = { perSecond: 1_000_000, burst: 1_000_000 };

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function templates(): Buffer[] {
  const id = randomBytes(16);
  const list: StunMessage[] = [
    StunMessage.request(Method.Binding),
    StunMessage.request(Method.Binding).add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: true, changePort: true })),
    StunMessage.request(Method.Binding).add(AttrType.Padding, encodePadding(64)),
    StunMessage.request(Method.Binding).add(AttrType.ResponsePort, encodeResponsePort(9)),
    addRequestPadding(StunMessage.request(Method.Binding)),
    addU32(addXorAddress(addUri(StunMessage.request(Method.Register), 'nattrav://t'), AttrType.PrivateEndpoint, { family: 'IPv4', address: '10.0.0.1', port: 1 }), AttrType.Lifetime, 1_000),
    addAttemptId(addUri(StunMessage.request(Method.Connect), 'nattrav://t'), id),
    addAttemptId(StunMessage.request(Method.Join), id),
    addU32(addAttemptId(StunMessage.request(Method.Relay), id), AttrType.Role, 0),
    addU32(addAttemptId(StunMessage.request(Method.MappingProbe), id), AttrType.Role, 1),
    new StunMessage({ method: Method.ConnectionRequest, cls: MessageClass.SuccessResponse }),
    StunMessage.request(Method.Binding).errorResponse(400, 'x'),
  ];
  return list.flatMap((m) => [encodeMessage(m), encodeMessage(m, { fingerprint: true, software: 'fuzz' })]);
}

/** One mutation of `base`: bit flips, truncation, a length edit, an attribute length edit, random bytes, or a splice. */
function mutate(base: Buffer): Buffer {
  const out = Buffer.from(base);
  switch (randomInt(7)) {
    case 0:
      for (let i = randomInt(1, 9); i > 0; i--) out[randomInt(out.length)] ^= 1 << randomInt(8);
      return out;
    case 1:
      return out.subarray(0, randomInt(out.length));
    case 2:
      out.writeUInt16BE(randomInt(0x10000) & ~3, 2);
      return out;
    case 3:
      if (out.length >= 24) out.writeUInt16BE(randomInt(0x10000), 22);
      return out;
    case 4:
      return randomBytes(randomInt(1, 200));
    case 5: {
      const cut = randomInt(20, Math.max(21, out.length));
      return Buffer.concat([out.subarray(0, cut), randomBytes(randomInt(0, 64))]);
    }
    default:
      out[randomInt(20, Math.max(21, out.length))] = randomInt(256);
      return out;
  }
}

function udpSocket(): Promise<UdpSocket> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.on('error', () => undefined);
    socket.bind(0, '127.0.0.1', () => resolve(socket));
  });
}

function heapAfterGc(gc: () => void): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

test('broker fuzz: 100,000+ malformed messages over UDP and TCP do not hurt it', { timeout: 90_000 }, async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  closers.push(() => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });

  const { broker, address } = await startBroker({
    open: true,
    limits: { udpBinding: OPEN_RATE, udpRegister: OPEN_RATE, udpOther: OPEN_RATE, tcpAccept: OPEN_RATE, tcpRequest: OPEN_RATE, connect: OPEN_RATE, relay: OPEN_RATE, mappingProbe: OPEN_RATE },
  });
  closers.push(() => broker.close());
  const port = broker.address().port;
  const limited: string[] = [];
  broker.on('event', (e: { type: string; kind?: string }) => {
    if (e.type === 'limited') limited.push(e.kind ?? '?');
  });
  const { server } = await startRecipient(address, 'nattrav://fuzz-recipient');
  closers.push(() => server.close());
  const heapBefore = heapAfterGc(gc);

  // A valid client: a new Binding every 50 ms, each retransmitted twice (after 100 and 200 ms)
  // until answered, as a real STUN client does (RFC 8489 section 6.2.1): a flood on loopback
  // can fill the broker's receive buffer, and then any datagram is dropped, not just the flood's.
  const probe = await udpSocket();
  closers.push(() => probe.close());
  const RETRANSMIT_MS = [100, 200];
  const pending = new Set<string>();
  let asked = 0;
  let answered = 0;
  probe.on('message', (data) => {
    if (!isStunMessage(data)) return;
    const answer = decodeMessage(data);
    const id = Buffer.from(answer.transactionId).toString('hex');
    if (answer.cls === MessageClass.SuccessResponse && pending.delete(id)) answered++;
  });
  const timers = new Set<NodeJS.Timeout>();
  const prober = setInterval(() => {
    asked++;
    const request = StunMessage.request(Method.Binding);
    const id = Buffer.from(request.transactionId).toString('hex');
    const bytes = encodeMessage(addRequestPadding(request), { fingerprint: true });
    pending.add(id);
    probe.send(bytes, port, '127.0.0.1');
    for (const after of RETRANSMIT_MS) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (pending.has(id)) probe.send(bytes, port, '127.0.0.1');
      }, after);
      timers.add(timer);
    }
  }, 50);
  closers.push(() => {
    clearInterval(prober);
    for (const timer of timers) clearTimeout(timer);
  });

  const bases = templates();
  const started = Date.now();

  const udp = async (): Promise<void> => {
    const sockets = await Promise.all(Array.from({ length: 4 }, () => udpSocket()));
    closers.push(() => sockets.forEach((s) => s.close()));
    for (let sent = 0; sent < UDP_MESSAGES; ) {
      for (let i = 0; i < UDP_BURST; i++, sent++) {
        const base = bases[randomInt(bases.length)] as Buffer;
        sockets[sent % sockets.length]?.send(mutate(base), port, '127.0.0.1');
      }
      await pause(UDP_BURST_PAUSE_MS);
    }
  };

  const tcp = async (): Promise<void> => {
    const perConnection = Math.ceil(TCP_MESSAGES / TCP_CONNECTIONS);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < TCP_CONNECTIONS) {
        const n = next++;
        await new Promise<void>((resolve) => {
          const socket = netConnect({ host: '127.0.0.1', port: n % 2 === 0 ? port : port + 1 });
          socket.on('error', () => undefined);
          socket.on('close', () => resolve());
          socket.on('data', () => undefined);
          socket.on('connect', () => {
            const chunks: Buffer[] = [];
            for (let i = 0; i < perConnection; i++) {
              const base = bases[randomInt(bases.length)] as Buffer;
              const kind = randomInt(10);
              if (kind < 4) chunks.push(base); // valid: keeps the stream going deeper
              else if (kind < 8) chunks.push(mutate(base));
              else if (kind === 8) chunks.push(base.subarray(0, randomInt(1, base.length))); // half a message
              else {
                const oversize = Buffer.from(base.subarray(0, 20));
                oversize.writeUInt16BE(0xfff0, 2);
                chunks.push(oversize);
              }
            }
            socket.end(Buffer.concat(chunks));
            setTimeout(() => socket.destroy(), 500);
          });
        });
      }
    };
    await Promise.all(Array.from({ length: 16 }, () => worker()));
  };

  await Promise.all([udp(), tcp()]);
  const seconds = (Date.now() - started) / 1000;
  clearInterval(prober);
  // The last retransmissions and their answers.
  await pause(500);

  t.diagnostic(`${UDP_MESSAGES} UDP + ${TCP_MESSAGES} TCP messages in ${seconds.toFixed(1)} s; valid Bindings answered ${answered}/${asked} (with up to ${RETRANSMIT_MS.length} retransmissions); limited events ${limited.length} (${[...new Set(limited)].join(', ')})`);
  assert.deepEqual(uncaught, [], 'no uncaught exception');
  assert.ok(asked > 0 && answered >= asked * 0.8, `the valid client kept getting answers (${answered}/${asked})`);
  assert.ok(await broker.registry.get('nattrav://fuzz-recipient'), 'the recipient is still registered');
  const socket = await connect({ broker: address, uri: 'nattrav://fuzz-recipient', timeoutMs: 10_000 });
  socket.destroy();

  const growth = heapAfterGc(gc) - heapBefore;
  t.diagnostic(`heap growth after GC: ${(growth / 1024 / 1024).toFixed(1)} MB; RSS ${(process.memoryUsage().rss / 1024 / 1024).toFixed(0)} MB`);
  assert.ok(growth < MAX_HEAP_GROWTH_BYTES, `heap grew by ${growth} bytes`);
});
