/**
 * The lab's firewalled NAT types (`udp-blocked`, `web-only`) and site options (carrier-grade
 * NAT, several LAN hosts, hairpinning, WAN delay), each proven with real traffic through the
 * kernel. Observers on public hosts answer with the source ip:port they see.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { Lab, LabHost } from '../../src/lab/index.js';
import { requireLab, runProbe, startProbe, withLab } from './helpers.js';

/** How long an unanswered probe waits: the undelayed lab's round trip is well under 1 ms. */
const waitMs = 800;
const tcprtt = fileURLToPath(new URL('./fixtures/tcprtt.js', import.meta.url));

async function observe(lab: Lab, host: LabHost, ports: number[]): Promise<void> {
  for (const port of ports) {
    const observer = startProbe(lab, host, ['observe', String(port)]);
    assert.deepEqual(await observer.lines.nextJson(5_000), { event: 'ready' });
  }
}

const udp = (lab: Lab, from: LabHost, to: string): Promise<Record<string, unknown>> =>
  runProbe(lab, from, ['udp-send', '0', to, '3', String(waitMs)]);
const tcp = (lab: Lab, from: LabHost, to: string): Promise<Record<string, unknown>> =>
  runProbe(lab, from, ['tcp-connect', '0', to, String(waitMs)]);
const hostOf = (seen: unknown): string => String(seen).replace(/:\d+$/, '');

test('udp-blocked and web-only firewalls (real traffic)', { timeout: 60_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const sites = [{ name: 'noudp', nat: 'udp-blocked' as const }, { name: 'web', nat: 'web-only' as const }];
  await withLab({ sites, publicHosts: ['obs', 'stranger'] }, async (lab) => {
    const obs = lab.publicHost('obs');
    await observe(lab, obs, [4000, 80, 443]);
    const noudp = lab.site('noudp');
    const web = lab.site('web');

    await t.test('udp-blocked: TCP out is masqueraded, UDP never passes', async () => {
      const out = await tcp(lab, noudp.host, `${obs.address}:4000`);
      assert.equal(out.connected, true, JSON.stringify(out));
      assert.equal(hostOf(out.line), noudp.publicAddress);
      assert.equal((await udp(lab, noudp.host, `${obs.address}:4000`)).replied, false);
      assert.equal((await udp(lab, noudp.host, `${obs.address}:443`)).replied, false);
      // Inbound: nothing unsolicited, UDP or TCP (the filter is port-restricted).
      assert.equal((await tcp(lab, lab.publicHost('stranger'), `${noudp.publicAddress}:4000`)).connected, false);
    });

    await t.test('web-only: TCP to 80 and 443 only', async () => {
      for (const port of [80, 443]) {
        const out = await tcp(lab, web.host, `${obs.address}:${port}`);
        assert.equal(out.connected, true, `port ${port}: ${JSON.stringify(out)}`);
        assert.equal(hostOf(out.line), web.publicAddress);
      }
      assert.equal((await tcp(lab, web.host, `${obs.address}:4000`)).connected, false);
      assert.equal((await udp(lab, web.host, `${obs.address}:443`)).replied, false);
      assert.equal((await udp(lab, web.host, `${obs.address}:80`)).replied, false);
    });
  });
});

