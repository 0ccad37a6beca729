/**
 * Each NAT type of the lab, proven with real traffic through the kernel: observers on two
 * public hosts report the source ip:port they see (mapping behaviour), then a third public
 * host and a contacted host (from another port) send unsolicited traffic to the mapped port
 * (filtering behaviour). Every site uses the same LAN, 192.168.1.0/24.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import { NAT_TYPES, type Lab, type LabSite, type NatType } from '../../src/lab/index.js';
import { requireLab, runProbe, startProbe, withLab } from './helpers.js';

/** Port the observers listen on (TCP and UDP). */
const observerPort = 4000;
/** Port the contacted observer host sends its unsolicited traffic from (not the observer's port). */
const otherPort = 5001;
/** How long a sender waits for an answer from the LAN host: the lab's round trip is well under 1 ms. */
const unsolicitedWaitMs = 800;
/** Limit for the client to report its mappings (UDP retries every 200 ms; TCP waits up to 3 s a target). */
const mappedWithinMs = 8_000;

/** How a mapping of one internal endpoint toward two destinations looks from outside. */
type Mapping = 'direct' | 'preserved' | 'random' | 'sequential';

interface Expectation {
  /** direct: host address and local port; preserved: router address, same port = local port
   * for both; random: different ports; sequential: second port = first + 1. */
  mapping: Mapping;
  /** Whether a host never contacted reaches the mapped port. */
  fromStranger: boolean;
  /** Whether a contacted host reaches it from a port other than the one contacted. */
  fromContactedAddress: boolean;
}

/** The types that map and filter every protocol (the firewalled types have their own tests in firewall-types.test.ts). */
type ClassicType = Exclude<NatType, 'udp-blocked' | 'web-only'>;
const classicTypes = NAT_TYPES.filter((nat): nat is ClassicType => nat !== 'udp-blocked' && nat !== 'web-only');

const expectations: Record<ClassicType, Expectation> = {
  none: { mapping: 'direct', fromStranger: true, fromContactedAddress: true },
  'full-cone': { mapping: 'preserved', fromStranger: true, fromContactedAddress: true },
  'restricted-cone': { mapping: 'preserved', fromStranger: false, fromContactedAddress: true },
  'port-restricted': { mapping: 'preserved', fromStranger: false, fromContactedAddress: false },
  symmetric: { mapping: 'random', fromStranger: false, fromContactedAddress: false },
  'symmetric-sequential': { mapping: 'sequential', fromStranger: false, fromContactedAddress: false },
};

function endpoint(text: unknown): { host: string; port: number } {
  assert.equal(typeof text, 'string', `expected an "ip:port" string, got ${JSON.stringify(text)}`);
  const [host = '', port = ''] = (text as string).split(':');
  return { host, port: Number(port) };
}

function assertMapping(site: LabSite, expect: Mapping, localPort: number, seen: unknown[]): void {
  const [a, b] = seen.map(endpoint);
  assert.ok(a !== undefined && b !== undefined, 'two observers answered');
  const label = `${site.name}: seen ${String(seen[0])} and ${String(seen[1])} from local port ${localPort}`;
  assert.equal(a.host, site.publicAddress, label);
  assert.equal(b.host, site.publicAddress, label);
  switch (expect) {
    case 'direct':
      assert.equal(a.host, site.host.address, label);
      assert.deepEqual([a.port, b.port], [localPort, localPort], label);
      break;
    case 'preserved':
      assert.deepEqual([a.port, b.port], [localPort, localPort], `${label}: one public port for both, the local one`);
      break;
    case 'random':
      assert.notEqual(a.port, b.port, `${label}: a new port per destination`);
      break;
    case 'sequential':
      assert.ok(a.port >= 20_000 && a.port < 21_000, `${label}: port from the sequential pool`);
      assert.equal(b.port, a.port === 20_999 ? 20_000 : a.port + 1, `${label}: the next port`);
      break;
  }
}

