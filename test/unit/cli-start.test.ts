/**
 * A command loads only what it runs (issue 13 item 4: `nattrav connect` reaches its first
 * packet within 150 ms of process start; bench/start.ts measures it). The CLI runs with a
 * loader hook that logs every module it loads (helpers/module-log.ts); `connect` and
 * `listen` against a silent stand-in broker must not load the broker, the lab, Redis,
 * WebSocket, SOCKS, pino or prom-client, nor the certificate library before a connection
 * (connect) or a registration (listen); `connect` neither the recipient side nor port
 * mapping. Every command still runs: the other cli-*.test.ts files.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { CLI_PATH } from '../../src/lab/cli-process.js';

const MODULE_LOG_HOOK = fileURLToPath(new URL('../helpers/module-log.js', import.meta.url));
/** A CLI run here ends by its own --timeout or by our kill; past this the test fails. */
const RUN_LIMIT_MS = 30_000;

/** Modules no `connect` or `listen` needs: the broker side, the lab, and the packages only they (or a proxy, or the web) use. */
const NOT_FOR_PEERS: ReadonlyArray<[string, RegExp]> = [
  ['the broker', /\/dist\/src\/broker\//],
  ['the lab', /\/dist\/src\/lab\//],
  ['the whole public API (index.js)', /\/dist\/src\/index\.js$/],
  ['@redis/client', /\/node_modules\/@redis\//],
  ['ws', /\/node_modules\/ws\//],
  ['socks', /\/node_modules\/socks\//],
  ['pino', /\/node_modules\/pino\//],
  ['prom-client', /\/node_modules\/prom-client\//],
];
/** Nor, before a connection (connect) or a registration (listen), the certificate library: TLS comes later. */
const CERTIFICATES: [string, RegExp] = ['the certificate library', /\/node_modules\/@peculiar\/x509\/|\/dist\/src\/security\/x509\.js$/];
/** Nor does `connect` before it has a connection: the recipient's side and port mapping. */
const NOT_BEFORE_CONNECTED: ReadonlyArray<[string, RegExp]> = [
  CERTIFICATES,
  ['the recipient side', /\/dist\/src\/peer\/(server|registration)\.js$/],
  ['port mapping clients', /\/dist\/src\/portmap\/(?!types\.js$)/],
];

const dir = mkdtempSync(join(tmpdir(), 'nattrav-cli-start-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  readonly code: number | null;
  readonly stderr: string;
  /** Every module URL the process loaded. */
  readonly modules: string[];
}

/** Runs the CLI with the module log until it exits, or until `until` resolves (then it is killed by PID). */
async function runLogged(name: string, args: string[], until?: Promise<void>): Promise<Run> {
  const log = join(dir, `${name}.modules`);
  const child = spawn(process.execPath, ['--import', MODULE_LOG_HOOK, CLI_PATH, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // The ES modules, not the bundle (cli-bundle.test.ts), so that each module loaded is seen; the bundle defers the same ones.
    env: { ...process.env, NATTRAV_BUNDLE: '0', HOME: dir, NATTRAV_MODULE_LOG: log, SOCKS_PROXY: '', ALL_PROXY: '', HTTPS_PROXY: '', HTTP_PROXY: '' },
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const limit = setTimeout(() => child.kill('SIGKILL'), RUN_LIMIT_MS);
  void until?.then(() => child.kill('SIGKILL'));
  const code = await exited;
  clearTimeout(limit);
  let modules: string[] = [];
  try {
    modules = readFileSync(log, 'utf8').split('\n').filter((line) => line !== '');
  } catch {
    // no module logged: asserted below
  }
  return { code, stderr, modules };
}

function assertNotLoaded(run: Run, command: string, modules: ReadonlyArray<[string, RegExp]>): void {
  // The hook works: the CLI's own entry is in the log.
  assert.ok(run.modules.some((url) => url.endsWith('/dist/src/cli/main.js')), `the module log of ${command} lacks main.js: ${run.modules.join(', ')}; stderr: ${run.stderr}`);
  for (const [what, pattern] of modules) {
    const loaded = run.modules.filter((url) => pattern.test(url));
    assert.deepEqual(loaded, [], `${command} loaded ${what}`);
  }
}

describe('nattrav connect and listen load only what they run', () => {
  test('connect to a broker that never answers: no broker, lab, Redis, ws, socks, recipient side or certificate library; exit 5 at --timeout', async () => {
    const held: Socket[] = [];
    const broker = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', () => resolve()));
    const { port } = broker.address() as { port: number };
    try {
      const run = await runLogged('connect', ['connect', 'nattrav://start-test', '--broker', `127.0.0.1:${port}`, '--timeout', '1500']);
      assert.equal(held.length >= 1, true, `the stand-in broker saw no connection; stderr: ${run.stderr}`);
      assert.equal(run.code, 5, run.stderr);
      // The connect path itself was loaded (the hook sees it); no connection was made, so no TLS either.
      assert.ok(run.modules.some((url) => url.endsWith('/dist/src/peer/connect.js')));
      assertNotLoaded(run, 'connect', [...NOT_FOR_PEERS, ...NOT_BEFORE_CONNECTED]);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });

  test('connect --udp to a broker that never answers: the datagram path alone, not the public API (index.js) nor the recipient side; exit 5 at --timeout', async () => {
    const held: Socket[] = [];
    const broker = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', () => resolve()));
    const { port } = broker.address() as { port: number };
    try {
      // The UDP Bindings to the broker go unanswered (2 s), then the exchange waits on the silent broker.
      const run = await runLogged('connect-udp', ['connect', 'nattrav://start-test', '--udp', '--broker', `127.0.0.1:${port}`, '--timeout', '4000']);
      assert.equal(run.code, 5, run.stderr);
      assert.ok(run.modules.some((url) => url.endsWith('/dist/src/peer/datagram/connect.js')));
      assertNotLoaded(run, 'connect --udp', [...NOT_FOR_PEERS, ...NOT_BEFORE_CONNECTED]);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });

  test('listen until its first registration datagram: no broker, lab, Redis, ws, socks, pino, prom-client or certificate library', async () => {
    const broker = createSocket('udp4');
    await new Promise<void>((resolve) => broker.bind(0, '127.0.0.1', () => resolve()));
    const registered = new Promise<void>((resolve) => broker.once('message', () => resolve()));
    try {
      const run = await runLogged(
        'listen',
        ['listen', 'nattrav://start-test', '--broker', `127.0.0.1:${broker.address().port}`, '--no-portmap', '--key-dir', join(dir, 'keys')],
        registered,
      );
      // Never registered (the stand-in does not answer), so it never made its certificate either.
      assertNotLoaded(run, 'listen', [...NOT_FOR_PEERS, CERTIFICATES]);
      assert.ok(run.modules.some((url) => url.endsWith('/dist/src/peer/server.js')));
    } finally {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });
});
