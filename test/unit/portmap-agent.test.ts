/**
 * The recipient's port-mapping agent (peer/portmap-agent.ts) on a fake clock with a fake
 * gateway: what it would register (MAPPED-ENDPOINT) as the mapping is made, re-added on
 * another port after a gateway reboot, fails to renew past its lease, and is deleted; and
 * which inbound connections on the mapped listener go to which waiting attempt.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { test } from 'node:test';
import { AGENT_DISCOVERY_BUDGET_MS, AGENT_RETRY_INITIAL_MS, AGENT_RETRY_MAX_MS, PortmapAgent } from '../../src/peer/portmap-agent.js';
import type { GatewayProbe, PortMapperIo } from '../../src/portmap/mapper.js';
import type { GrantedMapping, MapRequest, MappingBackend } from '../../src/portmap/types.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';

/** A gateway on a fake clock: grants `port`, loses its state on `reboot()`, refuses while `down`. */
class Gateway implements MappingBackend {
  readonly protocol = 'nat-pmp' as const;
  readonly gateway = '192.0.2.1';
  port = 40_000;
  present = false;
  down = false;
  readonly removed: number[] = [];
  async externalAddress(): Promise<string> {
    return '203.0.113.9';
  }
  async add(request: MapRequest, previous: GrantedMapping | undefined): Promise<GrantedMapping> {
    if (this.down) throw new Error('gateway down');
    const reset = previous !== undefined && !this.present;
    this.present = true;
    return { externalAddress: '203.0.113.9', externalPort: this.port, lifetimeSeconds: 60, gatewayReset: reset };
  }
  async exists(): Promise<boolean> {
    if (this.down) throw new Error('gateway down');
    return this.present;
  }
  async remove(request: MapRequest): Promise<void> {
    this.removed.push(request.internalPort);
    this.present = false;
  }
  close(): void {}
}

function io(backend: MappingBackend): PortMapperIo {
  return {
    defaultGateway: async () => '192.0.2.1',
    probe: async (gateway): Promise<GatewayProbe> => ({ answered: { gateway, protocols: ['nat-pmp'] }, open: async () => backend, close: () => undefined }),
  };
}

test('the endpoint to register follows the mapping: made, re-added on another port, lapsed past its lease, deleted', async () => {
  const clock = new FakeClock();
  const gateway = new Gateway();
  const agent = new PortmapAgent({ io: io(gateway), clock, protocols: ['nat-pmp'] });
  const changes: Array<TransportAddress | undefined> = [];
  agent.on('change', (endpoint: TransportAddress | undefined) => changes.push(endpoint));
  try {
    assert.equal(agent.endpoint, undefined, 'nothing before the mapping');
    await agent.start();
    assert.deepEqual(agent.endpoint, { family: 'IPv4', address: '203.0.113.9', port: 40_000 });
    assert.deepEqual(changes, [agent.endpoint], 'a change: registered again at once');

    // The gateway reboots and hands out another port at the renewal (half the lease).
    gateway.present = false;
    gateway.port = 40_500;
    await clock.advance(30_000);
    await settle();
    assert.deepEqual(agent.endpoint, { family: 'IPv4', address: '203.0.113.9', port: 40_500 });
    assert.equal(changes.length, 2);

    // The gateway goes away: the mapping is still advertised while its lease lasts, then no more.
    gateway.down = true;
    await clock.advance(30_000);
    await settle();
    assert.equal((agent.endpoint as TransportAddress | undefined)?.port, 40_500, 'within the lease');
    await clock.advance(31_000);
    await settle();
    assert.equal(agent.endpoint, undefined, 'past the lease nothing is registered');
  } finally {
    gateway.down = false;
    await agent.close();
  }
  assert.equal(gateway.removed.length, 1, 'close deletes the mapping');
  assert.equal(agent.endpoint, undefined);
});

test('inbound connections on the mapped listener go to the attempt that claims them; the rest are closed', async () => {
  const gateway = new Gateway();
  const agent = new PortmapAgent({ io: io(gateway), protocols: ['nat-pmp'] });
  try {
    await agent.start();
    const internal = agent.mapping?.internalPort as number;
    const taken: Socket[] = [];
    const release = agent.claim((socket) => {
      if (socket.remoteAddress !== '127.0.0.2') return false;
      taken.push(socket);
      return true;
    });
    const dialFrom = async (localAddress: string): Promise<Socket> => {
      const socket = netConnect({ host: '127.0.0.1', port: internal, localAddress });
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      return socket;
    };
    const stranger = await dialFrom('127.0.0.3');
    await once(stranger, 'close');
    const peer = await dialFrom('127.0.0.2');
    while (taken.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(taken.length, 1);
    release();
    const late = await dialFrom('127.0.0.2');
    await once(late, 'close');
    assert.equal(taken.length, 1, 'after release no attempt takes it');
    for (const s of [...taken, peer]) s.destroy();
  } finally {
    await agent.close();
  }
});

test('a gateway that did not answer is asked again later (60 s, doubling), with the background discovery budget, until the agent closes', async () => {
  const clock = new FakeClock();
  const gateway = new Gateway();
  let answers = false;
  const budgets: number[] = [];
  const flaky: PortMapperIo = {
    defaultGateway: async () => '192.0.2.1',
    probe: async (gw, budgetMs): Promise<GatewayProbe> => {
      budgets.push(budgetMs);
      return answers ? io(gateway).probe(gw, budgetMs, { protocols: ['nat-pmp'], multicast: false }) : { answered: { gateway: gw, protocols: [] }, open: async () => gateway, close: () => undefined };
    },
  };
  const agent = new PortmapAgent({ io: flaky, clock, protocols: ['nat-pmp'] });
  try {
    await agent.start();
    assert.equal(agent.endpoint, undefined, 'no gateway answered: nothing mapped');
    assert.deepEqual(budgets, [AGENT_DISCOVERY_BUDGET_MS], 'the background discovery waits longer than a command would');
    await clock.advance(AGENT_RETRY_INITIAL_MS);
    await settle();
    assert.equal(budgets.length, 2, 'asked again after the first retry interval');
    answers = true;
    await clock.advance(AGENT_RETRY_INITIAL_MS);
    await settle();
    assert.equal(budgets.length, 2, 'the second wait is twice as long');
    await clock.advance(AGENT_RETRY_INITIAL_MS);
    await settle();
    assert.equal(budgets.length, 3);
    assert.deepEqual(agent.endpoint, { family: 'IPv4', address: '203.0.113.9', port: 40_000 }, 'mapped once the gateway answered');
  } finally {
    await agent.close();
  }
  const after = budgets.length;
  await clock.advance(AGENT_RETRY_MAX_MS);
  await settle();
  assert.equal(budgets.length, after, 'nothing asked after close');
});
