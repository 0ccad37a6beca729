/**
 * Dual-stack recipients on loopback (127.0.0.1 and ::1): a recipient registered over IPv4
 * also registers its IPv6 family under the same session and instance at the broker's
 * announced IPv6 address (OTHER-FAMILY-BROKER); a Connect arriving over IPv6 is run over
 * IPv6 (the recipient joins there), one over IPv4 over IPv4; a FAMILY-ONLY Connect in a
 * family the recipient has not registered fails at once (476). Skipped, with the reason,
 * on a host without ::1.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { once } from 'node:events';
import type { BrokerEvent } from '../../src/broker/events.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import type { SecondFamilyRegistered } from '../../src/peer/second-family.js';
import type { NattravServer } from '../../src/peer/server.js';
import { isNattravError } from '../../src/errors.js';
import { startRecipient, startWatchedBroker, until } from '../helpers/loopback.js';
import { noIPv6Loopback } from '../helpers/udp.js';

const skip = await noIPv6Loopback();

/** Sends `bytes` through `socket` to an echoing recipient; resolves with the SHA-256 of what came back. */
async function echoHash(socket: NattravSocket, bytes: Buffer): Promise<string> {
  const hash = createHash('sha256');
  socket.on('data', (chunk: Buffer) => hash.update(chunk));
  const ended = once(socket, 'end');
  socket.end(bytes);
  await ended;
  return hash.digest('hex');
}

