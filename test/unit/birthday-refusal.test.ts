/**
 * Birthday's random side gives up as soon as the cone side refuses its spray (a full cone
 * hands unsolicited SYNs to its host, which answers RST), so the plan's next strategy, the
 * cone side listening, runs at once instead of after birthday's limit. The decision is pure
 * (coneRefuses); the spray's use of it is shown on loopback against a port nobody listens on.
 */
import assert from 'node:assert/strict';
import { createServer as createTcpServer } from 'node:net';
import { describe, test } from 'node:test';
import { ErrorCode, NattravError } from '../../src/errors.js';
import type { ExchangeResult } from '../../src/peer/exchange.js';
import { BIRTHDAY_PORTS, REFUSALS_TO_GIVE_UP, birthday, coneRefuses } from '../../src/peer/strategies/birthday.js';

describe('coneRefuses', () => {
  test('many refusals among what was opened: the cone does not filter', () => {
    assert.equal(coneRefuses(REFUSALS_TO_GIVE_UP, REFUSALS_TO_GIVE_UP), true);
    assert.equal(coneRefuses(64, 64), true);
    assert.equal(coneRefuses(64, BIRTHDAY_PORTS), true, 'a quarter of the whole spray');
  });

  test('a few stray refusals, or refusals lost among many silent sockets, are not enough', () => {
    assert.equal(coneRefuses(REFUSALS_TO_GIVE_UP - 1, REFUSALS_TO_GIVE_UP - 1), false);
    assert.equal(coneRefuses(3, 64), false);
    assert.equal(coneRefuses(REFUSALS_TO_GIVE_UP, BIRTHDAY_PORTS), false);
  });
});

test('the random side stops its spray within a round trip when every SYN is refused, naming the full cone', { timeout: 20_000 }, async () => {
  // A port that was free a moment ago: every connect to it is refused, as by a full cone's host.
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const exchange = {
    mapping: { kind: 'random' },
    peerMapping: { kind: 'eim' },
    peerPublicEndpoint: { family: 'IPv4', address: '127.0.0.1', port },
    startDelayMs: 0,
  } as unknown as ExchangeResult;
  const controller = new AbortController();
  const began = Date.now();
  try {
    await assert.rejects(
      birthday({ role: 'initiator', exchange, broker: { host: '127.0.0.1', port: 1 }, signal: controller.signal, verify: () => Promise.resolve() }),
      (err: unknown) => err instanceof NattravError && err.code === ErrorCode.ConnectFailed && /refused \d+ of our \d+ SYNs: its NAT does not filter/.test(err.message),
    );
    // The time limit (here: none but the test's) never came into it.
    assert.ok(Date.now() - began < 5_000, `gave up after ${Date.now() - began} ms`);
  } finally {
    controller.abort(new Error('test over'));
  }
});
