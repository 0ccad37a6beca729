/**
 * The port mapper's decisions on a fake clock: the NAT-PMP/PCP client over a fake link
 * (retransmission times, PCP-to-NAT-PMP fallback, the nonce kept for renewal and deletion,
 * the epoch that reveals a rebooted gateway), the discovery budget, and the PortMapper's
 * schedule (renew at half the lease, re-add what the gateway lost, retry with backoff, delete
 * on close) over fake backends.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { systemClock } from '../../src/common/clock.js';
import { isNattravError } from '../../src/errors.js';
import { DISCOVERY_BUDGET_MS, parseDefaultGateway, probePmp } from '../../src/portmap/discover.js';
import { openGatewayLink, type DatagramLink } from '../../src/portmap/link.js';
import { PortMapper, type GatewayProbe, type PortMapperEvent, type PortMapperIo } from '../../src/portmap/mapper.js';
import { PmpClient } from '../../src/portmap/pmp-client.js';
import { FIRST_RETRY_MS, nextStep, renewAtMs, retryAtMs } from '../../src/portmap/renewal.js';
import type { GrantedMapping, MapRequest, MappingBackend, PortMapProtocol } from '../../src/portmap/types.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';

/** A link whose gateway is a function of the request (undefined: no answer). */
class FakeLink implements DatagramLink {
  readonly localAddress = '192.168.1.2';
  readonly sent: Array<{ atMs: number; bytes: Buffer }> = [];
  #handler: ((bytes: Buffer) => void) | undefined;
  closed = false;

  constructor(
    readonly clock: FakeClock,
    public gateway: (request: Buffer) => Buffer | undefined,
  ) {}

  send(bytes: Buffer): void {
    this.sent.push({ atMs: this.clock.now(), bytes: Buffer.from(bytes) });
    const answer = this.gateway(bytes);
    if (answer !== undefined) queueMicrotask(() => this.#handler?.(answer));
  }

  onMessage(handler: ((bytes: Buffer) => void) | undefined): void {
    this.#handler = handler;
  }

  close(): void {
    this.closed = true;
  }
}

/** A PCP gateway like miniupnpd: MAP and ANNOUNCE answered, epoch from `epoch()`. */
function pcpGateway(epoch: () => number, external = '203.0.113.10'): (request: Buffer) => Buffer | undefined {
  return (request) => {
    if (request[0] !== 2) return undefined;
    const out = Buffer.alloc(request[1] === 1 ? 60 : 24);
    out[0] = 2;
    out[1] = (request[1] as number) | 0x80;
    out.writeUInt32BE(request.readUInt32BE(4), 4);
    out.writeUInt32BE(epoch(), 8);
    if (request[1] === 1) {
      request.copy(out, 24, 24, 60);
      out.writeUInt16BE(request.readUInt16BE(40) || request.readUInt16BE(42), 42);
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...external.split('.').map(Number)]).copy(out, 44);
    }
    return out;
  };
}

/** A NAT-PMP-only gateway: version 0 requests answered, anything else UNSUPP_VERSION (RFC 6886 §3.5). */
function natPmpGateway(epoch: () => number): (request: Buffer) => Buffer | undefined {
  return (request) => {
    if (request[0] !== 0) return Buffer.from([0, 128 + (request[1] as number & 0x7f), 0, 1, 0, 0, 0, epoch()]);
    if (request[1] === 0) return Buffer.from([0, 128, 0, 0, 0, 0, 0, epoch(), 203, 0, 113, 10]);
    const out = Buffer.alloc(16);
    out[1] = 128 + (request[1] as number);
    out.writeUInt32BE(epoch(), 4);
    request.copy(out, 8, 4, 6);
    out.writeUInt16BE(request.readUInt16BE(6) || 40000, 10);
    request.copy(out, 12, 8, 12);
    return out;
  };
}

const REQUEST: MapRequest = { transport: 'tcp', internalPort: 4000, suggestedExternalPort: 0, lifetimeSeconds: 30 };

