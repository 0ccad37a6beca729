/**
 * Several attacks of issue 8 at once against one broker with default options, on
 * loopback, while legitimate peers register and connect (each attack also has its own
 * test: attempt-binding, registration-nonces, broker-tcp, recipient-caps, ...):
 * - a bystander who sees every attempt ID (here: from the broker's 'attempt' events,
 *   standing in for a sniffer of the ConnectionRequests) races each Join and asks to
 *   relay each attempt, without the session key or the attempt secret;
 * - garbage-signature proofs from four addresses (the used-nonce table);
 * - slowloris: more connections from one address than its accept rate and cap allow, each
 *   trickling a message that never ends;
 * - rogue initiators flooding a decoy recipient with Connects they never follow up.
 * The legitimate side: a recipient registered before, one registering during the
 * attack, and an initiator whose connections all reach the real recipient (TLS against
 * its key) and carry their bytes.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import { StunChannel } from '../../src/common/stun-channel.js';
import { connect } from '../../src/peer/connect.js';
import { generateKeyPair } from '../../src/security/keys.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addRole, addUri } from '../../src/wire/nattrav.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import { startRecipient, startWatchedBroker, tcpFrom } from '../helpers/loopback.js';
import { proof, register } from '../helpers/register-messages.js';
import { udpSocket } from '../helpers/udp.js';

/** How long the attacks run at least (the slowloris clients' first-message deadline is 5 s). */
const ATTACK_MS = 6_000;
/** Slow clients from one address: more than its cap of 512 connections. */
const SLOW_CLIENTS = 540;