async function checkSite(lab: Lab, site: LabSite, proto: 'udp' | 'tcp', localPort: number): Promise<void> {
  const expect = expectations[site.nat as ClassicType];
  const obsA = lab.publicHost('obsA');
  const stranger = lab.publicHost('stranger');
  const targets = [obsA, lab.publicHost('obsB')].map((host) => `${host.address}:${observerPort}`);

  const client = startProbe(lab, site.host, [`${proto}-client`, String(localPort), '20000', ...targets]);
  try {
    const mapped = await client.lines.nextJson(mappedWithinMs);
    assert.equal(mapped.event, 'mapped', JSON.stringify(mapped));
    const seen = (mapped.mappings as Array<{ seen: unknown }>).map((m) => m.seen);
    assertMapping(site, expect.mapping, localPort, seen);

    const publicEndpoint = String(seen[0]);
    const send = (from: typeof obsA, port: number): Promise<Record<string, unknown>> =>
      proto === 'udp'
        ? runProbe(lab, from, ['udp-send', String(port), publicEndpoint, '3', String(unsolicitedWaitMs)])
        : runProbe(lab, from, ['tcp-connect', String(port), publicEndpoint, String(unsolicitedWaitMs)]);
    const fromStranger = await send(stranger, 0);
    const fromContacted = await send(obsA, otherPort);

    client.child.stdin?.end();
    const events = (await client.lines.rest(5_000)).map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.ok(!events.some((e) => e.event === 'listen-error'), JSON.stringify(events));
    const reached = events.filter((e) => e.event === 'unsolicited').map((e) => endpoint(e.from).host);

    const answered = (result: Record<string, unknown>): boolean => result.replied === true || result.connected === true;
    assert.equal(reached.includes(stranger.address), expect.fromStranger, `${site.name}/${proto}: stranger reached the LAN host`);
    assert.equal(answered(fromStranger), expect.fromStranger, `${site.name}/${proto}: stranger got an answer: ${JSON.stringify(fromStranger)}`);
    assert.equal(reached.includes(obsA.address), expect.fromContactedAddress, `${site.name}/${proto}: contacted address, other port, reached the LAN host`);
    assert.equal(answered(fromContacted), expect.fromContactedAddress, `${site.name}/${proto}: contacted address got an answer: ${JSON.stringify(fromContacted)}`);
    if (proto === 'udp' && expect.fromStranger) {
      // The answer comes back translated, from the public endpoint the stranger sent to.
      assert.equal(fromStranger.from, publicEndpoint);
    }
  } finally {
    client.child.kill('SIGKILL');
  }
}

test('every NAT type maps and filters as specified (real traffic)', { timeout: 120_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  const sites = classicTypes.map((nat) => ({ name: nat, nat }));
  await withLab({ sites, publicHosts: ['obsA', 'obsB', 'stranger'] }, async (lab) => {
    // Two LANs with the same subnet behind different routers: each is its own namespace.
    const natted = lab.sites.filter((site) => site.router !== undefined);
    assert.ok(natted.every((site) => site.host.address === '192.168.1.2' && site.lanAddress === '192.168.1.1'));
    assert.equal(new Set(natted.map((site) => site.publicAddress)).size, natted.length);

    for (const name of ['obsA', 'obsB']) {
      const observer = startProbe(lab, lab.publicHost(name), ['observe', String(observerPort)]);
      assert.deepEqual(await observer.lines.nextJson(5_000), { event: 'ready' });
    }
    let localPort = 40_000;
    for (const nat of classicTypes) {
      for (const proto of ['udp', 'tcp'] as const) {
        const port = localPort++;
        await t.test(`${nat} over ${proto}`, { timeout: 20_000 }, () => checkSite(lab, lab.site(nat), proto, port));
      }
    }
  });
});

test('symmetric-sequential hands out consecutive ports across flows and protocols', { timeout: 30_000 }, async (t) => {
  if (!(await requireLab(t))) return;
  await withLab({ sites: [{ name: 'seq', nat: 'symmetric-sequential' }], publicHosts: ['obsA', 'obsB'] }, async (lab) => {
    const observers = ['obsA', 'obsB'].map((name) => startProbe(lab, lab.publicHost(name), ['observe', String(observerPort)]));
    for (const observer of observers) await observer.lines.nextJson(5_000);
    const target = (name: string): string => `${lab.publicHost(name).address}:${observerPort}`;
    const ports: number[] = [];
    for (const [proto, localPort] of [['udp', 41_000], ['tcp', 41_001], ['udp', 41_002]] as const) {
      // UDP asks obsA a second time from the same local port: same flow, so no new port.
      const targets = proto === 'udp' ? [target('obsA'), target('obsB'), target('obsA')] : [target('obsA'), target('obsB')];
      const client = startProbe(lab, lab.site('seq').host, [`${proto}-client`, String(localPort), '5000', ...targets]);
      const mapped = await client.lines.nextJson(mappedWithinMs);
      client.child.kill('SIGKILL');
      const seen = (mapped.mappings as Array<{ seen: unknown }>).map((m) => endpoint(m.seen).port);
      ports.push(seen[0] ?? NaN, seen[1] ?? NaN);
      if (proto === 'udp') assert.equal(seen[2], seen[0], 'same flow, same mapping');
    }
    const first = ports[0] ?? NaN;
    assert.deepEqual(ports, ports.map((_, i) => 20_000 + ((first - 20_000 + i) % 1000)), `ports ${ports.join(', ')}`);
  });
});
