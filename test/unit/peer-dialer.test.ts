import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Socket } from 'node:net';
import type { HostPort } from '../../src/common/endpoint.js';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { connect } from '../../src/peer/connect.js';
import { claimUnusable, DIRECT_DIALER, registerTransportOf, type Dialer } from '../../src/peer/dialer.js';
import { STRATEGY_NAMES, strategiesInMask, strategyMask } from '../../src/nat/strategy.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, getU32Attr } from '../../src/wire/nattrav.js';
import { startBroker, startRecipient, until } from '../helpers/loopback.js';

/** A dialer that records its targets and connects directly, under another kind (as a proxy would). */
function recordingDialer(kind: string): Dialer & { targets: HostPort[] } {
  const targets: HostPort[] = [];
  return {
    kind,
    targets,
    dial: (target: HostPort, signal: AbortSignal): Promise<Socket> => {
      targets.push(target);
      return DIRECT_DIALER.dial(target, signal);
    },
  };
}

describe('the dialer seam', () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('registration, the recipient\'s exchange and the initiator\'s exchange and connect-out all go through the dialer', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const port = broker.address().port;
    const recipientDialer = recordingDialer('test-proxy');
    const { server, accepted } = await startRecipient(address, 'nattrav://dialed', { dialer: recipientDialer, tls: false });
    closers.push(() => server.close());
    // A non-direct dialer passes only TCP: the registration runs over the control connection.
    assert.deepEqual(recipientDialer.targets, [{ host: '127.0.0.1', port }]);
    const initiatorDialer = recordingDialer('test-proxy');
    const socket = await connect({ broker: address, uri: 'nattrav://dialed', dialer: initiatorDialer, tls: false });
    closers.push(() => socket.destroy());
    await until(() => accepted.length === 1, 5000, 'the recipient to accept');
    assert.deepEqual(initiatorDialer.targets[0], { host: '127.0.0.1', port }, 'the initiator dialled the broker through its dialer');
    // Strategies needing our own sockets were claimed failed: connecting out (public) or the relay remain.
    const path = socket.nattrav.path;
    assert.ok(path === 'public' || path === 'relay', `path ${path}`);
    if (path === 'public') assert.ok(initiatorDialer.targets.some((t) => t.port === accepted[0]?.localPort), 'the initiator dialled the recipient through its dialer');
    // Control connection plus the Join of the attempt.
    assert.ok(recipientDialer.targets.length >= 2, `the recipient's Join went through its dialer (${recipientDialer.targets.length} dials)`);
  });

  test('a failing dialer\'s error reaches the caller unchanged', async () => {
    const { broker, address } = await startBroker();
    closers.push(() => broker.close());
    const failing: Dialer = {
      kind: 'test-proxy',
      dial: () => Promise.reject(new NattravError(ErrorCode.InvalidArgument, 'the test dialer refuses')),
    };
    await assert.rejects(connect({ broker: address, uri: 'nattrav://nobody', dialer: failing, tls: false, maxAttempts: 1 }), /the test dialer refuses/);
  });

  test('claimUnusable: a Connect through a proxy claims what needs our own sockets, over the web all but the relay; merged into one FAILED-STRATEGIES', () => {
    const claimed = (kind: string | undefined, before?: number): { names: string[]; count: number } => {
      const request = StunMessage.request(Method.Connect);
      if (before !== undefined) addU32(request, AttrType.FailedStrategies, before);
      claimUnusable(request, kind === undefined ? undefined : recordingDialer(kind));
      return { names: strategiesInMask(getU32Attr(request, AttrType.FailedStrategies) ?? 0), count: request.getAll(AttrType.FailedStrategies).length };
    };
    assert.deepEqual(claimed('ws').names, STRATEGY_NAMES.filter((name) => name !== 'relay'), 'over the web: every strategy but the relay');
    assert.deepEqual(claimed('wss').names, claimed('ws').names);
    assert.deepEqual(claimed('socks5').names, ['lan', 'reversal', 'direct', 'predicted', 'birthday', 'portmap'], 'through a SOCKS5 proxy: public, relay and socks5-bind remain');
    // An earlier failure (relay) stays claimed, in the same one attribute.
    assert.deepEqual(claimed('ws', strategyMask(['relay'])), { names: [...STRATEGY_NAMES], count: 1 });
    assert.deepEqual(claimed('direct', strategyMask(['direct'])), { names: ['direct'], count: 1 });
    assert.deepEqual(claimed(undefined), { names: [], count: 0 });
  });

  test('registerTransportOf: a proxy or tunnel turns auto into tcp and refuses udp', () => {
    const proxy = recordingDialer('socks5');
    assert.equal(registerTransportOf(undefined, proxy), 'tcp');
    assert.equal(registerTransportOf('auto', proxy), 'tcp');
    assert.equal(registerTransportOf('tcp', proxy), 'tcp');
    assert.throws(() => registerTransportOf('udp', proxy), /registerTransport 'udp' cannot work through socks5/);
    assert.equal(registerTransportOf(undefined, undefined), 'auto');
    assert.equal(registerTransportOf('udp', DIRECT_DIALER), 'udp');
    assert.throws(() => registerTransportOf('smoke', undefined), /registerTransport: expected 'auto', 'udp' or 'tcp', got smoke/);
  });
});
