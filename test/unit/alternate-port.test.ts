/**
 * The broker announces its alternate port (ALTERNATE-PORT in registration answers,
 * round-trip probes and final answers); peers send their mapping probes there, not to
 * the broker's port + 1, from their first attempt on.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { BrokerEvent } from '../../src/broker/events.js';
import { connect } from '../../src/peer/connect.js';
import { alternatePortOf, knowsAlternatePort, rememberAlternatePort } from '../../src/peer/alternate-port.js';
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

  test('a recipient learns it from its registration answer; a peer that guessed wrong learns it from the round-trip probe and probes again, in time', async () => {
    const alternatePort = await freePort();
    const { broker, address } = await startBroker({ alternatePort });
    closers.push(() => broker.close());
    const [host, port] = address.split(':');
    const target = { host: host as string, port: Number(port) };
    assert.notEqual(alternatePort, target.port + 1);
    assert.equal(alternatePortOf(target), target.port + 1, 'nothing announced yet: port + 1');
    // Until then a recipient's Join carries no CONNECT-RTT, so the broker's Probe tells it the port.
    assert.equal(knowsAlternatePort(target), false);
    const scheduled: Array<Extract<BrokerEvent, { type: 'scheduled' }>> = [];
    broker.on('event', (event: BrokerEvent) => {
      if (event.type === 'scheduled') scheduled.push(event);
    });
    const { server } = await startRecipient(address, 'nattrav://alt', { keyDir });
    closers.push(() => server.close());
    assert.equal(alternatePortOf(target), alternatePort, 'the registration answer announced it');
    assert.equal(knowsAlternatePort(target), true);

    // Both peers (one process here) guess port + 1, as a peer new to this broker does.
    rememberAlternatePort(target, target.port + 1);
    const first = await connect({ broker: address, uri: 'nattrav://alt', knownKeysFile: false });
    first.destroy();
    assert.equal(alternatePortOf(target), alternatePort, 'the round-trip probe announced it');
    const second = await connect({ broker: address, uri: 'nattrav://alt', knownKeysFile: false });
    second.destroy();
    assert.equal(scheduled.length, 2);
    // The broker waits up to 1 s (MAPPING_WAIT_MS) for the mapping probes of both sides.
    // Probes that went only to port + 1 (nothing listens there) would make it wait the
    // whole second and schedule without knowing the mappings; the probes sent again to
    // the announced port arrive in time.
    for (const [i, event] of scheduled.entries()) {
      assert.ok(event.setupMs < 990, `attempt ${i + 1}: ${event.setupMs} ms`);
      assert.notEqual(event.initiatorMapping, 'unknown', `attempt ${i + 1}: the initiator's probes arrived`);
      assert.notEqual(event.recipientMapping, 'unknown', `attempt ${i + 1}: the recipient's probes arrived`);
    }
  });
});
