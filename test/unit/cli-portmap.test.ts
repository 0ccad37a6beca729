/**
 * `nattrav portmap` against a loopback gateway: a fake PCP server on 127.0.0.2:5351 that answers
 * like miniupnpd. Without --map it prints the protocols and the external address; with --map it
 * prints the mapping, holds it, and deletes it (PCP lifetime 0, same nonce) when stopped by
 * SIGTERM (exit 143). A silent gateway is exit 11; bad values are exit 2 naming the option.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createSocket, type Socket } from 'node:dgram';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { LineReader } from '../lab/helpers.js';

const execFileAsync = promisify(execFile);
const CLI = join(fileURLToPath(new URL('../../', import.meta.url)), 'src', 'cli', 'main.js');
/** A loopback address of its own, so port 5351 is free whatever else runs on 127.0.0.1. */
const GATEWAY = '127.0.0.2';
/** Node start-up and one exchange on a loaded machine. */
const RUN_TIMEOUT_MS = 20_000;

describe('nattrav portmap', () => {
  let server: Socket;
  const requests: Buffer[] = [];
  let available = true;

  before(async () => {
    server = createSocket('udp4');
    server.on('message', (bytes, rinfo) => {
      requests.push(Buffer.from(bytes));
      let answer: Buffer;
      if (bytes[0] === 0 && bytes[1] === 0) {
        answer = Buffer.from('008000000000000acb00710a', 'hex'); // miniupnpd's capture: 203.0.113.10
      } else if (bytes[0] === 2) {
        answer = Buffer.alloc(bytes[1] === 1 ? 60 : 24);
        answer[0] = 2;
        answer[1] = (bytes[1] as number) | 0x80;
        answer.writeUInt32BE(bytes.readUInt32BE(4), 4);
        answer.writeUInt32BE(11, 8);
        if (bytes[1] === 1) {
          bytes.copy(answer, 24, 24, 60);
          answer.writeUInt16BE(bytes.readUInt16BE(40), 42);
          Buffer.from('00000000000000000000ffffcb00710a', 'hex').copy(answer, 44);
        }
      } else return;
      server.send(answer, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => {
      server.once('error', () => {
        available = false;
        resolve();
      });
      server.bind(5351, GATEWAY, () => resolve());
    });
  });
  after(() => server.close());

  test('shows the protocols and the external address', async (t) => {
    if (!available) return t.skip(`${GATEWAY}:5351 is not available here`);
    // Not spawnSync: the fake gateway answers from this process's event loop.
    const run = await execFileAsync(process.execPath, [CLI, 'portmap', '--gateway', GATEWAY, '--protocol', 'pcp,nat-pmp', '--json'], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
    const result = JSON.parse(run.stdout.trim()) as Record<string, unknown>;
    assert.deepEqual(result, { event: 'portmap', gateway: GATEWAY, protocols: ['pcp', 'nat-pmp'], externalAddress: '203.0.113.10' });
  });

  test('--map holds a mapping and deletes it with the same nonce on SIGTERM', async (t) => {
    if (!available) return t.skip(`${GATEWAY}:5351 is not available here`);
    requests.length = 0;
    const child = spawn(process.execPath, [CLI, 'portmap', '--gateway', GATEWAY, '--protocol', 'pcp', '--map', '4000', '--lease', '600', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const lines = new LineReader(child);
      assert.equal((await lines.nextJson(RUN_TIMEOUT_MS)).event, 'portmap');
      const mapping = await lines.nextJson(RUN_TIMEOUT_MS);
      assert.deepEqual(mapping, { event: 'mapping', protocol: 'pcp', transport: 'tcp', internalPort: 4000, externalAddress: '203.0.113.10', externalPort: 4000, lifetimeSeconds: 600, state: 'active', external: '203.0.113.10:4000' });
      child.kill('SIGTERM');
      assert.equal(await exited, 143);
    } finally {
      child.kill('SIGKILL');
    }
    const maps = requests.filter((r) => r[0] === 2 && r[1] === 1);
    assert.equal(maps.length, 2, 'one MAP, one deletion');
    assert.equal(maps[0]?.readUInt32BE(4), 600);
    assert.equal(maps[1]?.readUInt32BE(4), 0, 'the deletion asks for lifetime 0');
    assert.deepEqual(maps[1]?.subarray(24, 36), maps[0]?.subarray(24, 36), 'with the mapping\'s nonce');
  });

  test('a gateway that answers nothing: exit 11 after the discovery budget', () => {
    // 127.0.0.3: nothing listens there; the NAT-PMP/PCP probe goes unanswered.
    const run = spawnSync(process.execPath, [CLI, 'portmap', '--gateway', '127.0.0.3', '--protocol', 'pcp,nat-pmp', '--json'], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
    assert.equal(run.status, 11, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout.trim()), { event: 'portmap', gateway: '127.0.0.3', protocols: [] });
    assert.match(run.stderr, /"event":"no-portmap"/);
  });

  test('bad values exit 2 naming the option', () => {
    for (const [args, pattern] of [
      [['--protocol', 'socks'], /--protocol.*unknown protocol "socks"/],
      [['--map', '0'], /--map.*port number 1\.\.65535/],
      [['--gateway', 'router.local'], /--gateway.*IPv4 address/],
      [['--lease', '-5'], /--lease/],
    ] as const) {
      const run = spawnSync(process.execPath, [CLI, 'portmap', ...args], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, pattern);
    }
  });
});
