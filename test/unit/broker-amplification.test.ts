/**
 * Anti-amplification of the broker's UDP answers (src/broker/amplification.ts):
 * for every kind of unauthenticated request it answers, over IPv4 and IPv6, the
 * answer is measured against the request: at most 2.5 times by default (bare
 * Bindings of standard STUN clients get the minimal answer), at most 1 with
 * strictAmplification. Floods from one and from many sources measure the bytes
 * answered beyond the requests against the per-source and broker-wide budgets:
 * on loopback sockets with small configured budgets, and with the default
 * budgets through the guard on an injected clock. Loopback only; sources are
 * 127.0.0.x (all local on Linux) and ::1.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { MAX_AMPLIFICATION, STUN_COMPAT_ANSWER_BYTES } from '../../src/broker/amplification.js';
import { createBroker, type Broker, type BrokerEvent } from '../../src/broker/broker.js';
import { BrokerGuard } from '../../src/broker/guard.js';
import { resolveLimits, type BrokerLimitsOptions } from '../../src/broker/limits.js';
import { answerBinding } from '../../src/broker/rfc5780.js';
import { isNattravError } from '../../src/errors.js';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { encodeChangeRequest } from '../../src/wire/change-request.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri, getErrorCode, getMappedAddress, getOtherAddress, getXorMappedAddress } from '../../src/wire/nattrav.js';
import { encodePadding } from '../../src/wire/padding.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { encodeResponsePort } from '../../src/wire/response-port.js';
import { startBroker } from '../helpers/loopback.js';
import { collect, udpSocket } from '../helpers/udp.js';

/** How long to collect UDP answers after the last request; loopback answers in well under a millisecond. */
const COLLECT_MS = 300;
/** The size of RFC 8489's smallest request, a bare Binding header. */
const BARE_BYTES = 20;

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));


/** A key for Register requests that ask for a nonce (its SubjectPublicKeyInfo, DER). */
const PUBLIC_KEY = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' });

/** One kind of request: its bytes, and whether it is a Binding (only those may get more than they sent). */
interface Kind {
  readonly name: string;
  readonly bytes: Buffer;
  readonly binding: boolean;
}

/** Every kind of unauthenticated request the broker answers over UDP (and a few it must not answer). */
function kinds(clientPort: number): Kind[] {
  const fp = { fingerprint: true };
  const binding = (): StunMessage => StunMessage.request(Method.Binding);
  const kind = (name: string, message: StunMessage, options: { fingerprint?: boolean } = {}): Kind => ({
    name,
    bytes: encodeMessage(message, options),
    binding: message.method === Method.Binding,
  });
  const register = (): StunMessage => addUri(StunMessage.request(Method.Register), 'nattrav://amplify').add(AttrType.PublicKey, PUBLIC_KEY);
  const corrupt = encodeMessage(binding(), fp);
  corrupt[corrupt.length - 1] ^= 0xff;
  return [
    kind('Binding, bare header (turnutils_stunclient, ICE agents)', binding()),
    kind('Binding + FINGERPRINT', binding(), fp),
    kind('Binding + CHANGE-REQUEST port (natdiscovery)', binding().add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: false, changePort: true }))),
    kind('Binding + CHANGE-REQUEST ip+port (natdiscovery)', binding().add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: true, changePort: true }))),
    kind('Binding + CHANGE-REQUEST + FINGERPRINT', binding().add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: false, changePort: true })), fp),
    kind('Binding + CHANGE-REQUEST + RESPONSE-PORT (stunclient)', binding()
      .add(AttrType.ChangeRequest, encodeChangeRequest({ changeIp: false, changePort: false }))
      .add(AttrType.ResponsePort, encodeResponsePort(clientPort))),
    kind('Binding + RESPONSE-PORT', binding().add(AttrType.ResponsePort, encodeResponsePort(clientPort)), fp),
    kind('Binding + PADDING 100', binding().add(AttrType.Padding, encodePadding(100)), fp),
    kind('Binding + PADDING 1500 (stunclient)', binding().add(AttrType.Padding, encodePadding(1500))),
    kind('Binding + PADDING + RESPONSE-PORT (400)', binding().add(AttrType.Padding, encodePadding(8)).add(AttrType.ResponsePort, encodeResponsePort(clientPort))),
    kind('Binding, malformed CHANGE-REQUEST (400)', binding().add(AttrType.ChangeRequest, new Uint8Array(8))),
    kind('Binding + unknown comprehension-required attribute (420)', binding().add(0x4e99, new Uint8Array(4))),
    kind('Binding + REQUEST-PADDING (nattrav clients)', addRequestPadding(binding()), fp),
    kind('Register, no proof of key (401)', addUri(StunMessage.request(Method.Register), 'nattrav://amplify'), fp),
    kind('Register + PUBLIC-KEY, no nonce (401 + nonce)', register(), fp),
    kind('Register + PUBLIC-KEY, no nonce, padded (401 + nonce)', addRequestPadding(register()), fp),
    kind('Register, no URI (400)', StunMessage.request(Method.Register), fp),
    kind('Connect over UDP (400: TCP only)', addUri(StunMessage.request(Method.Connect), 'nattrav://amplify'), fp),
    kind('unknown method (400)', StunMessage.request(0xe0f)),
    { name: 'Binding, corrupt FINGERPRINT (dropped)', bytes: corrupt, binding: true },
    { name: 'Binding success response (not a request)', bytes: encodeMessage(binding().successResponse()), binding: true },
    { name: 'not STUN (dropped)', bytes: Buffer.from('GET / HTTP/1.1\r\n\r\n'), binding: false },
  ];
}