describe('PmpClient on a fake link', () => {
  test('PCP: the nonce of a mapping is repeated by its renewal and its deletion', async () => {
    const clock = new FakeClock();
    const link = new FakeLink(clock, pcpGateway(() => 100));
    const client = new PmpClient({ link, gateway: '192.168.1.1', clock });
    const granted = await client.add(REQUEST, undefined);
    assert.deepEqual(granted, { externalAddress: '203.0.113.10', externalPort: 4000, lifetimeSeconds: 30, gatewayReset: false });
    await client.add(REQUEST, granted);
    await client.remove(REQUEST, granted);
    const nonces = link.sent.map((s) => s.bytes.subarray(24, 36).toString('hex'));
    assert.equal(new Set(nonces).size, 1, 'one nonce for map, renewal and deletion');
    assert.equal(link.sent[2]?.bytes.readUInt32BE(4), 0, 'the deletion asks for lifetime 0');
    assert.equal(link.sent[1]?.bytes.readUInt16BE(42), 4000, 'the renewal suggests the port it holds');
  });

  test('PCP: a renewal answer whose epoch went back says the gateway lost its state', async () => {
    const clock = new FakeClock();
    let epoch = 1000;
    const link = new FakeLink(clock, pcpGateway(() => epoch));
    const client = new PmpClient({ link, gateway: '192.168.1.1', clock });
    const granted = await client.add(REQUEST, undefined);
    await clock.advance(15_000);
    epoch = 1015;
    assert.equal((await client.add(REQUEST, granted)).gatewayReset, false);
    assert.equal(await client.exists(REQUEST, granted), true, 'ANNOUNCE with a consistent epoch');
    await clock.advance(15_000);
    epoch = 3; // miniupnpd restarted
    assert.equal(await client.exists(REQUEST, granted), false);
    assert.equal(link.sent.at(-1)?.bytes[1], 0, 'exists() asks with a PCP ANNOUNCE');
  });

  test('a NAT-PMP-only gateway: UNSUPP_VERSION to PCP makes the client fall back and stay on NAT-PMP', async () => {
    const clock = new FakeClock();
    const link = new FakeLink(clock, natPmpGateway(() => 50));
    const client = new PmpClient({ link, gateway: '192.168.1.1', clock });
    assert.equal(client.protocol, 'pcp');
    const granted = await client.add(REQUEST, undefined);
    assert.equal(client.protocol, 'nat-pmp');
    assert.deepEqual(granted, { externalAddress: '203.0.113.10', externalPort: 40000, lifetimeSeconds: 30, gatewayReset: false });
    assert.deepEqual(link.sent.map((s) => s.bytes[0]), [2, 0, 0], 'PCP MAP, then NAT-PMP map and address');
    await client.remove(REQUEST, granted);
    assert.equal(link.sent.at(-1)?.bytes.toString('hex'), '000200000fa0000000000000', 'NAT-PMP deletion: lifetime 0, external port 0 (§3.4)');
  });

  test('no answer: sent at 0, 250, 750 and 1750 ms, then ERR_TIMEOUT naming the gateway at 2000 ms', async () => {
    const clock = new FakeClock();
    const link = new FakeLink(clock, () => undefined);
    const client = new PmpClient({ link, gateway: '192.168.1.1', clock });
    const start = clock.now();
    const pending = client.add(REQUEST, undefined);
    const outcome = pending.then(() => 'resolved', (err: unknown) => err);
    await clock.advance(2_000);
    const err = await outcome;
    assert.ok(isNattravError(err, 'ERR_TIMEOUT'), String(err));
    assert.match((err as Error).message, /timed out after 2000 ms while asking for a PCP mapping \(gateway 192\.168\.1\.1\)/);
    assert.deepEqual(link.sent.map((s) => s.atMs - start), [0, 250, 750, 1750]);
    assert.equal(clock.pending, 0, 'no timer left behind');
  });

  test('a gateway error is surfaced at once with its result name', async () => {
    const clock = new FakeClock();
    const link = new FakeLink(clock, (request) => {
      const out = pcpGateway(() => 1)(request) as Buffer;
      out[3] = 2; // NOT_AUTHORIZED
      return out;
    });
    const client = new PmpClient({ link, gateway: '192.168.1.1', clock });
    await assert.rejects(client.add(REQUEST, undefined), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /NOT_AUTHORIZED/.test(err.message));
    assert.equal(link.sent.length, 1);
  });
});

