/**
 * A broker that bad input cannot hurt: rate limits and caps per source (a
 * flooding address does not keep another from registering and connecting),
 * per-recipient connection-request caps, and the slow-client (first message)
 * timeout. Anti-amplification of UDP answers has its own file
 * (broker-amplification.test.ts). Loopback only; distinct source addresses are
 * 127.0.0.x (all local on Linux).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { connect } from '../../src/peer/connect.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { brokerCaughtUp, startBroker, startWatchedBroker, startRecipient, until } from '../helpers/loopback.js';
import { collect, udpSocket } from '../helpers/udp.js';

/** The flooding source: a loopback address other than the legitimate peers' 127.0.0.1. */
const ATTACKER = '127.0.0.3';
/** How long to collect UDP answers after the last request; loopback answers in well under a millisecond. */
const COLLECT_MS = 300;


const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Opens a TCP connection from `localAddress` and resolves once connected. */
async function tcp(port: number, localAddress: string): Promise<Socket> {
  const socket = netConnect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  return socket;
}

describe('broker hardening', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  const broker = (options: Parameters<typeof startBroker>[0] = {}): ReturnType<typeof startWatchedBroker> => startWatchedBroker(closers, options);

  test('a flooding source is limited; a peer at another address still registers and connects', async () => {
    const { port, address, events, broker: b } = await broker({
      open: true,
      limits: { maxRegistrationsPerSource: 20, udpRegister: { perSecond: 20, burst: 50 }, connect: { perSecond: 20, burst: 40 } },
    });
    const attacker = await udpSocket(ATTACKER);
    closers.push(() => attacker.close());
    const answers = collect(attacker);
    const flood = async (): Promise<void> => {
      for (let i = 0; i < 2_000; i++) {
        attacker.send(encodeMessage(addRequestPadding(addUri(StunMessage.request(Method.Register), `nattrav://flood/${i}`))), port, '127.0.0.1');
        if (i % 100 === 99) await pause(5);
      }
    };
    const lookups = async (): Promise<number> => {
      let refused = 0;
      await Promise.all(Array.from({ length: 100 }, async (_, i) => {
        const socket = await tcp(port, ATTACKER);
        const decoder = new StunStreamDecoder();
        socket.write(encodeMessage(addUri(StunMessage.request(Method.Connect), `nattrav://nobody/${i}`)));
        await new Promise<void>((resolve) => {
          socket.on('data', (chunk) => {
            for (const m of decoder.push(chunk)) if (getErrorCode(m)?.code === StunErrorCode.TooManyRequests) refused++;
          });
          socket.on('close', () => resolve());
          setTimeout(() => socket.destroy(), 2_000);
        });
      }));
      return refused;
    };
    const [, refusedLookups, legit] = await Promise.all([
      flood(),
      lookups(),
      (async () => {
        const { server } = await startRecipient(address, 'nattrav://legit');
        closers.push(() => server.close());
        const socket = await connect({ broker: address, uri: 'nattrav://legit', timeoutMs: 10_000 });
        socket.destroy();
        return true;
      })(),
    ]);
    assert.equal(legit, true);
    await pause(COLLECT_MS);
    let fromAttacker = 0;
    for (let i = 0; i < 2_000; i++) if (await b.registry.get(`nattrav://flood/${i}`)) fromAttacker++;
    assert.ok(fromAttacker <= 20, `${fromAttacker} registrations from one address`);
    const tooMany = [...answers.values()].flat().filter((d) => getErrorCode(decodeMessage(d))?.code === StunErrorCode.TooManyRequests).length;
    assert.ok(tooMany > 0, 'over the per-source cap: 429');
    assert.ok(refusedLookups > 0, 'lookups over the rate: 429');
    const kinds = new Set(events.flatMap((e) => (e.type === 'limited' ? [e.kind] : [])));
    for (const kind of ['udp-register', 'registrations-per-source', 'connect'] as const) assert.ok(kinds.has(kind), `reported: ${kind} (got ${[...kinds].join(', ')})`);
    assert.ok(events.filter((e) => e.type === 'limited').length <= 20 * 10, 'limited events are themselves rate-limited');
  });

  test('connection requests to one recipient are capped (pending and per second)', async () => {
    const { port, address, events } = await broker({ limits: { connectPerUri: { perSecond: 5, burst: 10 }, maxPendingPerUri: 5 } });
    const { server } = await startRecipient(address, 'nattrav://victim');
    closers.push(() => server.close());
    const started = Date.now();
    let refused = 0;
    const sockets = await Promise.all(Array.from({ length: 60 }, () => tcp(port, ATTACKER)));
    closers.push(() => sockets.forEach((s) => s.destroy()));
    for (const socket of sockets) {
      const decoder = new StunStreamDecoder();
      socket.on('data', (chunk) => {
        for (const m of decoder.push(chunk)) if (getErrorCode(m)?.code === StunErrorCode.TooManyRequests) refused++;
      });
      socket.write(encodeMessage(addUri(StunMessage.request(Method.Connect), 'nattrav://victim')));
    }
    const countAttempts = (): number => events.filter((e) => e.type === 'attempt' && e.uri === 'nattrav://victim').length;
    // Every Connect is either refused (429) or became an attempt: wait for that, not for a timer.
    await until(() => refused + countAttempts() >= sockets.length, 10_000, 'every Connect to be answered or admitted');
    const attempts = countAttempts();
    const seconds = (Date.now() - started) / 1000;
    assert.ok(attempts <= 5, `${attempts} attempts reached the recipient at once (cap 5) in ${seconds} s`);
    assert.ok(refused >= 50, `${refused} refused with 429`);
    assert.ok(events.some((e) => e.type === 'limited' && (e.kind === 'pending-per-uri' || e.kind === 'connect-per-uri') && e.uri === 'nattrav://victim'));
  });

  test('a client that sends 10 bytes and then nothing is closed after the first-message timeout (fake clock)', async () => {
    const clock = new FakeClock();
    const { port, events } = await broker({ clock, limits: { firstMessageTimeoutMs: 300 } });
    const socket = await tcp(port, ATTACKER);
    socket.write(encodeMessage(StunMessage.request(Method.Binding)).subarray(0, 10));
    await brokerCaughtUp(port);
    await clock.advance(250);
    await brokerCaughtUp(port);
    assert.equal(socket.destroyed, false, 'open 250 ms after the accept');
    await clock.advance(150); // past 300 ms by more than one sweep (every 75 ms)
    if (!socket.destroyed) await Promise.race([once(socket, 'close'), pause(3_000).then(() => assert.fail('closed by the broker, yet still open after 3 s'))]);
    assert.ok(events.some((e) => e.type === 'limited' && e.kind === 'first-message-timeout'));
  });

  test('TCP connections are capped per source; others still get answers', async () => {
    const { port, events } = await broker({ limits: { maxConnectionsPerSource: 5 } });
    const sockets = await Promise.all(Array.from({ length: 12 }, () => tcp(port, ATTACKER)));
    closers.push(() => sockets.forEach((s) => s.destroy()));
    await brokerCaughtUp(port);
    const open = sockets.filter((s) => !s.destroyed && s.readyState === 'open' && !s.readableEnded);
    assert.ok(open.length <= 5 + 1, `${open.length} of 12 still open`);
    assert.ok(events.some((e) => e.type === 'limited' && e.kind === 'connections-per-source'));
    const other = await tcp(port, '127.0.0.1');
    closers.push(() => other.destroy());
    other.write(encodeMessage(StunMessage.request(Method.Binding)));
    const decoder = new StunStreamDecoder();
    const [answer] = await new Promise<StunMessage[]>((resolve) => other.on('data', (chunk) => resolve(decoder.push(chunk))));
    assert.equal(answer?.cls, MessageClass.SuccessResponse);
  });

  test('an oversize length in a TCP header closes the connection at once', async () => {
    const { port } = await broker();
    const socket = await tcp(port, ATTACKER);
    const header = Buffer.from(encodeMessage(StunMessage.request(Method.Binding)));
    header.writeUInt16BE(0xfffc, 2);
    socket.write(header);
    await Promise.race([once(socket, 'close'), pause(2_000).then(() => assert.fail('still open'))]);
  });
});