describe('attacks at once against a default broker', () => {
  const closers: Array<() => unknown> = [];
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-soak-'));
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await rm(keyDir, { recursive: true, force: true });
  });

  test('hijack, nonce flood, slowloris and a Connect flood fail for the attacker; legitimate peers register and connect throughout', { timeout: 120_000 }, async (t) => {
    const { broker, address, port, events } = await startWatchedBroker(closers);
    const victim = await startRecipient(address, 'nattrav://victim', { keyDir: join(keyDir, 'victim') });
    closers.push(() => victim.server.close());
    victim.server.on('connection', (socket: Socket) => socket.pipe(socket));
    const decoy = await startRecipient(address, 'nattrav://decoy', { keyDir: join(keyDir, 'decoy') });
    closers.push(() => decoy.server.close());
    let stop = false;
    const started = Date.now();
    const attacking = (): boolean => !stop && Date.now() - started < 30_000;

    // The bystander: every attempt ID it sees, it tries to join and to relay, from its own address.
    const bystander = { tries: 0, admitted: 0 };
    const raced: Array<Promise<void>> = [];
    broker.on('event', (event: BrokerEvent) => {
      if (event.type !== 'attempt' || event.uri !== 'nattrav://victim') return;
      const id = Buffer.from(event.attemptId, 'hex');
      const join = addAttemptId(StunMessage.request(Method.Join), id);
      const relay = addRole(addAttemptId(StunMessage.request(Method.Relay), id), 'recipient');
      for (const request of [join, relay]) raced.push(ask(port, '127.0.0.50', request).then((answer) => {
        bystander.tries++;
        if (answer?.cls === MessageClass.SuccessResponse) bystander.admitted++;
      }));
    });

    // Garbage-signature proofs: valid nonces for their sources, signatures that do not verify.
    const garbage = { sent: 0, accepted: 0 };
    const garbageFrom = async (host: string): Promise<void> => {
      const socket = await udpSocket(host);
      closers.push(() => socket.close());
      const key = generateKeyPair();
      const uris = new Map<string, string>();
      socket.on('message', (data: Buffer) => {
        const answer = decodeMessage(data);
        if (answer.cls === MessageClass.SuccessResponse) garbage.accepted++;
        const nonce = answer.get(AttrType.Nonce);
        const uri = uris.get(Buffer.from(answer.transactionId).toString('hex'));
        if (nonce === undefined || uri === undefined) return;
        socket.send(encodeMessage(addRequestPadding(proof(uri, key, nonce, true))), port, '127.0.0.1');
        garbage.sent++;
      });
      for (let i = 0; attacking() && i < 400; i++) {
        const request = addRequestPadding(register(`nattrav://garbage/${host}/${i}`, key));
        uris.set(Buffer.from(request.transactionId).toString('hex'), `nattrav://garbage/${host}/${i}`);
        socket.send(encodeMessage(request), port, '127.0.0.1');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };

    // Slowloris: SLOW_CLIENTS connections from one address, one byte of a 1 KiB message every 200 ms.
    const slow: Socket[] = [];
    closers.push(() => slow.forEach((s) => s.destroy()));
    const slowloris = async (): Promise<void> => {
      for (let i = 0; i < SLOW_CLIENTS && attacking(); i++) slow.push(tcpFrom(port, '127.0.0.40'));
      const message = encodeMessage(StunMessage.request(Method.Binding).add(AttrType.Padding, new Uint8Array(1_000)));
      for (let offset = 0; attacking() && slow.some((s) => !s.destroyed); offset++) {
        for (const socket of slow) if (!socket.destroyed && socket.writable) socket.write(message.subarray(offset, offset + 1));
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    };

    // Rogue initiators: Connects for the decoy that never answer the broker's probe.
    const rogue = { sent: 0 };
    const connectFlood = async (): Promise<void> => {
      for (let i = 0; attacking() && i < 200; i++) {
        const socket = tcpFrom(port, '127.0.0.60');
        closers.push(() => socket.destroy());
        socket.once('connect', () => socket.write(encodeMessage(addUri(StunMessage.request(Method.Connect), 'nattrav://decoy'), { fingerprint: true })));
        rogue.sent++;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };

    const attacks = Promise.all([...['127.0.0.21', '127.0.0.22', '127.0.0.23', '127.0.0.24'].map(garbageFrom), slowloris(), connectFlood()]);

    // The legitimate side, during the attack.
    const legit = { connects: 0, paths: new Set<string>() };
    const newcomer = await startRecipient(address, 'nattrav://newcomer', { keyDir: join(keyDir, 'newcomer') });
    closers.push(() => newcomer.server.close());
    while (Date.now() - started < ATTACK_MS || legit.connects < 5) {
      const socket = await connect({ broker: address, uri: 'nattrav://victim', knownKeysFile: join(keyDir, 'known_keys'), timeoutMs: 15_000 });
      assert.ok(socket.nattrav.tls, 'end-to-end authenticated');
      const payload = `hello ${legit.connects}`;
      socket.end(payload);
      let echoed = '';
      for await (const chunk of socket) echoed += String(chunk);
      assert.equal(echoed, payload, 'the bytes went to the real recipient and back');
      legit.connects++;
      legit.paths.add(socket.nattrav.path);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const toNewcomer = await connect({ broker: address, uri: 'nattrav://newcomer', knownKeysFile: join(keyDir, 'known_keys'), timeoutMs: 15_000 });
    toNewcomer.destroy();
    stop = true;
    await attacks;
    await Promise.all(raced);

    const limited = new Set(events.flatMap((e) => (e.type === 'limited' ? [e.kind] : [])));
    t.diagnostic(
      `${legit.connects} legitimate connections (${[...legit.paths].join(', ')}) in ${Date.now() - started} ms; bystander: ${bystander.tries} Join/Relay tries; ` +
        `${garbage.sent} garbage proofs; ${slow.length} slow clients (${slow.filter((s) => s.destroyed).length} closed); ${rogue.sent} rogue Connects; limited: ${[...limited].join(', ')}`,
    );
    assert.ok(legit.connects >= 5);
    assert.ok(bystander.tries >= 2 * legit.connects, `the bystander raced every attempt (${bystander.tries} tries)`);
    assert.equal(bystander.admitted, 0, 'no Join or Relay of the bystander was admitted');
    assert.equal(victim.accepted.length, legit.connects, 'the victim got exactly the legitimate connections');
    assert.ok(garbage.sent > 0 && garbage.accepted === 0, `${garbage.sent} garbage proofs, none accepted`);
    for (let i = 0; i < 4; i++) assert.equal(await broker.registry.get(`nattrav://garbage/127.0.0.2${i + 1}/0`), undefined);
    assert.ok(limited.has('tcp-accept') || limited.has('connections-per-source'), 'slow clients over the per-source accept rate or cap were refused');
    // Which deadline closes a slow client depends on whether its first byte came before its first-message deadline (load decides).
    assert.ok(limited.has('first-message-timeout') || limited.has('message-timeout'), `slow clients were closed at a message deadline (limited: ${[...limited].join(', ')})`);
    assert.ok(rogue.sent > 0);
  });
});

/** Sends `request` on a fresh TCP connection from `localAddress`; resolves with the answer, or undefined when the broker closed first. */
async function ask(port: number, localAddress: string, request: StunMessage): Promise<StunMessage | undefined> {
  const socket = tcpFrom(port, localAddress);
  try {
    await once(socket, 'connect');
    const channel = new StunChannel(socket, () => undefined);
    return await channel.request(request, AbortSignal.timeout(10_000), { fingerprint: true }).catch(() => undefined);
  } catch {
    return undefined;
  } finally {
    socket.destroy();
  }
}