interface Measured {
  readonly kind: Kind;
  readonly answers: Buffer[];
  readonly out: number;
  readonly ratio: number;
}

/** Sends every kind once from a fresh socket on `clientAddress` and measures the bytes answered to each. */
async function measure(brokerAddress: string, port: number, clientAddress: string, closers: Array<() => unknown>): Promise<Measured[]> {
  const client = await udpSocket(clientAddress);
  closers.push(() => client.close());
  const answers = collect(client);
  const sent = kinds(client.address().port).map((kind) => {
    client.send(kind.bytes, port, brokerAddress);
    return { kind, id: kind.bytes.length >= 20 ? kind.bytes.subarray(8, 20).toString('hex') : '' };
  });
  await pause(COLLECT_MS);
  return sent.map(({ kind, id }) => {
    const got = answers.get(id) ?? [];
    const out = got.reduce((sum, b) => sum + b.length, 0);
    return { kind, answers: got, out, ratio: out / kind.bytes.length };
  });
}

const find = (measured: Measured[], prefix: string): Measured => {
  const found = measured.find((m) => m.kind.name.startsWith(prefix));
  assert.ok(found, prefix);
  return found;
};

describe('broker anti-amplification', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  async function broker(options: Parameters<typeof startBroker>[0] = {}): Promise<{ broker: Broker; port: number; events: BrokerEvent[] }> {
    const started = await startBroker(options);
    closers.push(() => started.broker.close());
    const events: BrokerEvent[] = [];
    started.broker.on('event', (e: BrokerEvent) => events.push(e));
    return { broker: started.broker, port: started.broker.address().port, events };
  }

  for (const family of ['IPv4', 'IPv6'] as const) {
    test(`default, ${family}: every unauthenticated answer is at most ${MAX_AMPLIFICATION} x its request; a bare Binding gets the minimal answer`, async (t) => {
      const host = family === 'IPv4' ? '127.0.0.1' : '::1';
      // IPv4 with an alternate address (every RFC 5780 extra in play); loopback has only one IPv6 address.
      const { port } = await broker(family === 'IPv4' ? { host, alternateHost: '127.0.0.2' } : { host });
      const measured = await measure(host, port, host, closers);
      for (const { kind, out, ratio } of measured) {
        t.diagnostic(`${kind.name}: in ${kind.bytes.length} B, out ${out} B, ratio ${ratio.toFixed(2)}`);
        assert.ok(ratio <= MAX_AMPLIFICATION, `${kind.name}: ${out} bytes out for ${kind.bytes.length} in`);
        if (!kind.binding) assert.ok(out <= kind.bytes.length, `${kind.name}: nattrav's methods never get more than they sent (${out} for ${kind.bytes.length})`);
      }
      const worst = Math.max(...measured.map((m) => m.ratio));
      t.diagnostic(`worst-case amplification, ${family}: ${worst.toFixed(2)}`);
      // The broker answers standard STUN clients: the ratio is really used, not just bounded.
      assert.ok(worst >= 2, `worst ratio ${worst}`);

      const bare = find(measured, 'Binding, bare header');
      assert.equal(bare.answers.length, 1, 'a bare Binding is answered');
      const answer = decodeMessage(bare.answers[0] as Buffer);
      assert.equal(answer.cls, MessageClass.SuccessResponse);
      assert.equal(getXorMappedAddress(answer)?.address, host);
      assert.equal(answer.has(AttrType.Software), false, 'no SOFTWARE beyond the request');
      assert.equal(answer.has(AttrType.Fingerprint), false, 'no FINGERPRINT: the request had none');
      if (family === 'IPv6') {
        // 20-byte header + XOR-MAPPED-ADDRESS (4 + 20): nothing else fits in 2.5 x 20.
        assert.equal(bare.out, 44);
        assert.deepEqual(answer.attributes.map((a) => a.type), [AttrType.XorMappedAddress]);
      } else {
        assert.ok(getOtherAddress(answer), 'OTHER-ADDRESS fits over IPv4, so RFC 5780 clients can go on');
      }
      const withFp = find(measured, 'Binding + FINGERPRINT');
      assert.equal(withFp.answers.length, 1);
      const fpAnswer = decodeMessage(withFp.answers[0] as Buffer); // decodeMessage checks the FINGERPRINT's CRC
      assert.ok(fpAnswer.has(AttrType.Fingerprint) && getXorMappedAddress(fpAnswer), 'FINGERPRINT when the request had one');
      assert.equal(fpAnswer.has(AttrType.Software), false);
      // RFC 5780 requests of coturn's natdiscovery (28 bytes, no FINGERPRINT) are answered.
      assert.equal(find(measured, 'Binding + CHANGE-REQUEST port').answers.length, 1);
      // nattrav's own padded Binding still gets the whole answer, SOFTWARE included, and draws nothing.
      const ours = decodeMessage(find(measured, 'Binding + REQUEST-PADDING').answers[0] ?? Buffer.alloc(0));
      assert.ok(getXorMappedAddress(ours) && getMappedAddress(ours) && ours.has(AttrType.Software), 'padded request: the full answer');
      // The 401 with its nonce reaches a nattrav client, whose requests are padded.
      const nonce = decodeMessage(find(measured, 'Register + PUBLIC-KEY, no nonce, padded').answers[0] ?? Buffer.alloc(0));
      assert.equal(getErrorCode(nonce)?.code, 401);
      assert.ok(nonce.has(AttrType.Nonce));
      for (const dropped of ['Binding, corrupt FINGERPRINT', 'Binding success response', 'not STUN']) {
        assert.equal(find(measured, dropped).out, 0, `${dropped}: no answer`);
      }
    });
  }

  test('strictAmplification: no unauthenticated answer is larger than its request; bare Bindings go unanswered', async (t) => {
    const { port, events } = await broker({ alternateHost: '127.0.0.2', strictAmplification: true });
    const measured = await measure('127.0.0.1', port, '127.0.0.1', closers);
    for (const { kind, out, ratio } of measured) {
      t.diagnostic(`${kind.name}: in ${kind.bytes.length} B, out ${out} B, ratio ${ratio.toFixed(2)}`);
      assert.ok(out <= kind.bytes.length, `${kind.name}: ${out} bytes out for ${kind.bytes.length} in`);
    }
    assert.equal(find(measured, 'Binding, bare header').out, 0);
    assert.ok(measured.filter((m) => m.out > 0).length >= 10, 'most kinds are still answered');
    const ours = decodeMessage(find(measured, 'Binding + REQUEST-PADDING').answers[0] ?? Buffer.alloc(0));
    assert.ok(getXorMappedAddress(ours) && getMappedAddress(ours) && getOtherAddress(ours), 'padded request: XOR-MAPPED, MAPPED and OTHER-ADDRESS');
    assert.ok(events.some((e) => e.type === 'limited' && e.kind === 'amplification'), 'the unanswered bare Binding was reported');
  });

  test(`stunCompat: a bare Binding gets the full RFC 5780 answer, at most ${STUN_COMPAT_ANSWER_BYTES} bytes`, async (t) => {
    const { port } = await broker({ alternateHost: '127.0.0.2', stunCompat: true });
    const measured = await measure('127.0.0.1', port, '127.0.0.1', closers);
    for (const { kind, out } of measured) {
      const cap = kind.binding ? Math.max(STUN_COMPAT_ANSWER_BYTES, MAX_AMPLIFICATION * kind.bytes.length) : kind.bytes.length;
      assert.ok(out <= cap, `${kind.name}: ${out} bytes out for ${kind.bytes.length} in`);
    }
    const bare = find(measured, 'Binding, bare header');
    t.diagnostic(`bare Binding: ${bare.out} B, ratio ${bare.ratio.toFixed(2)}`);
    const answer = decodeMessage(bare.answers[0] ?? Buffer.alloc(0));
    assert.ok(getXorMappedAddress(answer) && getMappedAddress(answer) && getOtherAddress(answer), 'what coturn\'s natdiscovery prints against coturn\'s server');
    assert.equal(answer.has(AttrType.Software), false);
  });

  /**
   * Floods bare Bindings from `sources` for `durationMs`, then returns the bytes
   * answered beyond the requests (in total and per source) and the seconds over
   * which the broker could have refilled its budgets.
   */
  async function flood(port: number, sources: string[], perTick: number, durationMs: number): Promise<{ excess: number; bySource: Map<string, number>; seconds: number; answers: number }> {
    const sockets = await Promise.all(sources.map((s) => udpSocket(s)));
    closers.push(() => sockets.forEach((s) => s.close()));
    const bySource = new Map<string, number>();
    let answers = 0;
    for (const [i, socket] of sockets.entries()) {
      socket.on('message', (data: Buffer) => {
        answers++;
        bySource.set(sources[i] as string, (bySource.get(sources[i] as string) ?? 0) + Math.max(0, data.length - BARE_BYTES));
      });
    }
    const bare = encodeMessage(StunMessage.request(Method.Binding));
    const started = Date.now();
    while (Date.now() - started < durationMs) {
      for (const socket of sockets) for (let i = 0; i < perTick; i++) socket.send(bare, port, '127.0.0.1');
      await pause(5);
    }
    await pause(COLLECT_MS);
    const seconds = (Date.now() - started) / 1000;
    const excess = [...bySource.values()].reduce((a, b) => a + b, 0);
    return { excess, bySource, seconds, answers };
  }

  test('a flood of bare Bindings from one source: bytes beyond the requests stay within the per-source budget', async (t) => {
    const perSource = { perSecond: 2_000, burst: 2_000 };
    const { port, events } = await broker({ limits: { amplificationAllowancePerSource: perSource } });
    const { excess, seconds, answers } = await flood(port, ['127.0.0.3'], 20, 1_000);
    const cap = perSource.burst + perSource.perSecond * seconds;
    t.diagnostic(`one source: ${answers} answers, ${excess} B beyond the requests in ${seconds.toFixed(2)} s (${(excess / seconds).toFixed(0)} B/s; cap ${cap.toFixed(0)} B)`);
    assert.ok(excess <= cap, `${excess} bytes beyond the requests, cap ${cap}`);
    assert.ok(excess >= perSource.burst - 2 * 44, `the flood used the budget up (${excess} B)`);
    assert.ok(events.some((e) => e.type === 'limited' && e.kind === 'amplification' && e.source === '127.0.0.3'), 'reported');
  });

  test('a flood of bare Bindings from 40 sources: bytes beyond the requests stay within the broker-wide budget', async (t) => {
    const total = { perSecond: 8_192, burst: 8_192 };
    const { port } = await broker({ limits: { amplificationAllowance: total } });
    const sources = Array.from({ length: 40 }, (_, i) => `127.0.0.${10 + i}`);
    const { excess, bySource, seconds, answers } = await flood(port, sources, 2, 1_000);
    const cap = total.burst + total.perSecond * seconds;
    t.diagnostic(`40 sources: ${answers} answers, ${excess} B beyond the requests in ${seconds.toFixed(2)} s (${(excess / seconds).toFixed(0)} B/s; cap ${cap.toFixed(0)} B)`);
    assert.ok(excess <= cap, `${excess} bytes beyond the requests, cap ${cap}`);
    assert.ok(excess >= total.burst - 2 * 44, `the flood used the budget up (${excess} B)`);
    assert.ok(bySource.size >= 20, `answers went to many sources (${bySource.size})`);
  });

  /**
   * Drives the guard with the default limits on an injected clock: `perStep`
   * bare-Binding answers every 10 ms for `seconds`, from `source(i)` for the
   * i-th request. Returns the bytes granted beyond the requests and the largest ratio.
   */
  function simulate(seconds: number, perStep: number, source: (i: number) => string, limits: BrokerLimitsOptions = {}): { excess: number; worst: number; answered: number } {
    let now = 1_000_000;
    const guard = new BrokerGuard(resolveLimits(limits), () => undefined, { now: () => now });
    const layout = { host: '192.0.2.1', port: 3478, alternatePort: 3479, alternateHost: '192.0.2.2' };
    const options = { software: 'nattrav broker', fingerprint: true };
    let excess = 0;
    let worst = 0;
    let answered = 0;
    for (let step = 0, i = 0; step < seconds * 100; step++, now += 10) {
      for (let k = 0; k < perStep; k++, i++) {
        const from = source(i);
        const request = StunMessage.request(Method.Binding);
        const { response } = answerBinding(request, { alternateIp: false, alternatePort: false }, { address: from, port: 40_000, family: from.includes(':') ? 'IPv6' : 'IPv4' }, layout);
        const bytes = guard.fitUdp(response, options, { bytes: BARE_BYTES, fingerprint: false }, from);
        if (bytes === undefined) continue;
        answered++;
        excess += bytes.length - BARE_BYTES;
        worst = Math.max(worst, bytes.length / BARE_BYTES);
      }
    }
    return { excess, worst, answered };
  }

  test('default budgets on an injected clock: one source gets at most 4 KiB/s beyond its requests (after 16 KiB)', (t) => {
    const { amplificationAllowancePerSource: spec } = resolveLimits();
    const seconds = 10;
    const { excess, worst, answered } = simulate(seconds, 20, () => '198.51.100.7');
    const cap = spec.burst + spec.perSecond * seconds;
    // The last request comes 10 ms before the end; the budget is granted in whole answers (24 bytes beyond each).
    const floor = spec.burst + spec.perSecond * (seconds - 0.01) - 24;
    t.diagnostic(`one source, 2,000 bare Bindings/s for ${seconds} s: ${answered} answered, ${excess} B beyond the requests (cap ${cap} B), worst ratio ${worst.toFixed(2)}`);
    assert.equal(spec.perSecond, 4_096, 'the documented per-source budget');
    assert.equal(spec.burst, 16_384);
    assert.ok(excess <= cap && excess >= floor, `${excess} B beyond the requests, expected ${floor}..${cap}`);
    assert.ok(worst <= MAX_AMPLIFICATION);
  });

  test('default budgets on an injected clock: the whole broker gives at most 256 KiB/s beyond the requests (after 256 KiB)', (t) => {
    const { amplificationAllowance: spec } = resolveLimits();
    const seconds = 5;
    // 30,000 bare Bindings a second from 5,000 IPv6 sources, each its own /64 (the broker counts a /64
    // as one source: source-key.ts), 6 a second each: no per-source budget bites.
    const { excess, worst, answered } = simulate(seconds, 300, (i) => `2001:db8:${(i % 5_000).toString(16)}::1`);
    const cap = spec.burst + spec.perSecond * seconds;
    const floor = spec.burst + spec.perSecond * (seconds - 0.01) - 24;
    t.diagnostic(`5,000 sources, 30,000 bare Bindings/s for ${seconds} s: ${answered} answered (${(answered / seconds).toFixed(0)}/s), ${excess} B beyond the requests (cap ${cap} B), worst ratio ${worst.toFixed(2)}`);
    assert.equal(spec.perSecond, 262_144, 'the documented broker-wide budget');
    assert.equal(spec.burst, 262_144);
    assert.ok(excess <= cap && excess >= floor, `${excess} B beyond the requests, expected ${floor}..${cap}`);
    assert.equal(worst, 44 / 20, 'an IPv6 bare Binding: 44 bytes');
    // Below the budget every standard client is answered: 10,000 a second from 5,000 sources.
    const light = simulate(seconds, 100, (i) => `2001:db8:${(i % 5_000).toString(16)}::1`);
    assert.equal(light.answered, seconds * 100 * 100);
  });

  test('options: strictAmplification and stunCompat are checked, and exclusive', () => {
    const invalid = (options: Parameters<typeof createBroker>[0], pattern: RegExp): void => {
      assert.throws(() => createBroker(options), (err: unknown) => isNattravError(err) && err.code === 'ERR_INVALID_ARGUMENT' && pattern.test(err.message));
    };
    invalid({ strictAmplification: true, stunCompat: true }, /strictAmplification and stunCompat contradict each other.*pass one of them/);
    invalid({ strictAmplification: 'yes' as unknown as boolean }, /strictAmplification must be true or false, got "yes"/);
    invalid({ stunCompat: 1 as unknown as boolean }, /stunCompat must be true or false, got 1/);
  });

  test('CLI: broker --strict-amplification --stun-compat exits 2 and names both options', async () => {
    const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '127.0.0.1:0', '--strict-amplification', '--stun-compat'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = new CliProcess(child);
    closers.push(() => child.exitCode === null && child.kill('SIGKILL'));
    assert.equal(await proc.exited, 2);
    assert.match(proc.stderr, /strictAmplification and stunCompat/);
  });
});
