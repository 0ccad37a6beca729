/**
 * The lab's IPv6 (src/lab/ipv6.ts): IPv6-only sites behind a stateful firewall, dual-stack
 * sites, and dual-stack sites whose IPv6 is blocked (with and without the broker), each proven
 * with real traffic through the kernel. Observers answer with the source address they see.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { isNattravError, ErrorCode } from '../../src/errors.js';
import { firewall6Ruleset, Lab, type LabHost, type LabOptions } from '../../src/lab/index.js';
import { listNamespaces } from '../../src/lab/netns.js';
import { requireLab, runProbe, startProbe, withLab } from './helpers.js';

/** How long an unanswered probe waits: the undelayed lab's round trip is well under 1 ms. */
const waitMs = 800;

const tcp = (lab: Lab, from: LabHost, to: string): Promise<Record<string, unknown>> =>
  runProbe(lab, from, ['tcp-connect', '0', to, String(waitMs)]);
const udp = (lab: Lab, from: LabHost, to: string): Promise<Record<string, unknown>> =>
  runProbe(lab, from, ['udp-send', '0', to, '3', String(waitMs)]);
/** The address part of what an observer printed (`ip:port`, IPv6 unbracketed). */
const hostOf = (seen: unknown): string => String(seen).replace(/:\d+$/, '');
const v6 = (host: LabHost, port: number): string => `[${host.address6 ?? 'missing'}]:${port}`;

async function observe(lab: Lab, host: LabHost, port: number): Promise<void> {
  const observer = startProbe(lab, host, ['observe', String(port)]);
  assert.deepEqual(await observer.lines.nextJson(5_000), { event: 'ready' });
}

test('Lab.create rejects IPv6 options that do not fit, naming the site', async () => {
  const bad: Array<[string, unknown, RegExp]> = [
    ['unknown mode', { name: 'a', nat: 'none', ipv6: 'yes' }, /ipv6 "yes" is unknown/],
    ['only with a NAT', { name: 'a', nat: 'port-restricted', ipv6: 'only' }, /pass nat "none"/],
    ['dual without a router', { name: 'a', nat: 'none', ipv6: 'dual' }, /other than "none"/],
    ['cgn', { name: 'a', nat: 'full-cone', cgn: true, ipv6: 'dual' }, /cgn/],
    ['ipv6ToBroker without blocked', { name: 'a', nat: 'full-cone', ipv6: 'dual', ipv6ToBroker: false }, /ipv6ToBroker/],
  ];
  for (const [why, site, message] of bad) {
    await assert.rejects(Lab.create({ sites: [site] } as LabOptions), (error: unknown) => isNattravError(error, ErrorCode.InvalidArgument) && message.test(error.message), why);
  }
  assert.throws(() => firewall6Ruleset({ blockExcept: ['203.0.113.2'] }), /not an IPv6 address/);
});

test('the IPv6 firewall passes replies, ICMPv6 errors and LAN -> WAN, and drops the rest', () => {
  const text = firewall6Ruleset();
  assert.match(text, /table ip6 nattrav6/);
  assert.match(text, /policy drop;/);
  assert.match(text, /packet-too-big/);
  assert.match(text, /iifname "lan0" oifname "wan0" accept/);
  assert.doesNotMatch(text, /iifname "wan0" oifname "lan0" accept/, 'nothing new comes in');
  assert.match(firewall6Ruleset({ blockExcept: ['2001:db8::2'] }), /ip6 daddr != \{ 2001:db8::2 \} drop/);
  assert.match(firewall6Ruleset({ blockExcept: [] }), /iifname "lan0" oifname "wan0" drop/);
});

