/**
 * Every broker limit is settable: `nattrav broker --limit NAME=VALUE` (and "limit" in the
 * config file), `--list-limits`, and the errors for each kind of bad entry.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { BROKER_LIMITS_DEFAULTS } from '../../src/broker/limits.js';
import { BROKER_DEFAULTS } from '../../src/broker/options.js';
import { blameLimit, limitsTable, parseLimits } from '../../src/cli/limits.js';
import { NattravError } from '../../src/errors.js';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';

const children: ChildProcess[] = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-limits-'));

function cli(args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, 'xdg'), ...env } });
  children.push(child);
  return new CliProcess(child);
}

/** How many of `count` TCP connections to `port` the broker keeps open (the rest it closes at once). */
async function keptOpen(port: number, count: number): Promise<number> {
  const sockets: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    sockets.push(socket);
  }
  // A closed connection shows as 'close' within a few loop turns; a kept one answers a Binding later.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const open = sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
  for (const socket of sockets) socket.destroy();
  return open;
}

describe('broker limits from the command line and the config file', () => {
  after(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  });

  test('parseLimits: rates, caps, timeouts; each kind of bad entry named', () => {
    assert.deepEqual(parseLimits(['udpRegister=50/500', 'maxConnections=20000', 'recipientTimeoutMs=8000', 'expensivePerUri=0.5/8']), {
      limits: { udpRegister: { perSecond: 50, burst: 500 }, maxConnections: 20_000, expensivePerUri: { perSecond: 0.5, burst: 8 } },
      recipientTimeoutMs: 8_000,
    });
    assert.deepEqual(parseLimits([]), {});
    const bad: Array<[string[], RegExp]> = [
      [['maxConnections'], /expected NAME=VALUE/],
      [['=5'], /expected NAME=VALUE/],
      [['nope=1'], /no limit is called nope; known: trackedBuckets, udpRegister/],
      [['udpRegister=5'], /udpRegister is a rate: expected PER_SECOND\/BURST/],
      [['udpRegister=a/5'], /udpRegister per second: expected a number >= 0, got "a"/],
      [['maxConnections=1.5'], /maxConnections: expected a whole number >= 0, got "1.5"/],
      [['maxConnections=-1'], /expected a whole number >= 0/],
      [['maxConnections=1', 'maxConnections=2'], /maxConnections is given twice/],
    ];
    for (const [entries, message] of bad) {
      assert.throws(() => parseLimits(entries), (err: NattravError) => err.code === 'ERR_INVALID_ARGUMENT' && message.test(err.message) && err.message.startsWith('--limit'), entries.join(' '));
    }
    const blamed = blameLimit(new NattravError('ERR_INVALID_ARGUMENT', 'broker limit maxConnections must be a positive integer, got 0'), ['maxConnections=0']) as Error;
    assert.match(blamed.message, /^--limit maxConnections=0: broker limit maxConnections must be/);
  });

  test('--list-limits names every limit with its default', async () => {
    const table = limitsTable();
    for (const name of Object.keys(BROKER_LIMITS_DEFAULTS)) assert.match(table, new RegExp(`^${name} `, 'm'));
    for (const name of ['recipientTimeoutMs', 'probeTimeoutMs', 'maxSessions']) assert.match(table, new RegExp(`^${name} +${String(BROKER_DEFAULTS[name as 'maxSessions'])} `, 'm'));
    const proc = cli(['broker', '--list-limits']);
    assert.equal(await proc.exited, 0);
    assert.equal(proc.stdout, table);
  });

  test('a limit from the flag and from the config file takes effect; a bad one exits 2 naming --limit', async () => {
    const flagged = cli(['broker', '--listen', '127.0.0.1:0', '--json', '--limit', 'maxConnectionsPerSource=2']);
    const { port } = await flagged.waitForEvent('listening', 10_000);
    assert.equal(await keptOpen(Number(port), 5), 2, 'two connections per source, from --limit');
    flagged.child.kill('SIGTERM');
    await flagged.exited;

    mkdirSync(join(home, 'xdg', 'nattrav'), { recursive: true });
    writeFileSync(join(home, 'xdg', 'nattrav', 'config.json'), JSON.stringify({ commands: { broker: { limit: ['maxConnectionsPerSource=3'] } } }));
    const configured = cli(['broker', '--listen', '127.0.0.1:0', '--json']);
    const listening = await configured.waitForEvent('listening', 10_000);
    assert.equal(await keptOpen(Number(listening.port), 5), 3, 'three connections per source, from the config file');
    configured.child.kill('SIGTERM');
    await configured.exited;
    rmSync(join(home, 'xdg'), { recursive: true, force: true });

    const zero = cli(['broker', '--listen', '127.0.0.1:0', '--limit', 'maxConnections=0']);
    assert.equal(await zero.exited, 2);
    assert.match(zero.stderr, /--limit maxConnections=0: broker limit maxConnections must be a positive integer, got 0/);
  });
});
