/**
 * A recipient's port mapping on loopback (peer/portmap-agent.ts, strategies/portmap.ts): the
 * gateway is a fake PortMapperIo, so no packet leaves for a real gateway. With a mapping the
 * broker plans path `portmap` and the initiator connects to the mapped endpoint; a dead
 * mapping falls back to today's path; close deletes it; a recipient whose broker is on
 * loopback asks no gateway at all; a gateway that never answers delays nothing.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createTcpServer } from 'node:net';
import { after, describe, test } from 'node:test';
import type { GatewayProbe, PortMapperEvent, PortMapperIo } from '../../src/portmap/mapper.js';
import type { GrantedMapping, MapRequest, MappingBackend } from '../../src/portmap/types.js';
import type { StrategyTrace } from '../../src/peer/info.js';
import { createServer, type NattravServer } from '../../src/peer/server.js';
import type { RegisteredEvent } from '../../src/peer/registration.js';
import { isLoopbackHost } from '../../src/peer/portmap-agent.js';
import { echoRecipient, echoes, tempKeyDir } from '../helpers/cluster.js';
import { startBroker, until } from '../helpers/loopback.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** A gateway that grants every mapping on 127.0.0.1 at `externalPort(internal)` and records the calls. */
class LoopbackGateway implements MappingBackend {
  readonly protocol = 'pcp' as const;
  readonly gateway = '127.0.0.1';
  readonly calls: string[] = [];
  constructor(readonly externalPort: (internalPort: number) => number) {}
  async externalAddress(): Promise<string> {
    return '127.0.0.1';
  }
  async add(request: MapRequest, previous: GrantedMapping | undefined): Promise<GrantedMapping> {
    this.calls.push(`${previous === undefined ? 'add' : 'renew'} ${request.internalPort}`);
    return { externalAddress: '127.0.0.1', externalPort: this.externalPort(request.internalPort), lifetimeSeconds: 120, gatewayReset: false };
  }
  async exists(): Promise<boolean> {
    return true;
  }
  async remove(request: MapRequest): Promise<void> {
    this.calls.push(`remove ${request.internalPort}`);
  }
  close(): void {}
}

/**
 * A PortMapperIo that counts what it is asked; `probe` answers with `backend`, or, when none, only
 * once `answer()` is called, and then that nothing answered (a gateway slower than any budget).
 */
function fakeIo(backend: MappingBackend | undefined): PortMapperIo & { asked: string[]; answer(): void } {
  const asked: string[] = [];
  let answer = (): void => undefined;
  const late = new Promise<void>((resolve) => {
    answer = resolve;
  });
  return {
    asked,
    answer: () => answer(),
    defaultGateway: async () => {
      asked.push('defaultGateway');
      return '192.0.2.1';
    },
    probe: (gateway): Promise<GatewayProbe> => {
      asked.push(`probe ${gateway}`);
      if (backend === undefined) return late.then(() => ({ answered: { gateway, protocols: [] }, open: () => Promise.reject(new Error('no protocol')), close: () => undefined }));
      return Promise.resolve({ answered: { gateway, protocols: ['pcp'] }, open: async () => backend, close: () => undefined });
    },
  };
}

/** Resolves once the recipient has registered its mapping (the refresh right after 'mapped'). */
async function mappedAndRegistered(server: NattravServer): Promise<PortMapperEvent> {
  const [event] = (await once(server, 'portmap')) as [PortMapperEvent];
  await new Promise<void>((resolve) => {
    const onRegistered = (registered: RegisteredEvent): void => {
      if (registered.kind !== 'refresh') return;
      server.off('registered', onRegistered);
      resolve();
    };
    server.on('registered', onRegistered);
  });
  return event;
}

