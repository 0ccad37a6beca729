/**
 * NAT classification logic without sockets: the pure classifiers, and the
 * RFC 5780 test sequence run against a simulated NAT and server.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  classifyAllocation,
  classifyFiltering,
  classifyMapping,
  runTcpDiscovery,
  runUdpDiscovery,
  type BindingOutcome,
  type ChangeFlags,
  type Endpoint,
  type PortSample,
  type TcpProbeIo,
  type UdpProbeIo,
} from '../../src/nat/classify.js';
import { describeNat, type Behaviour, type NatProfile } from '../../src/nat/profile.js';

const PRIMARY = '198.51.100.1';
const ALTERNATE = '198.51.100.2';
const P1 = 3478;
const P2 = 3479;
const SERVER: Endpoint = { address: PRIMARY, port: P1 };
const PUBLIC = '203.0.113.10';
const LOCAL = '192.168.1.2';
const LOCAL_PORT = 40000;
const signal = new AbortController().signal;

type Allocation = 'preserving' | 'sequential' | 'random';

/** A NAT in front of LOCAL:LOCAL_PORT, talking to an RFC 5780 server at PRIMARY/ALTERNATE, P1/P2. */
class SimulatedNat implements UdpProbeIo {
  readonly localPort = LOCAL_PORT;
  readonly localAddresses: string[];
  readonly #mappings = new Map<string, number>();
  readonly #permits = new Set<string>();
  #nextPort = 20000;
  #randomState = 12345;
  #freshLocal = 50000;

  constructor(
    readonly mapping: Behaviour | 'none',
    readonly filtering: Behaviour,
    readonly allocation: Allocation,
    readonly server: { otherAddress: boolean; honoursChange: boolean } = { otherAddress: true, honoursChange: true },
  ) {
    this.localAddresses = mapping === 'none' ? [PUBLIC] : [LOCAL];
  }

  #newPort(local: number): number {
    if (this.allocation === 'preserving' && ![...this.#mappings.values()].includes(local)) return local;
    if (this.allocation === 'random') {
      this.#randomState = (this.#randomState * 1103515245 + 12345) % 2 ** 31;
      return 1024 + (this.#randomState % 60000);
    }
    return this.#nextPort++;
  }

  #map(local: number, to: Endpoint): number {
    if (this.mapping === 'none') return local;
    const key =
      this.mapping === 'endpoint-independent' ? `${local}` : this.mapping === 'address-dependent' ? `${local}>${to.address}` : `${local}>${to.address}:${to.port}`;
    let port = this.#mappings.get(key);
    if (port === undefined) {
      port = this.#newPort(local);
      this.#mappings.set(key, port);
    }
    return port;
  }

  #passes(from: Endpoint): boolean {
    if (this.mapping === 'none' || this.filtering === 'endpoint-independent') return true;
    return this.filtering === 'address-dependent' ? this.#permits.has(from.address) : this.#permits.has(`${from.address}:${from.port}`);
  }

