/**
 * The broker's one option validator: every numeric option is checked with a message
 * naming it and what to pass; relay quotas have safe defaults (1 GiB, 1 hour) and are
 * unlimited only when 0 is passed explicitly; the caller's object is never changed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { createBroker } from '../../src/broker/broker.js';
import { BROKER_DEFAULTS, resolveBrokerOptions, type BrokerOptions } from '../../src/broker/options.js';
import { ErrorCode, NattravError } from '../../src/errors.js';

/** Asserts that `options` is refused with ERR_INVALID_ARGUMENT and a message matching `message`. */
function refused(options: Record<string, unknown>, message: RegExp): void {
  assert.throws(
    () => createBroker(options as BrokerOptions),
    (err: unknown) => err instanceof NattravError && err.code === ErrorCode.InvalidArgument && message.test(err.message),
    `${JSON.stringify(options)} must be refused with ${String(message)}`,
  );
}

describe('broker options', () => {
  test('relay quotas default to 1 GiB and 1 hour; 0 (unlimited) only when passed', () => {
    const defaults = resolveBrokerOptions({});
    assert.equal(defaults.relayMaxBytes, 1024 ** 3);
    assert.equal(defaults.relayMaxDurationMs, 60 * 60 * 1000);
    assert.equal(BROKER_DEFAULTS.relayMaxBytes, defaults.relayMaxBytes);
    const unlimited = resolveBrokerOptions({ relayMaxBytes: 0, relayMaxDurationMs: 0 });
    assert.equal(unlimited.relayMaxBytes, 0);
    assert.equal(unlimited.relayMaxDurationMs, 0);
    // undefined means "the default", never "unlimited".
    assert.equal(resolveBrokerOptions({ relayMaxBytes: undefined }).relayMaxBytes, 1024 ** 3);
  });

  test('every numeric option is checked, naming the option', () => {
    for (const key of ['maxLifetimeMs', 'recipientTimeoutMs', 'exchangeIdleTimeoutMs', 'exchangeMaxLifetimeMs', 'messageTimeoutMs', 'probeTimeoutMs', 'maxPendingAttempts', 'maxSessions']) {
      for (const value of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '100']) {
        refused({ [key]: value }, new RegExp(`broker option ${key} must be a positive integer, got`));
      }
    }
    refused({ messageTimeoutMs: 2 ** 31 }, /messageTimeoutMs must be at most 2147483647 ms/);
    for (const value of [-1, 0.5, Number.NaN, '1000', Number.POSITIVE_INFINITY]) {
      refused({ relayMaxBytes: value }, /broker option relayMaxBytes must be a whole number of bytes \(0 for unlimited\)/);
      refused({ relayMaxDurationMs: value }, /broker option relayMaxDurationMs must be a whole number of ms/);
    }
    refused({ relayMaxDurationMs: 2 ** 31 }, /relayMaxDurationMs must be a whole number of ms up to 2147483647/);
    refused({ port: 70_000 }, /port must be an integer/);
    refused({ host: '' }, /broker option host must be an IP address or host name/);
    refused({ open: 'yes' }, /broker option open must be true or false/);
    refused({ software: 5 }, /broker option software must be a string/);
    refused({ strictAmplification: true, stunCompat: true }, /contradict each other/);
  });

  test('valid options pass and the caller\'s object is not changed', () => {
    const options: BrokerOptions = { relayMaxBytes: 10, messageTimeoutMs: 100, maxSessions: 1 };
    const copy = structuredClone(options);
    const resolved = resolveBrokerOptions(options);
    assert.deepEqual(options, copy);
    assert.equal(resolved.messageTimeoutMs, 100);
    assert.equal(resolved.exchangeMaxLifetimeMs, BROKER_DEFAULTS.exchangeMaxLifetimeMs);
  });

  const home = mkdtempSync(join(tmpdir(), 'nattrav-broker-cli-'));
  after(() => rmSync(home, { recursive: true, force: true }));
  const cli = (args: string[]): CliProcess => new CliProcess(spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HOME: home } }));

  test('CLI: --relay-max-bytes 0 --relay-max-seconds 0 is accepted; a time no timer can hold is refused naming the flag', async () => {
    const unlimited = cli(['broker', '--listen', '127.0.0.1:0', '--relay-max-bytes', '0', '--relay-max-seconds', '0', '--json']);
    await unlimited.waitForEvent('listening', 10_000);
    unlimited.child.kill('SIGTERM');
    await unlimited.exited;
    const tooLong = cli(['broker', '--listen', '127.0.0.1:0', '--relay-max-seconds', '3000000']);
    assert.equal(await tooLong.exited, 2);
    assert.match(tooLong.stderr, /--relay-max-seconds: at most 2147483 \(about 24 days\), or 0 for no time limit; got 3000000/);
  });
});