test('carrier-grade NAT, several LAN hosts and hairpinning (real traffic)', { timeout: 90_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const sites = [
    { name: 'cgn', nat: 'full-cone' as const, cgn: true },
    { name: 'hp', nat: 'port-restricted' as const, hosts: 3, hairpin: true },
    { name: 'nohp', nat: 'port-restricted' as const, hosts: 2 },
    { name: 'hpcone', nat: 'full-cone' as const, hosts: 2, hairpin: true },
  ];
  await withLab({ sites, publicHosts: ['obs'] }, async (lab) => {
    const obs = lab.publicHost('obs');
    await observe(lab, obs, [4000]);

    await t.test('CGN: double NAT, the internet sees the CGN address', async () => {
      const site = lab.site('cgn');
      assert.ok(site.cgn !== undefined && site.router !== undefined);
      assert.equal(site.cgn.address, site.publicAddress);
      assert.match(site.router.address, /^100\.64\.\d+\.2$/);
      const out = await udp(lab, site.host, `${obs.address}:4000`);
      assert.equal(out.replied, true, JSON.stringify(out));
      assert.equal(hostOf(out.data), site.publicAddress);
      const viaTcp = await tcp(lab, site.host, `${obs.address}:4000`);
      assert.equal(hostOf(viaTcp.line), site.publicAddress);
      // The home router's own mapping is on the carrier network, not the internet.
      const fromRouter = await udp(lab, site.router, `${obs.address}:4000`);
      assert.equal(hostOf(fromRouter.data), site.publicAddress, 'the router itself is behind the CGN too');
    });

    await t.test('several hosts share one NAT and reach each other on the LAN', async () => {
      const site = lab.site('hp');
      assert.deepEqual(site.hosts.map((h) => h.address), ['192.168.1.2', '192.168.1.3', '192.168.1.4']);
      assert.equal(site.hosts[0], site.host);
      for (const host of site.hosts) {
        const out = await udp(lab, host, `${obs.address}:4000`);
        assert.equal(hostOf(out.data), site.publicAddress, `${host.name}: ${JSON.stringify(out)}`);
      }
      await observe(lab, site.hosts[0] as LabHost, [4100]);
      const lan = await tcp(lab, site.hosts[2] as LabHost, '192.168.1.2:4100');
      assert.equal(lan.line, '192.168.1.4:' + String(lan.line).split(':')[1], 'LAN traffic is not translated');
    });

    for (const [name, proto, hairpin] of [['hp', 'udp', true], ['hp', 'tcp', true], ['hpcone', 'udp', true], ['hpcone', 'tcp', true], ['nohp', 'udp', false], ['nohp', 'tcp', false]] as const) {
      await t.test(`hairpin ${hairpin ? 'on' : 'off'}: ${name} over ${proto}`, async () => {
        const site = lab.site(name);
        const [first, second] = site.hosts as [LabHost, LabHost];
        const localPort = proto === 'udp' ? 42_000 : 42_001;
        const client = startProbe(lab, first, [`${proto}-client`, String(localPort), '10000', `${obs.address}:4000`]);
        try {
          const mapped = await client.lines.nextJson(8_000);
          const seen = String((mapped.mappings as Array<{ seen: unknown }>)[0]?.seen);
          assert.equal(seen, `${site.publicAddress}:${localPort}`);
          const answer = proto === 'udp' ? await udp(lab, second, seen) : await tcp(lab, second, seen);
          const reached = answer.replied === true || answer.connected === true;
          assert.equal(reached, hairpin, JSON.stringify(answer));
          if (hairpin) {
            client.child.stdin?.end();
            const events = (await client.lines.rest(5_000)).map((line) => JSON.parse(line) as Record<string, unknown>);
            const from = events.find((e) => e.event === 'unsolicited')?.from;
            // The receiver sees the sender's public address, as RFC 4787 REQ-9 asks.
            assert.equal(hostOf(from), site.publicAddress, JSON.stringify(events));
          }
        } finally {
          client.child.kill('SIGKILL');
        }
      });
    }
  });
});

interface RttResult { medianConnectMs: number; echoMs: number; mbitPerS: number }

async function measure(lab: Lab, from: LabHost, to: string): Promise<RttResult> {
  const { stdout } = await lab.run(from, process.execPath, [tcprtt, 'client', to, '5', '4000000'], { timeoutMs: 30_000 });
  return JSON.parse(stdout.trim()) as RttResult;
}

test('WAN delay: each delayed link adds twice its one-way delay to a round trip, throughput holds', { timeout: 60_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const delay = 15;
  const sites = [
    { name: 'a', nat: 'port-restricted' as const },
    { name: 'b', nat: 'none' as const },
    { name: 'c', nat: 'full-cone' as const, cgn: true },
    { name: 'fast', nat: 'port-restricted' as const, delayMs: 0 },
  ];
  await withLab({ sites, wanDelayMs: delay }, async (lab) => {
    assert.deepEqual(lab.sites.map((s) => s.delayMs), [delay, delay, delay, 0]);
    const server = lab.spawn(lab.broker, process.execPath, [tcprtt, 'server', '7000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => createInterface({ input: server.stdout as NodeJS.ReadableStream }).once('line', resolve));
    const bServer = lab.spawn(lab.site('b').host, process.execPath, [tcprtt, 'server', '7001'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => createInterface({ input: bServer.stdout as NodeJS.ReadableStream }).once('line', resolve));
    const near = (value: number, expected: number, what: string): void =>
      assert.ok(value >= expected - 1 && value <= expected + 8, `${what}: ${value} ms, expected about ${expected} ms`);
    for (const name of ['a', 'b', 'c']) {
      const result = await measure(lab, lab.site(name).host, `${lab.broker.address}:7000`);
      t.diagnostic(`${name} -> broker: ${JSON.stringify(result)}`);
      near(result.medianConnectMs, 2 * delay, `${name} -> broker connect`);
      near(result.echoMs, 2 * delay, `${name} -> broker echo`);
      assert.ok(result.mbitPerS > 20, `${name}: throughput ${result.mbitPerS} Mbit/s`);
    }
    const across = await measure(lab, lab.site('a').host, `${lab.site('b').publicAddress}:7001`);
    t.diagnostic(`a -> b: ${JSON.stringify(across)}`);
    near(across.medianConnectMs, 4 * delay, 'two delayed links');
    const fast = await measure(lab, lab.site('fast').host, `${lab.broker.address}:7000`);
    assert.ok(fast.medianConnectMs < 5, `undelayed site: ${fast.medianConnectMs} ms`);
  });
});
