/**
 * A recipient caps its concurrent incoming attempts and the sockets they hold, and
 * refuses the excess with a reason (issue 8, part 4). The broker and the attacker
 * run in a child process (helpers/attempt-flood.ts), so the descriptors this
 * process counts in /proc/self/fd are the recipient's.
 */
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCode } from '../../src/errors.js';
import { createServer, ATTEMPT_BASE_SOCKETS, type AttemptRefusal } from '../../src/peer/server.js';
import { birthday } from '../../src/peer/strategies/birthday.js';
import { SocketBudget } from '../../src/peer/strategies/socket-budget.js';
import type { ExchangeResult } from '../../src/peer/exchange.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

/** The next IPC message of `child` of type `type`. */
async function reply<T>(child: ChildProcess, type: string): Promise<T> {
  for (;;) {
    const [message] = (await once(child, 'message')) as [{ type: string }];
    if (message.type === type) return message as T;
  }
}

/** Lets pending I/O callbacks (socket closes) run until `done()` holds. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`still waiting: ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('recipient caps on incoming attempts', () => {
  let keyDir: string;
  before(async () => {
    keyDir = await mkdtemp(join(tmpdir(), 'nattrav-caps-'));
  });
  after(async () => {
    await rm(keyDir, { recursive: true, force: true });
  });

  test('a flood of 40 connects: 4 run at once, 36 are refused with the reason, descriptors stay bounded, a legitimate connect then succeeds', { timeout: 60_000 }, async (t) => {
    const CAP = 4;
    const FLOOD = 40;
    const child = fork(new URL('../helpers/attempt-flood.js', import.meta.url), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    try {
      const { port } = await reply<{ port: number }>(child, 'listening');
      // The cold path's caps: a busy recipient's standby is test/unit/standby-loopback.test.ts's (a warm attempt caught
      // waiting for its probe when the recipient turns busy ends with "closed its standby exchange", not the busy reason).
      const recipient = createServer({ broker: `127.0.0.1:${port}`, uri: 'nattrav://dave', keyDir, maxConcurrentAttempts: CAP, standby: false });
      const connections: Socket[] = [];
      recipient.on('connection', (socket: Socket) => connections.push(socket));
      const refusals: AttemptRefusal[] = [];
      let failed = 0;
      let maxRunning = 0;
      let maxFds = 0;
      recipient.on('attemptFailed', () => failed++);
      recipient.on('attemptRefused', (refusal: AttemptRefusal) => {
        refusals.push(refusal);
        maxRunning = Math.max(maxRunning, recipient.attemptsInProgress);
        maxFds = Math.max(maxFds, openFds());
      });
      recipient.listen();
      await once(recipient, 'listening');
      try {
        const fdsBefore = openFds();
        child.send({ type: 'flood', uri: 'nattrav://dave', count: FLOOD, refusals: FLOOD - CAP });
        const { reasons } = await reply<{ reasons: string[] }>(child, 'refused');
        // Every attacker's Connect that was refused heard why, at once (the admitted ones still hang).
        assert.equal(reasons.length, FLOOD - CAP);
        for (const reason of reasons) assert.equal(reason, `recipient nattrav://dave refused the connection request: recipient busy: ${CAP} attempts in progress`);
        assert.equal(refusals.length, FLOOD - CAP, 'the recipient said so locally for each');
        assert.match(refusals[0]?.reason ?? '', /^recipient busy: 4 attempts in progress$/);
        assert.equal(recipient.attemptsInProgress, CAP);
        assert.ok(maxRunning <= CAP, `at most ${CAP} attempts ran at once (saw ${maxRunning})`);
        assert.equal(recipient.attemptSockets, CAP * ATTEMPT_BASE_SOCKETS);
        // Each admitted attempt holds its Join exchange and its mapping probe: the bound is the
        // sockets reserved per attempt (4) times the cap, whatever the size of the flood.
        const during = Math.max(maxFds, openFds());
        assert.ok(during <= fdsBefore + CAP * ATTEMPT_BASE_SOCKETS, `descriptors during the flood: ${during}, before: ${fdsBefore}, bound: +${CAP * ATTEMPT_BASE_SOCKETS}`);
        t.diagnostic(`recipient descriptors: ${fdsBefore} before, at most ${during} during the flood of ${FLOOD} (bound ${fdsBefore + CAP * ATTEMPT_BASE_SOCKETS})`);

        // The attacker hangs up: the broker abandons its attempts and the recipient's end.
        child.send({ type: 'release' });
        while (failed < CAP) await once(recipient, 'attemptFailed');
        assert.equal(recipient.attemptsInProgress, 0);
        assert.equal(recipient.attemptSockets, 0);
        await until(() => openFds() <= fdsBefore, `descriptors back to ${fdsBefore} (now ${openFds()})`);

        // A legitimate initiator still gets through.
        child.send({ type: 'connect', uri: 'nattrav://dave' });
        const outcome = await Promise.race([reply<{ path: string }>(child, 'connected'), reply<{ message: string }>(child, 'failed').then((f) => assert.fail(f.message))]);
        assert.ok(outcome.path.length > 0);
        await until(() => connections.length === 1, 'the recipient accepted the connection');
      } finally {
        for (const socket of connections) socket.destroy();
        recipient.close();
        await once(recipient, 'close');
      }
    } finally {
      child.send({ type: 'exit' });
      if (child.exitCode === null) await once(child, 'exit');
    }
  });

  test('options are checked', () => {
    assert.throws(() => createServer({ broker: '127.0.0.1:1', uri: 'nattrav://x', maxConcurrentAttempts: 0 }), (err: { code?: string; message: string }) => {
      assert.equal(err.code, ErrorCode.InvalidArgument);
      assert.match(err.message, /maxConcurrentAttempts/);
      return true;
    });
    assert.throws(() => createServer({ broker: '127.0.0.1:1', uri: 'nattrav://x', maxAttemptSockets: 3 }), /maxAttemptSockets: expected at least 4/);
  });
});

describe('strategies take their sockets from the budget', () => {
  test('a birthday spray stops opening when the budget is spent, and gives every socket back', { timeout: 30_000 }, async (t) => {
    const BUDGET = 40;
    // The cone side's endpoint: accepts everything and holds it (the Hello never completes).
    const accepted: Socket[] = [];
    const cone = createTcpServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => cone.listen(0, '127.0.0.1', resolve));
    const budget = new SocketBudget(BUDGET);
    const controller = new AbortController();
    const fdsBefore = openFds();
    let maxInUse = 0;
    try {
      const exchange = {
        mapping: { kind: 'random' },
        peerMapping: { kind: 'eim' },
        peerPublicEndpoint: { family: 'IPv4', address: '127.0.0.1', port: (cone.address() as { port: number }).port },
        startDelayMs: 0,
      } as unknown as ExchangeResult;
      const run = birthday({
        role: 'recipient',
        exchange,
        broker: { host: '127.0.0.1', port: 1 },
        sockets: budget,
        signal: controller.signal,
        verify: () => {
          maxInUse = Math.max(maxInUse, budget.inUse);
          return new Promise(() => undefined);
        },
      });
      // 256 sockets were due; the budget allows 40, and every one of them connects.
      await until(() => accepted.length === BUDGET, `${BUDGET} connections at the cone (${accepted.length})`);
      assert.equal(budget.inUse, BUDGET);
      assert.ok(maxInUse <= BUDGET);
      // Our 40 and the cone's 40 ends, all in this process, and a few the runtime may open meanwhile.
      assert.ok(openFds() <= fdsBefore + 2 * BUDGET + 4, `descriptors: ${openFds()}, before: ${fdsBefore}`);
      t.diagnostic(`descriptors: ${fdsBefore} before, ${openFds()} with the budget spent (bound ${fdsBefore + 2 * BUDGET + 4})`);
      controller.abort(new Error('test over'));
      await assert.rejects(run);
      await until(() => budget.inUse === 0, `sockets given back (${budget.inUse} held)`);
      assert.equal(accepted.length, BUDGET, 'nothing more was opened');
    } finally {
      for (const socket of accepted) socket.destroy();
      cone.close();
    }
  });
});
