/**
 * `discoverNat()` when a transport gets no answer, on loopback: "UDP blocked"
 * only when TCP reaches the server; ERR_BROKER_UNREACHABLE when nothing
 * answers, or when UDP is silent and the TCP tests are off (a UDP block cannot
 * be told from a server that is down).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { discoverNat } from '../../src/nat/discovery.js';
import { describeNat } from '../../src/nat/profile.js';
import { closedPort, tcpOnlyStunServer, udpOnlyStunServer, type HalfServer } from './stun-responders.js';

/** Short UDP timing: one send, 150 ms of silence per unanswered test (loopback answers in well under 1 ms). */
const FAST = { udpRtoMs: 50, udpTransmissions: 1, udpLastWaitMs: 150, tcpProbeTimeoutMs: 500 } as const;

describe('discoverNat: reachability of the server', () => {
  let tcpOnly: HalfServer;
  let udpOnly: HalfServer;
  before(async () => {
    tcpOnly = await tcpOnlyStunServer();
    udpOnly = await udpOnlyStunServer();
  });
  after(async () => {
    await tcpOnly?.close();
    await udpOnly?.close();
  });

  test('nothing listening on UDP or TCP: ERR_BROKER_UNREACHABLE naming the server and both transports', async () => {
    const port = await closedPort();
    await assert.rejects(discoverNat({ server: `127.0.0.1:${port}`, ...FAST }), (err: Error & { code?: string; port?: number; address?: string }) => {
      assert.equal(err.code, 'ERR_BROKER_UNREACHABLE');
      assert.equal(err.address, '127.0.0.1');
      assert.equal(err.port, port);
      assert.match(err.message, new RegExp(`neither UDP nor TCP to 127\\.0\\.0\\.1:${port} got an answer`));
      assert.match(err.message, /no UDP answer from 127\.0\.0\.1:\d+ within 150 ms/);
      assert.match(err.message, /TCP: ECONNREFUSED/);
      return true;
    });
  });

  test('UDP silent with the TCP tests off: ERR_BROKER_UNREACHABLE that says it cannot tell', async () => {
    // The TCP-only server's UDP port swallows datagrams: as far as UDP goes, it is down or blocked.
    await assert.rejects(discoverNat({ server: `127.0.0.1:${tcpOnly.port}`, ...FAST, tcp: false }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_BROKER_UNREACHABLE');
      assert.match(err.message, new RegExp(`no UDP answer from 127\\.0\\.0\\.1:${tcpOnly.port}`));
      assert.match(err.message, /UDP may be blocked on the way, or the broker may be down/);
      assert.match(err.message, /drop --no-tcp/);
      return true;
    });
  });

  test('UDP silent, TCP answering: UDP blocked, with the TCP profile', async () => {
    const profile = await discoverNat({ server: `127.0.0.1:${tcpOnly.port}`, ...FAST, allocationSamples: 3 });
    assert.equal(profile.udpBlocked, true);
    assert.equal(describeNat(profile), 'UDP blocked');
    assert.equal(profile.tcp?.blocked, false);
    assert.deepEqual(profile.tcp?.allocation, { kind: 'preserving' });
  });

  test('UDP answering, TCP refused: a profile with TCP blocked, not an error', async () => {
    const profile = await discoverNat({ server: `127.0.0.1:${udpOnly.port}`, ...FAST, allocationSamples: 3 });
    assert.equal(profile.udpBlocked, false);
    assert.equal(profile.isPublic, true);
    assert.equal(profile.tcp?.blocked, true);
  });
});
