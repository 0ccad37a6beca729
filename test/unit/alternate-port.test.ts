/**
 * The broker announces its alternate port (ALTERNATE-PORT in its final answers); peers
 * send their mapping probes there, not to the broker's port + 1.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import { connect } from '../../src/peer/connect.js';
import { alternatePortOf } from '../../src/peer/exchange.js';
import { startBroker, startRecipient } from '../helpers/loopback.js';

const keyDir = mkdtempSync(join(tmpdir(), 'nattrav-altport-'));

/** A TCP and UDP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('the broker announces its alternate port', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(keyDir, { recursive: true, force: true });
  });

  test('after the first attempt, both peers probe the announced port, and the broker sees their probes', async () => {
    const alternatePort = await freePort();
    const { broker, address } = await startBroker({ alternatePort });
    closers.push(() => broker.close());
    const [host, port] = address.split(':');
    const target = { host: host as string, port: Number(port) };
    assert.notEqual(alternatePort, target.port + 1);
    assert.equal(alternatePortOf(target), target.port + 1, 'nothing announced yet: port + 1');
    const scheduled: Array<Extract<BrokerEvent, { type: 'scheduled' }>> = [];
    broker.on('event', (event: BrokerEvent) => {
      if (event.type === 'scheduled') scheduled.push(event);
    });
    const { server } = await startRecipient(address, 'nattrav://alt', { keyDir });
    closers.push(() => server.close());
    const first = await connect({ broker: address, uri: 'nattrav://alt', knownKeysFile: false });
    first.destroy();
    assert.equal(alternatePortOf(target), alternatePort, 'the first answer announced it');
    const second = await connect({ broker: address, uri: 'nattrav://alt', knownKeysFile: false });
    second.destroy();
    assert.equal(scheduled.length, 2);
    // The broker waits up to 1 s (MAPPING_WAIT_MS) for the mapping probes of both sides. The first
    // attempt's probes went to port + 1, where nothing listens: it waited the whole second. The
    // second attempt's probes reached the announced port: it did not wait for them.
    assert.ok(Number(scheduled[0]?.setupMs) >= 990, `first attempt: ${String(scheduled[0]?.setupMs)} ms`);
    assert.ok(Number(scheduled[1]?.setupMs) < 990, `second attempt: ${String(scheduled[1]?.setupMs)} ms`);
  });
});