  async binding(to: Endpoint, change: ChangeFlags | undefined): Promise<BindingOutcome | undefined> {
    const port = this.#map(LOCAL_PORT, to);
    this.#permits.add(to.address).add(`${to.address}:${to.port}`);
    const flip = (a: string): string => (a === PRIMARY ? ALTERNATE : PRIMARY);
    const honour = this.server.honoursChange;
    const source = {
      address: honour && change?.changeIp === true ? flip(to.address) : to.address,
      port: honour && change?.changePort === true ? (to.port === P1 ? P2 : P1) : to.port,
    };
    if (!this.#passes(source)) return undefined;
    const other = { address: flip(to.address), port: to.port === P1 ? P2 : P1 };
    return { ok: true, mapped: { address: PUBLIC, port }, source, ...(this.server.otherAddress ? { otherAddress: other } : {}) };
  }

  async hairpin(): Promise<boolean> {
    return this.mapping === 'none';
  }

  async freshMapping(to: Endpoint): Promise<PortSample | undefined> {
    const local = this.#freshLocal++;
    return { local, mapped: this.#map(local, to) };
  }
}

const plan = { allocationSamples: 4, hairpinning: true };

describe('nat: pure classifiers', () => {
  test('mapping per RFC 5780 §4.3', () => {
    const a = { address: PUBLIC, port: 1000 };
    const b = { address: PUBLIC, port: 1001 };
    const c = { address: PUBLIC, port: 1002 };
    assert.equal(classifyMapping(a, a, undefined), 'endpoint-independent');
    assert.equal(classifyMapping(a, b, b), 'address-dependent');
    assert.equal(classifyMapping(a, b, c), 'address-and-port-dependent');
    assert.equal(classifyMapping(a, b, undefined), undefined);
  });

  test('filtering per RFC 5780 §4.4', () => {
    assert.equal(classifyFiltering(true, false), 'endpoint-independent');
    assert.equal(classifyFiltering(false, true), 'address-dependent');
    assert.equal(classifyFiltering(false, false), 'address-and-port-dependent');
  });

  test('port allocation: preserving, sequential with step, random, too few', () => {
    assert.deepEqual(classifyAllocation([{ local: 5, mapped: 5 }, { local: 9, mapped: 9 }, { local: 7, mapped: 7 }]), { kind: 'preserving' });
    assert.deepEqual(classifyAllocation([{ local: 5, mapped: 100 }, { local: 9, mapped: 102 }, { local: 7, mapped: 104 }]), { kind: 'sequential', step: 2 });
    assert.deepEqual(classifyAllocation([{ local: 5, mapped: 100 }, { local: 9, mapped: 99 }, { local: 7, mapped: 98 }]), { kind: 'sequential', step: -1 });
    assert.deepEqual(classifyAllocation([{ local: 5, mapped: 100 }, { local: 9, mapped: 101 }, { local: 7, mapped: 3000 }]), { kind: 'random' });
    assert.deepEqual(classifyAllocation([{ local: 5, mapped: 100 }, { local: 9, mapped: 100 }, { local: 7, mapped: 100 }]), { kind: 'random' });
    assert.equal(classifyAllocation([{ local: 5, mapped: 5 }, { local: 6, mapped: 6 }]), undefined);
  });

  test('describeNat gives the classic names', () => {
    const base: NatProfile = { udpBlocked: false, isPublic: false };
    assert.equal(describeNat({ udpBlocked: true, isPublic: false }), 'UDP blocked');
    assert.equal(describeNat({ ...base, isPublic: true }), 'open internet');
    assert.equal(describeNat({ ...base, mapping: 'endpoint-independent', filtering: 'endpoint-independent' }), 'full cone');
    assert.equal(describeNat({ ...base, mapping: 'endpoint-independent', filtering: 'address-dependent' }), 'restricted cone');
    assert.equal(describeNat({ ...base, mapping: 'endpoint-independent', filtering: 'address-and-port-dependent' }), 'port-restricted cone');
    assert.equal(describeNat({ ...base, mapping: 'address-and-port-dependent', allocation: { kind: 'random' } }), 'symmetric');
    assert.equal(describeNat({ ...base, mapping: 'address-dependent', allocation: { kind: 'sequential', step: 1 } }), 'symmetric sequential');
    assert.equal(describeNat(base), 'unknown');
  });
});

describe('nat: RFC 5780 test sequence against a simulated NAT', () => {
  const cases: Array<{ name: string; mapping: Behaviour | 'none'; filtering: Behaviour; allocation: Allocation; expected: string }> = [
    { name: 'no NAT', mapping: 'none', filtering: 'endpoint-independent', allocation: 'preserving', expected: 'open internet' },
    { name: 'full cone', mapping: 'endpoint-independent', filtering: 'endpoint-independent', allocation: 'preserving', expected: 'full cone' },
    { name: 'restricted cone', mapping: 'endpoint-independent', filtering: 'address-dependent', allocation: 'preserving', expected: 'restricted cone' },
    { name: 'port-restricted cone', mapping: 'endpoint-independent', filtering: 'address-and-port-dependent', allocation: 'preserving', expected: 'port-restricted cone' },
    { name: 'address-dependent mapping', mapping: 'address-dependent', filtering: 'address-dependent', allocation: 'random', expected: 'symmetric' },
    { name: 'symmetric, random ports', mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'random', expected: 'symmetric' },
    { name: 'symmetric, sequential ports', mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'sequential', expected: 'symmetric sequential' },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const { profile, otherAddress } = await runUdpDiscovery(new SimulatedNat(c.mapping, c.filtering, c.allocation), SERVER, plan, signal);
      assert.equal(profile.udpBlocked, false);
      assert.equal(profile.isPublic, c.mapping === 'none');
      assert.equal(profile.publicAddress, PUBLIC);
      assert.equal(profile.mapping, c.mapping === 'none' ? 'endpoint-independent' : c.mapping);
      assert.equal(profile.filtering, c.filtering);
      assert.equal(profile.hairpinning, c.mapping === 'none');
      assert.equal(profile.allocation?.kind, c.allocation);
      if (c.allocation === 'sequential') assert.deepEqual(profile.allocation, { kind: 'sequential', step: 1 });
      assert.equal(describeNat(profile), c.expected);
      assert.deepEqual(otherAddress, { address: ALTERNATE, port: P2 });
      assert.equal(profile.notes, undefined);
    });
  }

  test('silence on test I means UDP is blocked', async () => {
    const io: UdpProbeIo = {
      localPort: LOCAL_PORT,
      localAddresses: [LOCAL],
      binding: async () => undefined,
      hairpin: async () => assert.fail('no hairpin test when blocked'),
      freshMapping: async () => assert.fail('no allocation test when blocked'),
    };
    const { profile } = await runUdpDiscovery(io, SERVER, plan, signal);
    assert.deepEqual(profile, { udpBlocked: true, isPublic: false });
    assert.equal(describeNat(profile), 'UDP blocked');
  });

  test('a server without OTHER-ADDRESS: public address and allocation only, with a note', async () => {
    const nat = new SimulatedNat('endpoint-independent', 'endpoint-independent', 'preserving', { otherAddress: false, honoursChange: true });
    const { profile, otherAddress } = await runUdpDiscovery(nat, SERVER, plan, signal);
    assert.equal(profile.mapping, undefined);
    assert.equal(profile.filtering, undefined);
    assert.equal(otherAddress, undefined);
    assert.deepEqual(profile.allocation, { kind: 'preserving' });
    assert.match(profile.notes?.[0] ?? '', /OTHER-ADDRESS/);
    // And how to get the full answer: a broker with a second address.
    assert.match(profile.notes?.[1] ?? '', /full RFC 5780 answer.*nattrav broker --listen IP:PORT --alternate IP2/);
  });

  test('a server that ignores CHANGE-REQUEST does not make a full cone', async () => {
    const nat = new SimulatedNat('endpoint-independent', 'address-and-port-dependent', 'preserving', { otherAddress: true, honoursChange: false });
    const { profile } = await runUdpDiscovery(nat, SERVER, plan, signal);
    assert.equal(profile.filtering, undefined);
    assert.equal(profile.mapping, 'endpoint-independent');
    assert.ok(profile.notes?.some((n) => /change IP and port/.test(n)));
  });

  test('a 420 to CHANGE-REQUEST leaves filtering unmeasured', async () => {
    const io: UdpProbeIo = {
      localPort: LOCAL_PORT,
      localAddresses: [LOCAL],
      binding: async (to, change) =>
        change !== undefined
          ? { ok: false, code: 420, reason: 'Unknown Attribute' }
          : { ok: true, mapped: { address: PUBLIC, port: 1000 }, source: to, otherAddress: { address: ALTERNATE, port: P2 } },
      hairpin: async () => false,
      freshMapping: async () => undefined,
    };
    const { profile } = await runUdpDiscovery(io, SERVER, plan, signal);
    assert.equal(profile.filtering, undefined);
    assert.equal(profile.mapping, 'endpoint-independent');
    assert.equal(profile.allocation, undefined);
    assert.ok(profile.notes?.some((n) => /420/.test(n)));
  });
});