describe('discovery', () => {
  test('probePmp: a silent gateway costs exactly the 250 ms budget; a miniupnpd-like one answers both', async () => {
    const clock = new FakeClock();
    const silent = new FakeLink(clock, () => undefined);
    let done = false;
    const result = probePmp(silent, clock).then((r) => {
      done = true;
      return r;
    });
    await clock.advance(DISCOVERY_BUDGET_MS - 1);
    assert.equal(done, false);
    await clock.advance(1);
    assert.deepEqual(await result, { pcp: false, natPmp: false });

    const both = new FakeLink(clock, (request) => (request[0] === 2 ? pcpGateway(() => 9)(request) : natPmpGateway(() => 9)(request)));
    assert.deepEqual(await probePmp(both, clock), { pcp: true, natPmp: true, externalAddress: '203.0.113.10' });
    const pmpOnly = new FakeLink(clock, natPmpGateway(() => 9));
    assert.deepEqual(await probePmp(pmpOnly, clock), { pcp: false, natPmp: true, externalAddress: '203.0.113.10' });
  });

  test('with real sockets: a loopback "gateway" that never answers delays discovery by the budget only', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    const link = await openGatewayLink('127.0.0.1', (silent.address() as AddressInfo).port);
    try {
      const started = performance.now();
      assert.deepEqual(await probePmp(link, systemClock), { pcp: false, natPmp: false });
      const ms = performance.now() - started;
      assert.ok(ms >= DISCOVERY_BUDGET_MS - 5 && ms < DISCOVERY_BUDGET_MS + 750, `took ${ms} ms`);
    } finally {
      link.close();
      silent.close();
    }
  });

  test('the default gateway is read from /proc/net/route text', () => {
    const text = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
      'eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n' +
      'eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n';
    assert.equal(parseDefaultGateway(text), '192.168.1.1');
    assert.equal(parseDefaultGateway(text.split('\n').slice(0, 2).join('\n')), undefined);
  });
});

/** A backend whose behaviour the test scripts, recording when each call came. */
class FakeBackend implements MappingBackend {
  readonly calls: Array<{ atMs: number; call: string }> = [];
  readonly gateway = '192.168.1.1';
  present = true;
  failAdds = 0;
  lifetime = 30;
  constructor(
    readonly protocol: PortMapProtocol,
    readonly clock: FakeClock,
  ) {}

  async externalAddress(): Promise<string> {
    return '203.0.113.10';
  }

  async add(request: MapRequest, previous: GrantedMapping | undefined): Promise<GrantedMapping> {
    this.calls.push({ atMs: this.clock.now(), call: previous === undefined ? 'add' : 'renew' });
    if (this.failAdds > 0) {
      this.failAdds--;
      throw new Error(`${this.protocol} refused`);
    }
    this.present = true;
    return { externalAddress: '203.0.113.10', externalPort: request.internalPort + 1, lifetimeSeconds: this.lifetime, gatewayReset: false };
  }

  async exists(): Promise<boolean> {
    this.calls.push({ atMs: this.clock.now(), call: 'exists' });
    return this.present;
  }

  async remove(): Promise<void> {
    this.calls.push({ atMs: this.clock.now(), call: 'remove' });
    this.present = false;
  }

  close(): void {}
}

/** `gateway` null: the host has no default route. */
function fakeIo(backends: FakeBackend[], gateway: string | null = '192.168.1.1'): PortMapperIo {
  return {
    defaultGateway: async () => gateway ?? undefined,
    probe: async (gw, _budgetMs, scope): Promise<GatewayProbe> => ({
      answered: { gateway: gw, protocols: backends.map((b) => b.protocol).filter((p) => scope.protocols.includes(p)) },
      open: async (protocol) => backends.find((b) => b.protocol === protocol) as FakeBackend,
      close: () => undefined,
    }),
  };
}

