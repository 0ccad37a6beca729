/**
 * The used-nonce record cannot be filled by an attacker: it is written only after a
 * valid signature and bounded per source address; the nonce window is exact (a proof
 * at +30,000 ms is stale); a peer whose nonce went stale proves once more with the
 * fresh nonce of the 438 answer, and a second refusal surfaces. The broker's side runs
 * as `handleRegister` on a fake clock (no sockets, no sleeps) except for the last test,
 * which floods a real broker on loopback while a real recipient registers.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { handleRegister, type RegisterAuth } from '../../src/broker/register.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { SessionTable } from '../../src/broker/sessions.js';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { registerWithProof } from '../../src/peer/register-proof.js';
import { generateKeyPair, sign, type KeyPairPem } from '../../src/security/keys.js';
import { NONCE_LIFETIME_MS, NonceBook, newEphemeralKey, registrationPayload } from '../../src/security/proof.js';
import { decodeMessage, encodeMessage, type EncodeOptions } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method, StunErrorCode } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { startBroker, startRecipient } from '../helpers/loopback.js';
import { proof, register, LIFETIME_MS } from '../helpers/register-messages.js';
import { udpSocket } from '../helpers/udp.js';


/** A broker's registration handling on a fake clock, answering in memory. */
function fakeBroker(nonces: { maxUsed?: number; maxUsedPerSource?: number } = {}): {
  clock: { now: number };
  auth: RegisterAuth;
  registry: MemoryRegistry;
  send(request: StunMessage, from: TransportAddress, options?: EncodeOptions): Promise<StunMessage>;
} {
  const clock = { now: 1_800_000_000_000 };
  const now = (): number => clock.now;
  const auth: RegisterAuth = { mode: 'authenticated', nonces: new NonceBook({ now, ...nonces }), sessions: new SessionTable(10_000, now) };
  const registry = new MemoryRegistry({ sweepIntervalMs: 0 });
  const send = async (request: StunMessage, from: TransportAddress, options: EncodeOptions = {}): Promise<StunMessage> => {
    // Through the codec both ways, as on the wire.
    const decoded = decodeMessage(encodeMessage(request, { fingerprint: true, ...options }));
    let answer: StunMessage | undefined;
    await handleRegister(
      { registry, maxLifetimeMs: 120_000, auth, now, reply: (response, replyOptions) => (answer = decodeMessage(encodeMessage(response, { fingerprint: true, ...replyOptions }))), onRegistered: () => undefined },
      decoded,
      from,
      'udp',
    );
    assert.ok(answer, 'handleRegister always answers');
    return answer;
  };
  return { clock, auth, registry, send };
}

const source = (i: number): TransportAddress => ({ family: 'IPv4', address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 40_000 + (i % 1000) });

const code = (message: StunMessage): number | undefined => (message.cls === MessageClass.ErrorResponse ? getErrorCode(message)?.code : undefined);

