/**
 * Peers that move (peer/mobility.ts): the address watch on a fake clock, the decision whether
 * a registration is a move, a registration that refreshes at once when the host's addresses
 * change (not at its next keepalive) and reports 'moved', and a connection that breaks with
 * ERR_CONNECTION_BROKEN when its local address goes away.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createTcpServer, connect as tcpConnect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { keyPairFromPrivatePem } from '../../src/security/keys.js';
import { newSelfCertifyingIdentity } from '../../src/security/identity.js';
import { AddressWatch, breakOnAddressLoss, normaliseAddress, RegistrationMoves, type AddressSet, type MovedEvent } from '../../src/peer/mobility.js';
import { PeerRegistration } from '../../src/peer/registration.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { SyncFakeClock } from '../helpers/sync-clock.js';
import { startBroker, until } from '../helpers/loopback.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ep = (address: string, port: number): TransportAddress => ({ family: 'IPv4', address, port });
const BROKER = { broker: ep('203.0.113.2', 3478), transport: 'udp' as const };

describe('AddressWatch', () => {
  test('reads at subscription, tells every change once per poll, and stops polling without subscribers', () => {
    const clock = new SyncFakeClock();
    let addresses: AddressSet = new Set(['127.0.0.1', '192.168.1.2']);
    let reads = 0;
    const watch = new AddressWatch({ clock, intervalMs: 1_000, read: () => (reads++, addresses) });
    const seen: AddressSet[] = [];
    const stop = watch.subscribe((set) => seen.push(set));
    assert.equal(reads, 1);
    clock.advance(3_000);
    assert.equal(seen.length, 0, 'no change, no call');
    addresses = new Set(['127.0.0.1', '192.168.2.10']);
    clock.advance(999);
    assert.equal(seen.length, 0, 'not before the next poll');
    clock.advance(1);
    assert.deepEqual([...(seen[0] as AddressSet)], ['127.0.0.1', '192.168.2.10']);
    assert.deepEqual([...watch.current], ['127.0.0.1', '192.168.2.10']);
    clock.advance(5_000);
    assert.equal(seen.length, 1);
    stop();
    assert.equal(clock.pending, 0, 'no timer without subscribers');
  });

  test('normaliseAddress folds IPv4-mapped IPv6, case and zones', () => {
    assert.equal(normaliseAddress('::ffff:192.168.1.2'), '192.168.1.2');
    assert.equal(normaliseAddress('FE80::1%eth0'), 'fe80::1');
  });
});

describe('RegistrationMoves', () => {
  const home = new Set(['127.0.0.1', '192.168.1.2']);
  const office = new Set(['127.0.0.1', '192.168.2.10']);

  test('the first registration and refreshes from the same place are no move', () => {
    const moves = new RegistrationMoves();
    assert.equal(moves.granted(ep('198.51.100.1', 4000), home, BROKER), undefined);
    assert.equal(moves.stale(home), false);
    assert.equal(moves.granted(ep('198.51.100.1', 4000), home, BROKER), undefined);
  });

  test('new local addresses: stale until registered from there, then one move with both endpoints', () => {
    const moves = new RegistrationMoves();
    moves.granted(ep('203.0.113.10', 4000), home, BROKER);
    assert.equal(moves.stale(office), true);
    const moved = moves.granted(ep('203.0.113.20', 5000), office, BROKER) as MovedEvent;
    assert.deepEqual(moved, { reason: 'local-addresses', from: ep('203.0.113.10', 4000), to: ep('203.0.113.20', 5000), localFrom: ['192.168.1.2'], localTo: ['192.168.2.10'] });
    assert.equal(moves.stale(office), false);
  });

  test('another mapped endpoint in an answer is a move; after a failed refresh it says so', () => {
    const moves = new RegistrationMoves();
    moves.granted(ep('203.0.113.10', 4000), home, BROKER);
    assert.equal(moves.granted(ep('203.0.113.10', 4001), home, BROKER)?.reason, 'public-endpoint');
    moves.refreshFailed();
    assert.equal(moves.granted(ep('203.0.113.30', 4001), home, BROKER)?.reason, 'keepalive-failed');
    assert.equal(moves.granted(ep('203.0.113.30', 4001), home, BROKER), undefined, 'the cause is used once');
  });

  test('another broker (a failover) or a new TCP control connection\'s port is no move', () => {
    const moves = new RegistrationMoves();
    moves.granted(ep('203.0.113.10', 4000), home, BROKER);
    assert.equal(moves.granted(ep('203.0.113.10', 4100), home, { broker: ep('203.0.113.2', 3488), transport: 'udp' }), undefined);
    const tcp = { broker: ep('203.0.113.2', 3488), transport: 'tcp' as const };
    moves.granted(ep('203.0.113.10', 50000), home, tcp);
    assert.equal(moves.granted(ep('203.0.113.10', 50001), home, tcp), undefined);
    assert.equal(moves.granted(ep('203.0.113.20', 50002), home, tcp)?.reason, 'public-endpoint');
  });
});

describe('a registration whose host moves (loopback broker, fake addresses)', () => {
  test('refreshes at once on an address change (not at its 60 s keepalive) and reports the move', { timeout: 30_000 }, async () => {
    const work = await mkdtemp(join(tmpdir(), 'nattrav-mobility-'));
    const { broker, address } = await startBroker();
    let addresses: AddressSet = new Set(['127.0.0.1', '192.168.1.2']);
    const watch = new AddressWatch({ intervalMs: 50, read: () => addresses });
    const identity = await newSelfCertifyingIdentity({ dir: work });
    const registration = new PeerRegistration({
      broker: { host: '127.0.0.1', port: Number(address.split(':')[1]) },
      uri: identity.uri,
      keepaliveMs: 60_000,
      lifetimeMs: 180_000,
      registerTimeoutMs: 5_000,
      transport: 'udp',
      keys: { key: keyPairFromPrivatePem(identity.keyPem) },
      addressWatch: watch,
    });
    try {
      const refreshes: string[] = [];
      const moved: MovedEvent[] = [];
      registration.on('registered', (e: { kind: string }) => refreshes.push(e.kind));
      registration.on('moved', (e: MovedEvent) => moved.push(e));
      await registration.start();
      addresses = new Set(['127.0.0.1', '192.168.2.10']);
      await until(() => moved.length === 1, 5_000, 'the move');
      assert.deepEqual(refreshes, ['first', 'refresh']);
      assert.equal((moved[0] as MovedEvent).reason, 'local-addresses');
      assert.deepEqual((moved[0] as MovedEvent).localTo, ['192.168.2.10']);
      assert.deepEqual((moved[0] as MovedEvent).localFrom, ['192.168.1.2']);
    } finally {
      await registration.close();
      await broker.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe('breakOnAddressLoss', () => {
  test('a connection whose local address went away is destroyed with ERR_CONNECTION_BROKEN naming it', { timeout: 10_000 }, async () => {
    const server = createTcpServer((socket) => socket.on('error', () => undefined));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    const client: Socket = tcpConnect(port, '127.0.0.1');
    await once(client, 'connect');
    let addresses: AddressSet = new Set(['127.0.0.1']);
    const clock = new SyncFakeClock();
    const watch = new AddressWatch({ clock, intervalMs: 1_000, read: () => addresses });
    breakOnAddressLoss(client, client.localAddress, watch);
    clock.advance(2_000);
    assert.equal(client.destroyed, false, 'the address is still there');
    addresses = new Set(['192.168.2.10']);
    const errored = once(client, 'error');
    clock.advance(1_000);
    const [err] = (await errored) as [NattravError];
    assert.ok(err instanceof NattravError);
    assert.equal(err.code, ErrorCode.ConnectionBroken);
    assert.match(err.message, /local address 127\.0\.0\.1 went away/);
    assert.equal(clock.pending, 0, 'the watch stopped with the connection');
    server.close();
  });
});