describe('dual-stack recipients', { skip }, () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  /** A broker on [::] (both families) announcing 127.0.0.1 and ::1, and an echoing recipient registered over `first`. */
  async function dualStack(uri: string, first: '127.0.0.1' | '[::1]'): Promise<{ port: number; registry: MemoryRegistry; events: BrokerEvent[]; server: NattravServer; second: SecondFamilyRegistered }> {
    const registry = new MemoryRegistry();
    const { port, events } = await startWatchedBroker(closers, { host: '::', registry, announce: ['127.0.0.1', '::1'] });
    const { server } = await startRecipient(`${first}:${port}`, uri);
    closers.push(() => server.close());
    server.on('connection', (socket: NattravSocket) => socket.pipe(socket));
    const [second] = (await once(server, 'secondFamilyRegistered')) as [SecondFamilyRegistered];
    return { port, registry, events, server, second };
  }

  test('a recipient registered over IPv4 registers its IPv6 family too, under the same session: the broker keeps both', async () => {
    const { port, registry, events, second } = await dualStack('nattrav://dual-both', '127.0.0.1');
    assert.deepEqual(second.broker, { family: 'IPv6', address: '::1', port });
    assert.equal(second.publicEndpoint.family, 'IPv6');
    const stored = await registry.get('nattrav://dual-both');
    assert.ok(stored !== undefined);
    assert.equal(stored.publicEndpoint.family, 'IPv4');
    assert.equal(stored.secondFamily?.publicEndpoint.family, 'IPv6');
    assert.deepEqual(stored.secondFamily?.publicEndpoint, second.publicEndpoint);
    assert.ok(stored.secondFamily.privateEndpoints.every((e) => e.family === 'IPv6'));
    const registered = events.filter((e) => e.type === 'registered' && e.uri === 'nattrav://dual-both');
    assert.equal(registered.filter((e) => e.type === 'registered' && e.secondFamily === true).length >= 1, true, 'the second family was logged as such');
    assert.equal(events.some((e) => e.type === 'warning' && /instance/.test(e.message)), false, 'no instance conflict between the two families');
  });

  test('a Connect over IPv6 runs over IPv6 (the recipient joins there); one over IPv4 over IPv4; neither goes to the relay', async () => {
    const { port } = await dualStack('nattrav://dual-path', '127.0.0.1');
    for (const [host, family] of [['[::1]', 'IPv6'], ['127.0.0.1', 'IPv4']] as const) {
      const socket = await connect({ broker: `${host}:${port}`, uri: 'nattrav://dual-path', signal: AbortSignal.timeout(10_000), knownKeysFile: false });
      closers.push(() => socket.destroy());
      assert.notEqual(socket.nattrav.path, 'relay', `over ${family}: ${socket.nattrav.path}`);
      assert.equal(socket.nattrav.remote.family, family);
      assert.equal(socket.nattrav.publicEndpoint.family, family);
      const bytes = randomBytes(64 * 1024);
      assert.equal(await echoHash(socket, bytes), createHash('sha256').update(bytes).digest('hex'));
    }
  });

  test('an initiator given both broker addresses races the families: IPv6 wins when both work; family 4 forces IPv4', async () => {
    const { port } = await dualStack('nattrav://dual-race', '127.0.0.1');
    const brokers = [`127.0.0.1:${port}`, `[::1]:${port}`];
    // IPv4 would start 2 s in: a working IPv6 wins however busy the machine (at 50 ms either may).
    const traced: Array<4 | 6 | undefined> = [];
    const raced = await connect({ broker: brokers, uri: 'nattrav://dual-race', familyDelayMs: 2_000, signal: AbortSignal.timeout(10_000), knownKeysFile: false, onTrace: (e) => traced.push(e.family) });
    closers.push(() => raced.destroy());
    assert.equal(raced.nattrav.family, 6);
    assert.ok(traced.length > 0 && traced.every((f) => f === 6), `each strategy traced with its family: ${traced.join(',')}`);
    assert.notEqual(raced.nattrav.path, 'relay');
    const forced = await connect({ broker: brokers, uri: 'nattrav://dual-race', family: 4, signal: AbortSignal.timeout(10_000), knownKeysFile: false });
    closers.push(() => forced.destroy());
    assert.equal(forced.nattrav.family, 4);
    assert.equal(forced.nattrav.remote.family, 'IPv4');
    const bytes = randomBytes(16 * 1024);
    assert.equal(await echoHash(raced, bytes), createHash('sha256').update(bytes).digest('hex'));
  });

  test('the recipient not registered over IPv6: the IPv6 attempt fails at once and IPv4 starts without waiting for the delay', async () => {
    const { port } = await startWatchedBroker(closers, { host: '::', announce: ['127.0.0.1', '::1'] });
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://v6-blocked', { dualStack: false });
    closers.push(() => server.close());
    const started = performance.now();
    const socket = await connect({ broker: [`127.0.0.1:${port}`, `[::1]:${port}`], uri: 'nattrav://v6-blocked', familyDelayMs: 20_000, signal: AbortSignal.timeout(15_000), knownKeysFile: false });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.family, 4);
    assert.notEqual(socket.nattrav.path, 'relay');
    assert.ok(performance.now() - started < 10_000, 'IPv4 did not wait out the 20 s delay');
  });

  test('the broker\'s IPv6 address unreachable: IPv4 at once; both families failing names both', async () => {
    const { port } = await startWatchedBroker(closers, { host: '127.0.0.1' });
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://v4-broker');
    closers.push(() => server.close());
    const socket = await connect({ broker: [`127.0.0.1:${port}`, `[::1]:${port}`], uri: 'nattrav://v4-broker', familyDelayMs: 20_000, signal: AbortSignal.timeout(15_000), knownKeysFile: false });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.family, 4);
    await assert.rejects(
      connect({ broker: [`127.0.0.1:${port}`, `[::1]:${port}`], uri: 'nattrav://nobody', familyDelayMs: 20_000, signal: AbortSignal.timeout(15_000), knownKeysFile: false }),
      (err: unknown) => isNattravError(err, 'ERR_UNKNOWN_URI') && /over IPv6: .*; over IPv4: .*nobody/.test(err.message),
    );
  });

  test('racing both at once, the loser is aborted or closed: no socket is left once the winner closes', async () => {
    const { port, server } = await dualStack('nattrav://dual-loser', '127.0.0.1');
    const accepted: NattravSocket[] = [];
    server.on('connection', (socket: NattravSocket) => accepted.push(socket));
    const sockets = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
    const baseline = sockets();
    const winner = await connect({ broker: [`127.0.0.1:${port}`, `[::1]:${port}`], uri: 'nattrav://dual-loser', familyDelayMs: 0, signal: AbortSignal.timeout(10_000), knownKeysFile: false });
    await until(() => accepted.filter((s) => !s.destroyed).length <= 1, 5_000, 'the loser\'s connection closed at the recipient');
    winner.destroy();
    await until(() => sockets() <= baseline, 5_000, `every TCP socket closed (baseline ${baseline}, now ${sockets()})`);
  });

  test('an IPv6 registration that gets no answer never delays the IPv4 one, and is retried with backoff', async () => {
    // The broker announces ::1 but listens on 127.0.0.1 only: our IPv6 refreshes go nowhere.
    const registry = new MemoryRegistry();
    const { port } = await startWatchedBroker(closers, { host: '127.0.0.1', registry, announce: ['127.0.0.1', '::1'] });
    const started = performance.now();
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://v6-silent', { registerTimeoutMs: 500 });
    closers.push(() => server.close());
    assert.ok(performance.now() - started < 3_000, 'listening came without waiting for IPv6');
    const failures: number[] = [];
    server.on('secondFamilyFailed', () => failures.push(performance.now()));
    await until(() => failures.length >= 2, 10_000, 'two failed IPv6 registrations');
    assert.ok((failures[1] as number) - (failures[0] as number) >= 500, 'the retry waited (backoff, and the time limit of the try)');
    const stored = await registry.get('nattrav://v6-silent');
    assert.equal(stored?.publicEndpoint.family, 'IPv4', 'the IPv4 registration holds');
    assert.equal(stored?.secondFamily, undefined);
    assert.equal(server.address()?.uri, 'nattrav://v6-silent');
  });

  test('the first family given over IPv6 registers IPv4 as its second', async () => {
    const { port, registry, second } = await dualStack('nattrav://dual-v6-first', '[::1]');
    assert.deepEqual(second.broker, { family: 'IPv4', address: '127.0.0.1', port });
    const stored = await registry.get('nattrav://dual-v6-first');
    assert.equal(stored?.publicEndpoint.family, 'IPv6');
    assert.equal(stored?.secondFamily?.publicEndpoint.family, 'IPv4');
  });

  test('with dualStack: false, or a broker announcing nothing, a recipient registers one family; an IPv6 Connect goes to the relay as before', async () => {
    const registry = new MemoryRegistry();
    const { port } = await startWatchedBroker(closers, { host: '::', registry });
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://one-family');
    closers.push(() => server.close());
    let seconds = 0;
    server.on('secondFamilyRegistered', () => seconds++);
    server.on('connection', (socket: NattravSocket) => socket.pipe(socket));
    const socket = await connect({ broker: `[::1]:${port}`, uri: 'nattrav://one-family', signal: AbortSignal.timeout(10_000), knownKeysFile: false });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.path, 'relay');
    assert.equal((await registry.get('nattrav://one-family'))?.secondFamily, undefined);
    assert.equal(seconds, 0);
    await assert.rejects(startRecipient(`127.0.0.1:${port}`, 'nattrav://bad', { dualStack: 'yes' as unknown as boolean }), /dualStack must be true or false/);
  });

  test('the second family survives the first family\'s refreshes and is dropped with its withdrawal', async () => {
    const registry = new MemoryRegistry();
    const { port } = await startWatchedBroker(closers, { host: '::', registry, announce: ['::1', '127.0.0.1'] });
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://dual-refresh', { keepaliveMs: 300 });
    await once(server, 'secondFamilyRegistered');
    let refreshes = 0;
    server.on('registered', () => refreshes++);
    await until(() => refreshes >= 3, 5_000, 'three refreshes of the first family');
    assert.equal((await registry.get('nattrav://dual-refresh'))?.secondFamily?.publicEndpoint.family, 'IPv6');
    await server.close();
    // The withdrawal is one datagram the broker handles on its own time.
    let gone = false;
    const deadline = Date.now() + 5_000;
    while (!gone && Date.now() < deadline) {
      gone = (await registry.get('nattrav://dual-refresh')) === undefined;
      if (!gone) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(gone, 'withdrawn with its second family');
  });

  test('a FAMILY-ONLY attempt in a family the recipient has not registered fails at once with ERR_FAMILY_UNAVAILABLE', async () => {
    const { port } = await startWatchedBroker(closers, { host: '::' });
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://v4-only', { dualStack: false });
    closers.push(() => server.close());
    const started = performance.now();
    await assert.rejects(
      connect({ broker: `[::1]:${port}`, uri: 'nattrav://v4-only', family: 6, signal: AbortSignal.timeout(10_000), knownKeysFile: false }),
      (err: unknown) => isNattravError(err, 'ERR_FAMILY_UNAVAILABLE') && /not registered over IPv6/.test(err.message),
    );
    assert.ok(performance.now() - started < 2_000, 'refused at once, not after the recipient timeout');
  });
});
