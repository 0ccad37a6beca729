/**
 * The CLI's dual stack on loopback: `nattrav broker --listen [::]:0 --announce 127.0.0.1
 * --announce ::1`, a `nattrav listen` registered over IPv4 that also registers IPv6, and
 * `nattrav connect` given both broker addresses: the race picks IPv6 (family 6 in --json),
 * `--ipv4` forces IPv4. Usage errors: --ipv4 with --ipv6, --ipv6 with --udp, a bad --announce.
 * Skipped, with the reason, on a host without ::1.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CliProcess } from '../../src/lab/cli-process.js';
import { cliHome } from '../helpers/cli-home.js';
import { noIPv6Loopback } from '../helpers/udp.js';

/** Node start-up and a registration on a busy machine. */
const START_WAIT_MS = 15_000;

const skip = await noIPv6Loopback();
const { home, cli, cleanUp } = cliHome('nattrav-cli-dual-');
after(cleanUp);

describe('nattrav connect --ipv4 / --ipv6 usage', () => {
  for (const [flags, pattern] of [
    [['--ipv4', '--ipv6'], /--ipv4 and --ipv6 exclude each other/],
    [['--ipv6', '--udp'], /--ipv6 is for TCP connections/],
  ] as const) {
    test(`${flags.join(' ')} is a usage error (exit 2) naming the flags`, async () => {
      const child = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:9', '--json', ...flags]);
      const error = await child.waitForEvent('error', START_WAIT_MS);
      assert.equal(error.code, 'ERR_INVALID_ARGUMENT');
      assert.match(String(error.message), pattern);
      assert.equal(await child.exited, 2);
    });
  }

  test('--ipv6 with a broker given by an IPv4 address only exits 6 (ERR_FAMILY_UNAVAILABLE) without a packet sent', async () => {
    const child = cli(['connect', 'nattrav://x', '--broker', '127.0.0.1:9', '--json', '--ipv6']);
    const error = await child.waitForEvent('error', START_WAIT_MS);
    assert.equal(error.code, 'ERR_FAMILY_UNAVAILABLE');
    assert.match(String(error.message), /the broker has no IPv6 address/);
    assert.equal(await child.exited, 6);
  });

  test('broker --announce with something that is not an IP address, or two of one family, exits 2 naming --announce', async () => {
    for (const [args, pattern] of [
      [['--announce', 'broker.example'], /--announce: expected an IPv4 or IPv6 address/],
      [['--announce', '127.0.0.1', '--announce', '127.0.0.2'], /--announce: two IPv4 addresses/],
    ] as const) {
      const child = cli(['broker', '--listen', '127.0.0.1:0', '--json', ...args]);
      assert.equal(await child.exited, 2, child.stderr);
      assert.match(child.stderr, pattern);
    }
  });
});

describe('nattrav on a dual-stack broker', { skip }, () => {
  let broker: CliProcess;
  let listener: CliProcess;
  let port: number;
  before(async () => {
    broker = cli(['broker', '--listen', '[::]:0', '--announce', '127.0.0.1', '--announce', '::1', '--json']);
    port = Number((await broker.waitForEvent('listening', START_WAIT_MS)).port);
    listener = cli(['listen', 'nattrav://cli-dual', '--broker', `127.0.0.1:${port}`, '--echo', '--json']);
    await listener.waitForEvent('registered', START_WAIT_MS);
  });
  after(async () => {
    for (const child of [listener, broker]) {
      child.child.kill('SIGTERM');
      await child.exited;
    }
  });

  test('listen says it also registered over IPv6', async () => {
    const second = await listener.waitForEvent('second-family', START_WAIT_MS);
    assert.equal(second.family, 'IPv6');
    assert.equal(second.broker, `[::1]:${port}`);
  });

  test('listen --no-dual-stack registers IPv4 only: connect --ipv6 exits 6 at once, racing connects over IPv4', async () => {
    const single = cli(['listen', 'nattrav://cli-single', '--broker', `127.0.0.1:${port}`, '--echo', '--json', '--no-dual-stack']);
    try {
      await single.waitForEvent('registered', START_WAIT_MS);
      const forced = cli(['connect', 'nattrav://cli-single', '--broker', `127.0.0.1:${port},[::1]:${port}`, '--json', '--ipv6', '--known-keys', join(home, 'known')]);
      const error = await forced.waitForEvent('error', START_WAIT_MS);
      assert.equal(error.code, 'ERR_FAMILY_UNAVAILABLE');
      assert.match(String(error.message), /not registered over IPv6/);
      assert.equal(await forced.exited, 6);
      const raced = cli(['connect', 'nattrav://cli-single', '--broker', `127.0.0.1:${port},[::1]:${port}`, '--json', '--family-delay', '20000', '--known-keys', join(home, 'known')]);
      const connected = await raced.waitForEvent('connected', START_WAIT_MS);
      assert.equal(connected.family, 4, 'IPv4 started at once when IPv6 was refused, not 20 s later');
      raced.child.stdin?.end();
      assert.equal(await raced.exited, 0, raced.stderr);
      assert.equal(single.events.some((e) => e.event === 'second-family'), false);
    } finally {
      single.child.kill('SIGTERM');
      await single.exited;
    }
  });

  // Racing: IPv4 would start after 2 s, so a working IPv6 wins even on a busy machine (at the default 50 ms either may).
  for (const [flags, family] of [[['--family-delay', '2000'], 6], [['--ipv4'], 4], [['--ipv6'], 6]] as const) {
    test(`connect ${flags.join(' ') || '(racing)'} connects over IPv${family} and says so in --json`, async () => {
      await listener.waitForEvent('second-family', START_WAIT_MS);
      const client = cli(['connect', 'nattrav://cli-dual', '--broker', `127.0.0.1:${port},[::1]:${port}`, '--json', '--known-keys', join(home, 'known'), ...flags]);
      const connected = await client.waitForEvent('connected', START_WAIT_MS);
      assert.equal(connected.family, family);
      assert.notEqual(connected.path, 'relay');
      client.write('ping\n');
      await client.waitForStdout('ping\n', 5_000);
      client.child.stdin?.end();
      assert.equal(await client.exited, 0, client.stderr);
    });
  }
});