describe('PortMapper schedule on a fake clock', () => {
  test('renews at half the lease after checking the mapping exists; re-adds what the gateway lost', async () => {
    const clock = new FakeClock();
    const backend = new FakeBackend('pcp', clock);
    const mapper = new PortMapper({ clock, io: fakeIo([backend]), lifetimeSeconds: 30 });
    const events: PortMapperEvent[] = [];
    mapper.on('event', (e: PortMapperEvent) => events.push(e));
    const start = clock.now();
    const mapping = await mapper.map(4000);
    assert.deepEqual({ ...mapping }, { protocol: 'pcp', transport: 'tcp', internalPort: 4000, externalAddress: '203.0.113.10', externalPort: 4001, lifetimeSeconds: 30, state: 'active' });
    await clock.advance(14_999);
    assert.deepEqual(backend.calls.map((c) => c.call), ['add']);
    await clock.advance(1);
    assert.deepEqual(backend.calls.map((c) => [c.call, c.atMs - start]), [['add', 0], ['exists', 15_000], ['renew', 15_000]]);
    assert.equal(events.at(-1)?.type, 'renewed');
    backend.present = false; // the gateway rebooted
    await clock.advance(15_000);
    assert.equal(events.at(-1)?.type, 'readded');
    assert.deepEqual(events.map((e) => e.type), ['mapped', 'renewed', 'readded']);
    await mapper.close();
    assert.equal(backend.calls.at(-1)?.call, 'remove');
    assert.equal(events.at(-1)?.type, 'deleted');
    assert.equal(clock.pending, 0, 'no renewal timer after close');
    assert.deepEqual(mapper.mappings, []);
  });

  test('unmap deletes one mapping and stops its renewals; the others go on', async () => {
    const clock = new FakeClock();
    const backend = new FakeBackend('nat-pmp', clock);
    const mapper = new PortMapper({ clock, io: fakeIo([backend]), lifetimeSeconds: 30 });
    const first = await mapper.map(4000);
    await mapper.map(4100, { transport: 'udp' });
    await mapper.unmap(first);
    assert.deepEqual(mapper.mappings.map((m) => [m.transport, m.internalPort]), [['udp', 4100]]);
    backend.calls.length = 0;
    await clock.advance(15_000);
    assert.deepEqual(backend.calls.map((c) => c.call), ['exists', 'renew'], 'only the UDP mapping is renewed');
    await mapper.close();
  });

  test('a failed renewal is retried with doubling waits, then the schedule resumes', async () => {
    const clock = new FakeClock();
    const backend = new FakeBackend('upnp', clock);
    backend.lifetime = 600;
    const mapper = new PortMapper({ clock, io: fakeIo([backend]) });
    const events: string[] = [];
    mapper.on('event', (e: PortMapperEvent) => events.push(e.type));
    const start = clock.now();
    await mapper.map(4000);
    backend.failAdds = 3;
    await clock.advance(300_000 + 1_000 + 2_000 + 4_000);
    const renewals = backend.calls.filter((c) => c.call === 'renew').map((c) => c.atMs - start);
    assert.deepEqual(renewals, [300_000, 301_000, 303_000, 307_000]);
    assert.deepEqual(events, ['mapped', 'renew-failed', 'renew-failed', 'renew-failed', 'renewed']);
    await mapper.close();
  });

  test('a gateway down for long: once it is back the mapping is re-added within one renewal interval', async () => {
    const clock = new FakeClock();
    const backend = new FakeBackend('pcp', clock);
    backend.lifetime = 20;
    const mapper = new PortMapper({ clock, io: fakeIo([backend]), lifetimeSeconds: 20 });
    const events: string[] = [];
    mapper.on('event', (e: PortMapperEvent) => events.push(e.type));
    await mapper.map(4000);
    backend.failAdds = Number.MAX_SAFE_INTEGER; // down: every renewal fails
    await clock.advance(300_000);
    assert.ok(events.filter((e) => e === 'renew-failed').length >= 30, 'kept trying at most one renewal interval apart');
    backend.failAdds = 0;
    backend.present = false; // back, with no mappings
    await clock.advance(10_000);
    assert.equal(events.at(-1), 'readded');
    await mapper.close();
  });

  test('the first protocol that maps wins; when none can, the error names each protocol\'s failure', async () => {
    const clock = new FakeClock();
    const pcp = new FakeBackend('pcp', clock);
    const upnp = new FakeBackend('upnp', clock);
    pcp.failAdds = 1;
    const mapper = new PortMapper({ clock, io: fakeIo([pcp, upnp]) });
    assert.equal((await mapper.map(4000)).protocol, 'upnp');
    pcp.failAdds = 1;
    upnp.failAdds = 1;
    await assert.rejects(mapper.map(4100), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /no protocol could map tcp port 4100 on 192\.168\.1\.1 \(pcp: pcp refused; upnp: upnp refused\)/.test(err.message));
    // With one protocol, its own error comes through unchanged.
    const only = new PortMapper({ clock, io: fakeIo([pcp]) });
    pcp.failAdds = 1;
    await assert.rejects(only.map(4300), /^Error: pcp refused$/);
    await only.close();
    await mapper.close();
    await assert.rejects(mapper.map(4200), (err: unknown) => isNattravError(err, 'ERR_CLOSED'));
  });

  test('only the protocols asked for are used; no gateway means none answered', async () => {
    const clock = new FakeClock();
    const mapper = new PortMapper({ clock, io: fakeIo([new FakeBackend('pcp', clock), new FakeBackend('upnp', clock)]), protocols: ['upnp'] });
    assert.deepEqual((await mapper.discover()).protocols, ['upnp']);
    await mapper.close();
    const none = new PortMapper({ clock, io: fakeIo([], null) });
    assert.deepEqual(await none.discover(), { gateway: undefined, protocols: [] });
    await assert.rejects(none.map(4000), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /no port-mapping protocol answered/.test(err.message));
    await none.close();
    assert.throws(() => new PortMapper({ protocols: ['socks' as PortMapProtocol] }), /unknown port-mapping protocol "socks"/);
    assert.throws(() => new PortMapper({ lifetimeSeconds: 0 }), /lifetimeSeconds must be a positive/);
  });

  test('closing while a renewal is on the wire deletes what that renewal made', async () => {
    const clock = new FakeClock();
    const backend = new FakeBackend('pcp', clock);
    const mapper = new PortMapper({ clock, io: fakeIo([backend]) });
    await mapper.map(4000);
    let release: () => void = () => undefined;
    backend.exists = () => new Promise<boolean>((resolve) => (release = () => resolve(true)));
    await clock.advance(15_000);
    await mapper.close();
    release();
    await settle();
    await settle();
    assert.deepEqual(backend.calls.map((c) => c.call).slice(-3), ['remove', 'renew', 'remove']);
    assert.equal(backend.present, false);
  });
});