describe('nat: TCP test sequence', () => {
  /** A TCP NAT: mapping keyed like SimulatedNat's, ports from a counter. */
  function tcpNat(mapping: Behaviour, blocked = false): TcpProbeIo & { calls: Endpoint[] } {
    const mappings = new Map<string, number>();
    let next = 30000;
    const calls: Endpoint[] = [];
    const map = (local: number, to: Endpoint): number => {
      const key = mapping === 'endpoint-independent' ? `${local}` : mapping === 'address-dependent' ? `${local}>${to.address}` : `${local}>${to.address}:${to.port}`;
      if (!mappings.has(key)) mappings.set(key, next++);
      return mappings.get(key) as number;
    };
    let fresh = 60000;
    return {
      calls,
      sharedBinding: async (to) => {
        calls.push(to);
        return blocked ? undefined : { address: PUBLIC, port: map(1, to) };
      },
      freshMapping: async (to) => (blocked ? undefined : { local: fresh, mapped: map(fresh++, to) }),
    };
  }
  const other = { address: ALTERNATE, port: P2 };

  for (const mapping of ['endpoint-independent', 'address-dependent', 'address-and-port-dependent'] as const) {
    test(`mapping ${mapping}`, async () => {
      const { tcp } = await runTcpDiscovery(tcpNat(mapping), SERVER, other, 4, signal);
      assert.equal(tcp.blocked, false);
      assert.equal(tcp.mapping, mapping);
      assert.deepEqual(tcp.allocation, { kind: 'sequential', step: 1 });
    });
  }

  test('no connection at all is "blocked"', async () => {
    const { tcp } = await runTcpDiscovery(tcpNat('endpoint-independent', true), SERVER, other, 4, signal);
    assert.deepEqual(tcp, { blocked: true });
  });

  test('without an alternate address only port dependence can be proven', async () => {
    const nat = tcpNat('address-and-port-dependent');
    const { tcp } = await runTcpDiscovery(nat, SERVER, undefined, 4, signal);
    assert.equal(tcp.mapping, 'address-and-port-dependent');
    assert.deepEqual(nat.calls[1], { address: PRIMARY, port: P1 + 1 });
    const cone = await runTcpDiscovery(tcpNat('endpoint-independent'), SERVER, undefined, 4, signal);
    assert.equal(cone.tcp.mapping, undefined);
    assert.match(cone.notes[0] ?? '', /alternate address/);
  });
});