describe('path portmap on loopback', () => {
  test('the broker plans portmap first; the initiator connects to the mapped endpoint; close deletes the mapping', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const gateway = new LoopbackGateway((internal) => internal);
    const uri = 'nattrav://mapped';
    const server = createServer({ broker: address, uri, keyDir: await tempKeyDir(closers), portmap: { gateway: '127.0.0.1', io: fakeIo(gateway) } }, (socket) => {
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    server.listen();
    await once(server, 'listening');
    const mapped = await mappedAndRegistered(server);
    assert.equal(mapped.type, 'mapped');
    assert.equal((await broker.registry.get(uri))?.mappedEndpoint?.port, mapped.mapping.externalPort, 'the broker keeps the mapped endpoint');

    const accepted = once(server, 'connection');
    const info = await echoes({ broker: address, uri });
    assert.equal(info.path, 'portmap');
    assert.equal(info.remote.port, mapped.mapping.externalPort, 'the initiator dialled the mapped endpoint');
    assert.deepEqual(info.trace.map((t) => [t.strategy, t.outcome]), [['portmap', 'succeeded']]);
    const [socket] = (await accepted) as [{ nattrav: { path: string; tls: boolean } }];
    assert.equal(socket.nattrav.path, 'portmap');
    assert.equal(socket.nattrav.tls, true, 'the Hello and TLS run on this path as on every path');

    await new Promise<void>((resolve) => server.close(() => resolve()));
    assert.deepEqual(gateway.calls, [`add ${mapped.mapping.internalPort}`, `remove ${mapped.mapping.internalPort}`]);
  });

  test('a mapping that leads nowhere falls back to the usual path, with portmap failed in the trace', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const dead = createTcpServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const deadPort = (dead.address() as { port: number }).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const uri = 'nattrav://mapped-dead';
    const server = createServer({ broker: address, uri, keyDir: await tempKeyDir(closers), portmap: { gateway: '127.0.0.1', io: fakeIo(new LoopbackGateway(() => deadPort)) } }, (socket) => socket.pipe(socket));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    server.listen();
    await once(server, 'listening');
    await mappedAndRegistered(server);
    const trace: StrategyTrace[] = [];
    const info = await echoes({ broker: address, uri, onTrace: (event) => trace.push(event) });
    assert.equal(info.path, 'public');
    assert.deepEqual(
      trace.filter((t) => t.outcome !== 'started').map((t) => [t.strategy, t.outcome]),
      [['portmap', 'failed'], ['public', 'succeeded']],
    );
  });

  test('with the broker on loopback no gateway is asked (the network rule); a silent gateway delays nothing', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const io = fakeIo(undefined);
    const events: PortMapperEvent[] = [];
    const quiet = await echoRecipient({ broker: address, uri: 'nattrav://no-gateway', keyDir: await tempKeyDir(closers), keepaliveMs: 200, portmap: { io } }, closers);
    quiet.on('portmap', (event: PortMapperEvent) => events.push(event));
    let refreshes = 0;
    quiet.on('registered', () => refreshes++);
    await until(() => refreshes >= 2, 5_000, 'two refreshes');
    assert.equal((await echoes({ broker: address, uri: 'nattrav://no-gateway' })).path, 'public');
    assert.deepEqual(io.asked, [], 'nothing was sent towards a gateway');
    assert.deepEqual(events, []);

    // A gateway given explicitly is asked even so, and one that never answers holds up neither registration nor connections.
    const silent = fakeIo(undefined);
    const started = Date.now();
    await echoRecipient({ broker: address, uri: 'nattrav://silent-gateway', keyDir: await tempKeyDir(closers), portmap: { gateway: '127.0.0.1', io: silent } }, closers);
    const info = await echoes({ broker: address, uri: 'nattrav://silent-gateway' });
    assert.equal(info.path, 'public');
    assert.deepEqual(silent.asked, ['probe 127.0.0.1']);
    assert.ok(Date.now() - started < 5_000, `registered and connected in ${Date.now() - started} ms`);
    assert.equal((await broker.registry.get('nattrav://silent-gateway'))?.mappedEndpoint, undefined);
    silent.answer(); // so that closing (which waits for the probe) ends
  });

  test('portmap: false asks nothing; bad settings are refused naming what is wrong', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const io = fakeIo(new LoopbackGateway((p) => p));
    const off = await echoRecipient({ broker: address, uri: 'nattrav://off', keyDir: await tempKeyDir(closers), portmap: false }, closers);
    assert.equal((await echoes({ broker: address, uri: 'nattrav://off' })).path, 'public');
    assert.ok(off.listening);
    assert.deepEqual(io.asked, []);
    for (const [value, word] of [
      [{ gateway: 'router' }, /gateway must be an IPv4 address/],
      [{ protocols: ['upnp', 'smoke-signals'] }, /protocols must be a non-empty list/],
      [{ protocols: [] }, /protocols must be a non-empty list/],
      [{ lifetimeSeconds: 0.5 }, /lifetimeSeconds/],
      ['yes', /expected true, false or/],
    ] as const) {
      assert.throws(
        () => createServer({ broker: address, uri: 'nattrav://bad', portmap: value as unknown as false }),
        (err: Error & { code?: string }) => err.code === 'ERR_INVALID_ARGUMENT' && word.test(err.message),
        JSON.stringify(value),
      );
    }
  });

  test('loopback broker addresses are recognised', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', '0:0:0:0:0:0:0:1', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(host), true, host);
    for (const host of ['203.0.113.1', '10.0.0.1', '::2', 'broker.example', '128.0.0.1']) assert.equal(isLoopbackHost(host), false, host);
  });
});