describe('renewal schedule (pure)', () => {
  test('half the lease; permanent leases checked every 2 minutes; retries never past halfway to expiry', () => {
    assert.equal(renewAtMs({ lifetimeSeconds: 7200, grantedAtMs: 0 }), 3_600_000);
    assert.equal(renewAtMs({ lifetimeSeconds: 0, grantedAtMs: 5 }), 120_005);
    assert.equal(retryAtMs({ lifetimeSeconds: 7200, grantedAtMs: 0 }, 1, 3_600_000), 3_600_000 + FIRST_RETRY_MS);
    assert.equal(retryAtMs({ lifetimeSeconds: 7200, grantedAtMs: 0 }, 10, 3_600_000), 3_600_000 + 60_000);
    // 4 s left: wait 2 s, not the 60 s backoff.
    assert.equal(retryAtMs({ lifetimeSeconds: 30, grantedAtMs: 0 }, 10, 26_000), 28_000);
    // Expired long ago (the gateway is down): never more than one renewal interval (10 s for a 20 s lease) between tries.
    assert.equal(retryAtMs({ lifetimeSeconds: 20, grantedAtMs: 0 }, 10, 100_000), 110_000);
    assert.equal(retryAtMs({ lifetimeSeconds: 0, grantedAtMs: 0 }, 10, 100_000), 160_000);
    assert.equal(nextStep('active', 'timer'), 'renewing');
    assert.equal(nextStep('renewing', 'failed'), 'retrying');
    assert.equal(nextStep('closed', 'renewed'), 'closed');
  });
});