test('IPv6-only, dual-stack and IPv6-blocked sites (real traffic)', { timeout: 90_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const sites: LabOptions['sites'] = [
    { name: 'a', nat: 'none', ipv6: 'only' },
    { name: 'b', nat: 'none', ipv6: 'only', hosts: 2 },
    { name: 'dual', nat: 'port-restricted', ipv6: 'dual' },
    { name: 'blk', nat: 'port-restricted', ipv6: 'blocked' },
    { name: 'dark', nat: 'port-restricted', ipv6: 'blocked', ipv6ToBroker: false },
    { name: 'old', nat: 'port-restricted' },
  ];
  let names: string[] = [];
  await withLab({ sites, publicHosts: ['obs'] }, async (lab) => {
    names = lab.namespaces;
    const broker = lab.broker;
    const obs = lab.publicHost('obs');
    await observe(lab, broker, 4000);
    await observe(lab, obs, 4000);
    const [a, b, dual, blk, dark, old] = ['a', 'b', 'dual', 'blk', 'dark', 'old'].map((name) => lab.site(name));
    assert.ok(a !== undefined && b !== undefined && dual !== undefined && blk !== undefined && dark !== undefined && old !== undefined);

    await t.test('addresses: 2001:db8::/32, one /64 per site, no IPv4 on IPv6-only sites', () => {
      assert.equal(broker.address6, '2001:db8::2');
      assert.equal(a.host.address6, '2001:db8:1::2');
      assert.equal(a.host.address, a.host.address6);
      assert.equal(a.publicAddress, a.host.address6, 'no NAT: the internet sees the host itself');
      assert.deepEqual(b.hosts.map((h) => h.address6), ['2001:db8:2::2', '2001:db8:2::3']);
      assert.equal(dual.host.address, '192.168.1.2');
      assert.equal(dual.host.address6, '2001:db8:3::2');
      assert.equal(old.host.address6, undefined);
    });

    await t.test('hosts of IPv6 sites do not move (their addresses would not follow)', async () => {
      await assert.rejects(lab.moveHost(dual.host, 'b'), (error: unknown) => isNattravError(error, ErrorCode.InvalidArgument) && /IPv4-only/.test(error.message));
    });

    await t.test('an IPv6 host reaches the broker over IPv6 with its own address, TCP and UDP', async () => {
      for (const site of [a, b, dual, blk]) {
        const out = await tcp(lab, site.host, v6(broker, 4000));
        assert.equal(out.connected, true, `${site.name}: ${JSON.stringify(out)}`);
        assert.equal(hostOf(out.line), site.host.address6, `${site.name}: no IPv6 NAT`);
      }
      const viaUdp = await udp(lab, a.host, v6(broker, 4000));
      assert.equal(hostOf(viaUdp.data), a.host.address6, JSON.stringify(viaUdp));
      // A dual-stack host still goes out over IPv4 through its NAT.
      const overV4 = await tcp(lab, dual.host, `${broker.address}:4000`);
      assert.equal(hostOf(overV4.line), dual.publicAddress);
    });

    await t.test('the firewall drops an unsolicited inbound IPv6 SYN and answers an outbound one', async () => {
      await observe(lab, a.host, 4100);
      await observe(lab, dual.host, 4100);
      // Outbound from a's LAN: answered (a -> b's LAN is dropped by b's firewall, not a's).
      assert.equal((await tcp(lab, a.host, v6(obs, 4000))).connected, true);
      for (const [from, to] of [[b.host, a.host], [obs, a.host], [a.host, dual.host], [lab.site('b').hosts[1] as LabHost, dual.host]] as const) {
        const out = await tcp(lab, from, v6(to, 4100));
        // Dropped, not refused: a listener sits there, and no RST comes back.
        assert.deepEqual(out, { connected: false, error: 'timeout' }, `${from.name} -> ${to.name}`);
      }
      // On the LAN, no firewall is in between.
      const lan = await tcp(lab, b.hosts[1] as LabHost, v6(b.host, 4100));
      assert.equal(lan.connected, false, 'nothing listens on b.host:4100');
      assert.notEqual(lan.error, 'timeout', 'the LAN neighbour refuses at once (RST), no firewall drops it');
    });

    await t.test('a blocked site passes no IPv6 to other sites; the broker as configured', async () => {
      assert.deepEqual(await tcp(lab, blk.host, v6(obs, 4000)), { connected: false, error: 'timeout' });
      assert.deepEqual(await tcp(lab, blk.host, v6(a.host, 4100)), { connected: false, error: 'timeout' });
      assert.equal((await udp(lab, blk.host, v6(obs, 4000))).replied, false);
      assert.deepEqual(await tcp(lab, dark.host, v6(broker, 4000)), { connected: false, error: 'timeout' });
      assert.equal((await udp(lab, dark.host, v6(broker, 4000))).replied, false);
      // IPv4 through the NAT works on both.
      for (const site of [blk, dark]) assert.equal(hostOf((await tcp(lab, site.host, `${obs.address}:4000`)).line), site.publicAddress);
    });

    await t.test('trafficCounter counts IPv6 only when asked to', async () => {
      const both = await lab.trafficCounter(broker, { ipv6: true });
      const v4only = await lab.trafficCounter(broker);
      const [bothBefore, v4Before] = [await both(), await v4only()];
      assert.equal((await tcp(lab, a.host, v6(broker, 4000))).connected, true);
      const [bothAfter, v4After] = [await both(), await v4only()];
      assert.ok(bothAfter.packetsIn - bothBefore.packetsIn >= 3, JSON.stringify({ bothBefore, bothAfter }));
      assert.equal(v4After.packetsIn - v4Before.packetsIn, 0, 'IPv6 is not counted by default');
    });
  });
  const left = await listNamespaces();
  assert.deepEqual(names.filter((ns) => left.includes(ns)), [], 'teardown removed every namespace');
});
