/**
 * IPv6 sources under the broker's limits (src/broker/source-key.ts): an IPv6
 * host, and so an attacker, holds a whole /64, so every per-source bucket, cap
 * and budget counts a /64 as one source; an IPv4-mapped address (as a
 * dual-stack socket reports an IPv4 peer) counts as the IPv4 address.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BrokerGuard } from '../../src/broker/guard.js';
import { RateLimiter, resolveLimits, type BrokerLimitsOptions } from '../../src/broker/limits.js';
import { RegistrationCap } from '../../src/broker/registration-cap.js';
import { answerBinding } from '../../src/broker/rfc5780.js';
import { sourceKey } from '../../src/broker/source-key.js';
import { ConnectionTable } from '../../src/broker/tcp-deadlines.js';
import { Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addUri } from '../../src/wire/nattrav.js';

/** Two addresses in one /64, one in the next /64 up. */
const SAME_64_A = '2001:db8:aa:1::1';
const SAME_64_B = '2001:db8:aa:1:ffff:ffff:ffff:fffe';
const OTHER_64 = '2001:db8:aa:2::1';

describe('sourceKey', () => {
  test('IPv4 as it is, IPv4-mapped IPv6 as its IPv4 address, IPv6 as its /64 prefix', () => {
    assert.equal(sourceKey('192.0.2.1'), '192.0.2.1');
    assert.equal(sourceKey('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(sourceKey('::FFFF:C000:0201'), '192.0.2.1', 'hex spelling of the mapped form');
    assert.equal(sourceKey(SAME_64_A), '2001:db8:aa:1::/64');
    assert.equal(sourceKey(SAME_64_B), '2001:db8:aa:1::/64');
    assert.equal(sourceKey(OTHER_64), '2001:db8:aa:2::/64');
    assert.equal(sourceKey('2001:DB8:AA:1:0:0:0:7'), '2001:db8:aa:1::/64', 'spelling does not matter');
    assert.equal(sourceKey('fe80::1%eth0'), 'fe80::/64', 'zone ID dropped');
    assert.equal(sourceKey('::1'), '::/64');
    assert.equal(sourceKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(sourceKey('?'), '?', 'not an address: its own key');
  });

  test('the last key is not returned for another address (the one-entry cache)', () => {
    assert.equal(sourceKey(SAME_64_A), '2001:db8:aa:1::/64');
    assert.equal(sourceKey(OTHER_64), '2001:db8:aa:2::/64');
    assert.equal(sourceKey('::ffff:198.51.100.7'), '198.51.100.7');
    assert.equal(sourceKey('198.51.100.8'), '198.51.100.8');
  });
});

/** Limits with only `options` set and everything else at its default. */
function limits(options: BrokerLimitsOptions): ReturnType<typeof resolveLimits> {
  return resolveLimits(options);
}

describe('per-source limits key IPv6 by /64', () => {
  test('rate buckets: two addresses in one /64 share one, another /64 has its own, a mapped IPv4 is the IPv4 bucket', () => {
    const now = 1_000;
    const rates = new RateLimiter(limits({ relay: { perSecond: 0, burst: 2 } }), () => now);
    assert.equal(rates.take('relay', SAME_64_A), true);
    assert.equal(rates.take('relay', SAME_64_B), true);
    assert.equal(rates.take('relay', SAME_64_A), false, 'the /64 spent its burst of 2');
    assert.equal(rates.take('relay', SAME_64_B), false);
    assert.equal(rates.take('relay', OTHER_64), true, 'another /64');
    assert.equal(rates.take('relay', '192.0.2.9'), true);
    assert.equal(rates.take('relay', '::ffff:192.0.2.9'), true);
    assert.equal(rates.take('relay', '192.0.2.9'), false, 'the mapped form drew from the IPv4 bucket');
  });

  test('per-URI buckets stay keyed by URI', () => {
    const now = 1_000;
    const rates = new RateLimiter(limits({ connectPerUri: { perSecond: 0, burst: 1 } }), () => now);
    assert.equal(rates.take('connect-per-uri', 'nattrav://a'), true);
    assert.equal(rates.take('connect-per-uri', 'nattrav://b'), true);
    assert.equal(rates.take('connect-per-uri', 'nattrav://a'), false);
  });

  test('registration cap: one /64 holds maxRegistrationsPerSource URIs, however many addresses it uses', () => {
    const cap = new RegistrationCap(2, 100);
    const t = 1_000;
    cap.record('nattrav://a', SAME_64_A, t + 60_000);
    cap.record('nattrav://b', SAME_64_B, t + 60_000);
    assert.equal(cap.admit('nattrav://c', '2001:db8:aa:1::99', t), 'per-source');
    assert.equal(cap.admit('nattrav://a', SAME_64_B, t), 'ok', 'a refresh from another address of the /64 is its own URI');
    assert.equal(cap.admit('nattrav://c', OTHER_64, t), 'ok');
    cap.record('nattrav://m', '::ffff:203.0.113.5', t + 60_000);
    cap.record('nattrav://n', '203.0.113.5', t + 60_000);
    assert.equal(cap.admit('nattrav://o', '203.0.113.5', t), 'per-source', 'mapped and plain IPv4 are one source');
    cap.forget('nattrav://a');
    assert.equal(cap.admit('nattrav://c', SAME_64_A, t), 'ok', 'a withdrawal frees the /64 a place');
  });

  test('TCP connections per source: one /64 is one source, and closing frees its place', () => {
    const table = new ConnectionTable<string>({ firstMessageMs: 1_000, messageMs: 500, lifetimeMs: 10_000, maxConnections: 100, maxConnectionsPerSource: 2 }, () => 0);
    for (const [handle, source] of [['a', SAME_64_A], ['b', SAME_64_B]] as const) {
      assert.equal(table.admit(source).verdict, 'ok');
      table.add(handle, source);
    }
    assert.equal(table.admit('2001:db8:aa:1::42').verdict, 'per-source');
    assert.equal(table.admit(OTHER_64).verdict, 'ok');
    table.remove('a');
    assert.equal(table.admit('2001:db8:aa:1::42').verdict, 'ok');
    table.add('m', '::ffff:198.51.100.1');
    table.add('n', '198.51.100.1');
    assert.equal(table.admit('198.51.100.1').verdict, 'per-source');
  });

  test('the guard: UDP floods and Register admission count the /64', () => {
    const now = 1_000;
    const guard = new BrokerGuard(
      limits({ udpOther: { perSecond: 0, burst: 3 }, maxRegistrationsPerSource: 1, amplificationAllowancePerSource: { perSecond: 0, burst: 0 } }),
      () => undefined,
      { now: () => now },
    );
    const junk = Buffer.from('not stun');
    assert.equal(guard.admitDatagram(junk, SAME_64_A), true);
    assert.equal(guard.admitDatagram(junk, SAME_64_B), true);
    assert.equal(guard.admitDatagram(junk, '2001:db8:aa:1::3'), true);
    assert.equal(guard.admitDatagram(junk, '2001:db8:aa:1::4'), false, 'a fourth address of the /64 finds its bucket empty');
    assert.equal(guard.admitDatagram(junk, OTHER_64), true);

    const register = (uri: string): StunMessage => addUri(StunMessage.request(Method.Register), uri);
    assert.equal(guard.admitRegister(register('nattrav://one'), SAME_64_A), undefined);
    guard.registered('nattrav://one', SAME_64_A, 60_000);
    const refused = guard.admitRegister(register('nattrav://two'), SAME_64_B);
    assert.ok(refused !== undefined, 'a second URI from the same /64 is over maxRegistrationsPerSource 1');
    assert.equal(guard.admitRegister(register('nattrav://two'), OTHER_64), undefined);
  });

  test('amplification: the bytes beyond the requests come from one budget per /64', () => {
    const perSource = { perSecond: 0, burst: 240 };
    /** Bytes granted beyond 20-byte bare Binding requests from `sources`, 20 answers each, on a stopped clock. */
    const excessFrom = (sources: string[]): number => {
      const now = 1_000;
      const guard = new BrokerGuard(limits({ amplificationAllowancePerSource: perSource }), () => undefined, { now: () => now });
      const layout = { host: '2001:db8::53', port: 3478, alternatePort: 3479 };
      let excess = 0;
      for (let round = 0; round < 20; round++) {
        for (const from of sources) {
          const { response } = answerBinding(StunMessage.request(Method.Binding), { alternateIp: false, alternatePort: false }, { family: 'IPv6', address: from, port: 40_000 }, layout);
          const bytes = guard.fitUdp(response, { fingerprint: true }, { bytes: 20, fingerprint: false }, from);
          if (bytes !== undefined) excess += bytes.length - 20;
        }
      }
      return excess;
    };
    const oneNet = Array.from({ length: 10 }, (_, i) => `2001:db8:bb:1::${(i + 1).toString(16)}`);
    const tenNets = Array.from({ length: 10 }, (_, i) => `2001:db8:bb:${(i + 1).toString(16)}::1`);
    const fromOneNet = excessFrom(oneNet);
    assert.ok(fromOneNet <= perSource.burst, `ten addresses of one /64 got ${fromOneNet} B beyond their requests, one budget is ${perSource.burst} B`);
    assert.ok(fromOneNet > 0, 'the /64 did get its budget');
    assert.ok(excessFrom(tenNets) > 5 * perSource.burst, 'ten /64s get ten budgets');
  });
});