describe('registration nonces', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-nonces-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  test('the window is exact: a proof at +29,999 ms is accepted, the same proof at +30,000 ms is stale', async () => {
    const broker = fakeBroker();
    const key = generateKeyPair();
    const peer = source(1);
    const challenge = await broker.send(register('nattrav://boundary', key), peer);
    const nonce = challenge.get(AttrType.Nonce) as Uint8Array;
    const captured = proof('nattrav://boundary', key, nonce);
    broker.clock.now += NONCE_LIFETIME_MS;
    const late = await broker.send(captured, peer);
    assert.equal(code(late), StunErrorCode.StaleNonce, `exactly +${NONCE_LIFETIME_MS} ms: stale`);
    assert.ok(late.get(AttrType.Nonce), 'the 438 answer carries a fresh nonce');
    assert.equal(await broker.registry.get('nattrav://boundary'), undefined);
    broker.clock.now -= 1;
    assert.equal((await broker.send(captured, peer)).cls, MessageClass.SuccessResponse, '+29,999 ms: still fresh');
    assert.equal(code(await broker.send(captured, peer)), StunErrorCode.Forbidden, 'and only once');
  });

  test('garbage-signature proofs from one and from many sources record nothing; a legitimate peer still registers', async () => {
    // A table of 64: the old broker recorded the nonce before the signature, so 64 garbage proofs filled it.
    const broker = fakeBroker({ maxUsed: 64, maxUsedPerSource: 16 });
    const attackerKey = generateKeyPair();
    let forbidden = 0;
    for (let i = 0; i < 600; i++) {
      // 300 proofs from one address (different ports and URIs), 300 from 300 addresses.
      const from = i < 300 ? { family: 'IPv4' as const, address: '10.66.0.1', port: 1_000 + i } : source(10_000 + i);
      const uri = `nattrav://flood/${i}`;
      const nonce = (await broker.send(register(uri, attackerKey), from)).get(AttrType.Nonce) as Uint8Array;
      if (code(await broker.send(proof(uri, attackerKey, nonce, true), from)) === StunErrorCode.Forbidden) forbidden++;
    }
    assert.equal(forbidden, 600, 'every garbage proof is refused');
    assert.equal(broker.auth.nonces.used, 0, 'and none of them was recorded');
    const key = generateKeyPair();
    const peer = source(2);
    const nonce = (await broker.send(register('nattrav://legit', key), peer)).get(AttrType.Nonce) as Uint8Array;
    assert.equal((await broker.send(proof('nattrav://legit', key, nonce), peer)).cls, MessageClass.SuccessResponse);
    assert.equal(broker.auth.nonces.used, 1);
  });

  test('valid proofs are recorded at most maxUsedPerSource per address; other addresses are not affected', async () => {
    const broker = fakeBroker({ maxUsed: 64, maxUsedPerSource: 4 });
    const key = generateKeyPair();
    const flooder = (i: number): TransportAddress => ({ family: 'IPv4', address: '10.66.0.2', port: 2_000 + i });
    const verdicts: Array<number | undefined> = [];
    for (let i = 0; i < 6; i++) {
      const uri = `nattrav://busy/${i}`;
      const nonce = (await broker.send(register(uri, key), flooder(i))).get(AttrType.Nonce) as Uint8Array;
      verdicts.push(code(await broker.send(proof(uri, key, nonce), flooder(i))));
    }
    assert.deepEqual(verdicts, [undefined, undefined, undefined, undefined, StunErrorCode.StaleNonce, StunErrorCode.StaleNonce]);
    assert.equal(broker.auth.nonces.used, 4);
    const nonce = (await broker.send(register('nattrav://other', key), source(3))).get(AttrType.Nonce) as Uint8Array;
    assert.equal((await broker.send(proof('nattrav://other', key, nonce), source(3))).cls, MessageClass.SuccessResponse);
    // A nonce lifetime later the flooding address has its share back.
    broker.clock.now += NONCE_LIFETIME_MS + 1;
    const again = (await broker.send(register('nattrav://busy/9', key), flooder(9))).get(AttrType.Nonce) as Uint8Array;
    assert.equal((await broker.send(proof('nattrav://busy/9', key, again), flooder(9))).cls, MessageClass.SuccessResponse);
  });

  test('a peer whose nonce went stale proves once more with the fresh one; a second stale answer surfaces', async () => {
    const key = generateKeyPair();
    const base = (): StunMessage => {
      const request = StunMessage.request(Method.Register);
      addUri(request, 'nattrav://patient');
      addU32(request, AttrType.Lifetime, LIFETIME_MS);
      return request;
    };
    for (const staleProofs of [1, 2]) {
      const broker = fakeBroker();
      const peer = source(4);
      let proofs = 0;
      const transact = async (request: StunMessage, options?: EncodeOptions): Promise<StunMessage> => {
        if (request.has(AttrType.Signature) && ++proofs <= staleProofs) broker.clock.now += NONCE_LIFETIME_MS; // the path is that slow
        return broker.send(request, peer, options);
      };
      const run = registerWithProof(transact, base, { key }, 'nattrav://patient', LIFETIME_MS, 'udp', undefined);
      if (staleProofs === 1) {
        const { response, session } = await run;
        assert.equal(response.cls, MessageClass.SuccessResponse);
        assert.ok(session, 'a session from the second proof');
        assert.equal(proofs, 2);
      } else {
        await assert.rejects(run, (err: unknown) => err instanceof NattravError && err.code === ErrorCode.BrokerError && /438/.test(err.message));
        assert.equal(proofs, 2, 'exactly one retry');
      }
    }
  });

  test('on loopback: garbage proofs from eight addresses while a recipient registers', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const port = broker.address().port;
    const attackerKey = generateKeyPair();
    let stop = false;
    const flood = async (host: string): Promise<number> => {
      const socket = await udpSocket(host);
      closers.push(() => socket.close());
      let sent = 0;
      const uris = new Map<string, string>();
      socket.on('message', (data: Buffer) => {
        const challenge = decodeMessage(data);
        const nonce = challenge.get(AttrType.Nonce);
        const uri = uris.get(Buffer.from(challenge.transactionId).toString('hex'));
        if (nonce === undefined || uri === undefined) return;
        // A valid nonce for this source, URI and key, with a garbage signature.
        socket.send(encodeMessage(addRequestPadding(proof(uri, attackerKey, nonce, true))), port, '127.0.0.1');
        sent++;
      });
      for (let i = 0; !stop && i < 150; i++) {
        const request = addRequestPadding(register(`nattrav://garbage/${host}/${i}`, attackerKey));
        uris.set(Buffer.from(request.transactionId).toString('hex'), `nattrav://garbage/${host}/${i}`);
        socket.send(encodeMessage(request), port, '127.0.0.1');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      return sent;
    };
    const flooding = Promise.all(Array.from({ length: 8 }, (_, i) => flood(`127.0.0.${20 + i}`)));
    const { server } = await startRecipient(address, 'nattrav://during-flood', { keyDir: join(keyDir, 'recipient') });
    closers.push(() => server.close());
    stop = true;
    const sent = (await flooding).reduce((a, b) => a + b, 0);
    assert.ok(sent > 0, 'garbage proofs were sent');
    assert.ok(await broker.registry.get('nattrav://during-flood'), 'the recipient registered during the flood');
  });
});
