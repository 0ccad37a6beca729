/**
 * `nattrav broker --ws-listen`, as a process: ws by default without --cert, the
 * bound URL logged as ws-listening, a Binding answered over it; wss:// without a
 * certificate and malformed values are usage errors naming the flag.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { bindingOver } from '../helpers/websocket.js';

const children: ChildProcess[] = [];
const home = mkdtempSync(join(tmpdir(), 'nattrav-cli-ws-'));
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(home, { recursive: true, force: true });
});

function broker(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '127.0.0.1:0', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
  children.push(child);
  return new CliProcess(child);
}

describe('nattrav broker --ws-listen', () => {
  test('two listeners, ws without --cert; a Binding over each is answered', async () => {
    const proc = broker(['--ws-listen', '127.0.0.1:0', '--ws-listen', 'ws://127.0.0.1:0/']);
    await proc.waitForEvent('listening', 10_000);
    const listeners = [await proc.waitForEvent('ws-listening', 10_000), await proc.waitForEvent('ws-listening', 10_000, (e) => e !== proc.events.find((f) => f.event === 'ws-listening'))];
    for (const listener of listeners) {
      assert.match(String(listener.url), /^ws:\/\/127\.0\.0\.1:\d+\/$/);
      assert.equal(listener.tls, false);
      const ws = new WebSocket(String(listener.url));
      await once(ws, 'open');
      assert.equal((await bindingOver(ws)).address, '127.0.0.1');
      ws.terminate();
    }
    proc.child.kill('SIGTERM');
    assert.equal(await proc.exited, 143, `stopped by SIGTERM: ${proc.stderr}`);
  });

  test('bad values are usage errors naming --ws-listen (exit 2)', async () => {
    const cases = [
      [['--ws-listen', '127.0.0.1'], /--ws-listen: missing port/],
      [['--ws-listen', 'wss://127.0.0.1:0'], /webSockets\[0\] asks for wss \(tls\) but the broker has no cert and key/],
      [['--ws-listen', 'ws://127.0.0.1:80/nattrav'], /--ws-listen: pass \[ws:\/\/\|wss:\/\/\]HOST:PORT \(no path/],
      [['--ws-listen', '127.0.0.1:70000'], /--ws-listen: port must be an integer/],
    ] as const;
    for (const [args, message] of cases) {
      const proc = broker([...args]);
      assert.equal(await proc.exited, 2, `${args.join(' ')}: ${proc.stderr}`);
      assert.match(proc.stderr, message);
    }
  });
});
