/**
 * Interop: RFC 5780 NAT behaviour discovery in the lab, for every NAT type.
 *
 * 1. coturn's server (`turnserver` on 203.0.113.2 and .3) with coturn's client
 *    (`turnutils_natdiscovery -m -f -H`) and with ours (`nattrav netcheck`):
 *    both clients must classify each NAT alike, and as the lab built it.
 * 2. Our broker (`nattrav broker --alternate --stun-compat`) with coturn's client
 *    and ours: each client must give the same answers as against coturn's server;
 *    without --stun-compat coturn's client must reach the same verdicts.
 *
 * One lab, one site per NAT type; the sites run in parallel, the two clients
 * on one site one after the other (a sequential NAT's counter is per router).
 *
 * 3. On loopback (no root): coturn's client against a broker without
 *    --stun-compat, whose answers to its bare 20-byte requests are the minimal
 *    ones (at most 2.5 times the request), still classifies.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { CLI_PATH, CliProcess, startCli } from '../../src/lab/cli-process.js';
import { Lab } from '../../src/lab/lab.js';
import type { LabHost, NatType } from '../../src/lab/types.js';
import type { Behaviour, NatProfile } from '../../src/nat/profile.js';
import { requireLab } from '../lab/helpers.js';

const run = promisify(execFile);
const PRIMARY = '203.0.113.2';
const ALTERNATE = '203.0.113.3';
const STUN_PORT = 3478;
/** The six NAT types the brief names (the lab may know more). */
const TYPES: readonly NatType[] = ['none', 'full-cone', 'restricted-cone', 'port-restricted', 'symmetric', 'symmetric-sequential'];
/** A site whose router drops all UDP: neither client gets a STUN answer over UDP. */
const BLOCKED: NatType = 'udp-blocked';
/** natdiscovery waits 3 s per silent test; with -m -f -H at most five of them. */
const NATDISCOVERY_TIMEOUT_MS = 40_000;
/** netcheck takes a few seconds at most; Node start-up in a namespace on a loaded machine adds some. */
const NETCHECK_TIMEOUT_MS = 30_000;
/** A server process binding its sockets. */
const SERVER_START_TIMEOUT_MS = 15_000;

/** What coturn's client concluded. */
interface CoturnVerdict {
  mapping?: Behaviour;
  filtering?: Behaviour;
  hairpinning: boolean;
  /** "RFC 5780 response N" lines: how many answers carried OTHER-ADDRESS. */
  rfc5780Responses: number;
  /** "No ALG: Mapped == XOR-Mapped" lines (MAPPED-ADDRESS present and equal). */
  mappedEqualsXor: number;
}

const BEHAVIOUR_TEXT: Record<string, Behaviour> = {
  'Endpoint Independent': 'endpoint-independent',
  'Address Dependent': 'address-dependent',
  'Address and Port Dependent': 'address-and-port-dependent',
};

/**
 * Parses `turnutils_natdiscovery -m -f -H` output (coturn 4.6): the verdicts are
 * banner lines "NAT with <Behaviour> Mapping!" / "... Filtering!" (or
 * "No NAT! (Endpoint Independent Mapping)"), a hairpin success prints
 * "Received a request (maybe a successful hairpinning)".
 */
function parseNatdiscovery(stdout: string): CoturnVerdict {
  const mapping = /NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Mapping!/.exec(stdout)?.[1] ??
    (/No NAT! \(Endpoint Independent Mapping\)/.test(stdout) ? 'Endpoint Independent' : undefined);
  const filtering = /NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Filtering!/.exec(stdout)?.[1];
  return {
    ...(mapping === undefined ? {} : { mapping: BEHAVIOUR_TEXT[mapping] }),
    ...(filtering === undefined ? {} : { filtering: BEHAVIOUR_TEXT[filtering] }),
    hairpinning: /Received a request \(maybe a successful hairpinning\)/.test(stdout),
    rfc5780Responses: (stdout.match(/^RFC 5780 response \d+$/gm) ?? []).length,
    mappedEqualsXor: (stdout.match(/^No ALG: Mapped == XOR-Mapped$/gm) ?? []).length,
  };
}

/** What the lab's NAT types are, in RFC 4787 terms. */
const EXPECTED: Record<string, { mapping: Behaviour; filtering: Behaviour; allocation: string }> = {
  none: { mapping: 'endpoint-independent', filtering: 'endpoint-independent', allocation: 'preserving' },
  'full-cone': { mapping: 'endpoint-independent', filtering: 'endpoint-independent', allocation: 'preserving' },
  'restricted-cone': { mapping: 'endpoint-independent', filtering: 'address-dependent', allocation: 'preserving' },
  'port-restricted': { mapping: 'endpoint-independent', filtering: 'address-and-port-dependent', allocation: 'preserving' },
  symmetric: { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'random' },
  'symmetric-sequential': { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'sequential' },
};

async function haveNatdiscovery(t: { skip(reason: string): void }): Promise<boolean> {
  try {
    await run('turnutils_natdiscovery', [], { timeout: 5000 }).catch((err: { code?: unknown }) => {
      if (err.code === 'ENOENT') throw err;
    });
    return true;
  } catch {
    if (process.env.CI) throw new Error('turnutils_natdiscovery (Debian package coturn) is required in CI; .ci/run installs it');
    t.skip('turnutils_natdiscovery is not installed (apt-get install coturn)');
    return false;
  }
}

/** Waits until something listens on UDP `ip:port` for every pair, polling `ss` in the broker's namespace. */
async function waitForUdp(lab: Lab, host: LabHost, endpoints: string[]): Promise<void> {
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  for (;;) {
    const { stdout } = await lab.run(host, 'ss', ['-Hlun'], { timeoutMs: 5_000 });
    if (endpoints.every((e) => stdout.includes(e))) return;
    if (Date.now() > deadline) throw new Error(`not listening on ${endpoints.join(', ')} after ${SERVER_START_TIMEOUT_MS} ms:\n${stdout}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function natdiscovery(lab: Lab, host: LabHost, allowFailure = false): Promise<{ verdict: CoturnVerdict; stdout: string; code: number }> {
  const { stdout, code } = await lab.run(host, 'turnutils_natdiscovery', ['-m', '-f', '-H', '-p', String(STUN_PORT), PRIMARY], {
    timeoutMs: NATDISCOVERY_TIMEOUT_MS,
    allowFailure,
  });
  return { verdict: parseNatdiscovery(stdout), stdout, code };
}

async function netcheck(lab: Lab, host: LabHost): Promise<NatProfile> {
  const { stdout, stderr } = await lab.run(host, process.execPath, [CLI_PATH, 'netcheck', '--broker', `${PRIMARY}:${STUN_PORT}`, '--json'], { timeoutMs: NETCHECK_TIMEOUT_MS });
  // The result is the one JSON line on stdout.
  const lines = stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `stdout: ${stdout}\nstderr: ${stderr}`);
  const result = JSON.parse(lines[0]) as NatProfile & { event?: string };
  assert.equal(result.event, 'netcheck', lines[0]);
  return result;
}

describe('interop: RFC 5780 NAT discovery, coturn and nattrav, every lab NAT type (web-only: no STUN at all, see the matrix)', () => {
  test('both clients agree with each other and with the lab; coturn\'s client agrees across both servers', async (t) => {
    if (!(await requireLab(t)) || !(await haveNatdiscovery(t))) return;
    const lab = await Lab.create({ sites: [...TYPES, BLOCKED].map((nat) => ({ name: nat, nat })) });
    const dir = await mkdtemp(join(tmpdir(), 'nattrav-coturn-'));
    try {
      // Phase 1: coturn's server.
      const turnserver = lab.spawn(lab.broker, 'turnserver', [
        '-n', '--no-cli', '-L', PRIMARY, '-L', ALTERNATE, '-z', '--stun-only', '--db', join(dir, 'turndb'), '-p', String(STUN_PORT),
      ], { stdio: 'ignore' });
      const turnExited = new Promise((resolve) => turnserver.once('exit', resolve));
      await waitForUdp(lab, lab.broker, [`${PRIMARY}:${STUN_PORT}`, `${ALTERNATE}:${STUN_PORT + 1}`]);
      const againstCoturn = await Promise.all(TYPES.map(async (nat) => {
        const host = lab.site(nat).host;
        const coturnClient = await natdiscovery(lab, host);
        const ours = await netcheck(lab, host);
        return { nat, coturnClient, ours };
      }));
      // With no UDP answer coturn's client gives up (it exits 255, 'Bad file descriptor').
      const blockedCoturn = await natdiscovery(lab, lab.site(BLOCKED).host, true);
      const blockedOurs = await netcheck(lab, lab.site(BLOCKED).host);
      turnserver.kill('SIGTERM');
      await turnExited;

      // Phase 2: our broker, same addresses and ports.
      // coturn's client sends 20- and 28-byte requests. By default its bare ones get the minimal answer
      // (XOR-MAPPED-ADDRESS and OTHER-ADDRESS: it classifies alike, see the loopback test below, but
      // prints fewer "No ALG" lines); --stun-compat gives it every attribute coturn's server sends.
      const broker = startCli(lab, lab.broker, ['broker', '--listen', `${PRIMARY}:${STUN_PORT}`, '--alternate', ALTERNATE, '--stun-compat']);
      await broker.waitForEvent('listening', SERVER_START_TIMEOUT_MS);
      const againstOurs = await Promise.all(TYPES.map(async (nat) => {
        const host = lab.site(nat).host;
        const coturnClient = await natdiscovery(lab, host);
        return { coturnClient, ours: await netcheck(lab, host) };
      }));
      const blockedCoturnOnOurs = await natdiscovery(lab, lab.site(BLOCKED).host, true);
      const blockedOursOnOurs = await netcheck(lab, lab.site(BLOCKED).host);
      broker.child.kill('SIGTERM');
      await broker.exited;

      // Phase 3: our broker with no amplification flag: the minimal answers to bare requests.
      const minimal = startCli(lab, lab.broker, ['broker', '--listen', `${PRIMARY}:${STUN_PORT}`, '--alternate', ALTERNATE]);
      await minimal.waitForEvent('listening', SERVER_START_TIMEOUT_MS);
      const againstMinimal = await Promise.all(TYPES.map(async (nat) => (await natdiscovery(lab, lab.site(nat).host)).verdict));

      // UDP blocked: coturn's client concludes nothing; ours says so, and still reaches the server over TCP.
      t.diagnostic(`udp-blocked: coturn/coturn ${JSON.stringify(blockedCoturn.verdict)}; nattrav/coturn ${JSON.stringify(blockedOurs)}`);
      assert.equal(blockedCoturn.verdict.mapping, undefined, `udp-blocked: coturn mapping\n${blockedCoturn.stdout}`);
      assert.equal(blockedCoturn.verdict.rfc5780Responses, 0);
      assert.equal(blockedOurs.udpBlocked, true, 'udp-blocked: our client reports UDP blocked');
      assert.equal(blockedOurs.mapping, undefined);
      assert.equal(blockedOurs.tcp?.blocked, false, 'udp-blocked: TCP still reaches the server');
      assert.deepEqual(blockedCoturnOnOurs.verdict, blockedCoturn.verdict, 'udp-blocked: coturn client, both servers');
      assert.equal(blockedCoturnOnOurs.code, blockedCoturn.code);
      assert.deepEqual(blockedOursOnOurs, blockedOurs, 'udp-blocked: our client, both servers');

      for (const [i, { nat, coturnClient, ours }] of againstCoturn.entries()) {
        const expected = EXPECTED[nat];
        const coturnOnOurs = againstOurs[i].coturnClient;
        const oursOnOurs = againstOurs[i].ours;
        t.diagnostic(`${nat}: coturn/coturn ${JSON.stringify(coturnClient.verdict)}; coturn/nattrav ${JSON.stringify(coturnOnOurs.verdict)}; nattrav/coturn ${JSON.stringify(ours)}`);
        // coturn's client against coturn's server matches the lab.
        assert.equal(coturnClient.verdict.mapping, expected.mapping, `${nat}: coturn mapping\n${coturnClient.stdout}`);
        assert.equal(coturnClient.verdict.filtering, expected.filtering, `${nat}: coturn filtering\n${coturnClient.stdout}`);
        // Our client agrees with coturn's.
        assert.equal(ours.mapping, coturnClient.verdict.mapping, `${nat}: our mapping vs coturn's`);
        assert.equal(ours.filtering, coturnClient.verdict.filtering, `${nat}: our filtering vs coturn's`);
        assert.equal(ours.hairpinning, coturnClient.verdict.hairpinning, `${nat}: our hairpinning vs coturn's`);
        assert.equal(ours.udpBlocked, false);
        assert.equal(ours.isPublic, nat === 'none', `${nat}: isPublic`);
        assert.equal(ours.publicAddress, lab.site(nat).publicAddress, `${nat}: public address`);
        assert.equal(ours.allocation?.kind, expected.allocation, `${nat}: UDP port allocation ${JSON.stringify(ours.allocation)}`);
        assert.equal(ours.tcp?.blocked, false, `${nat}: TCP reached coturn`);
        assert.equal(ours.tcp?.mapping, expected.mapping, `${nat}: TCP mapping ${JSON.stringify(ours.tcp)}`);
        // coturn's client gives the same answers against our broker.
        assert.deepEqual(coturnOnOurs.verdict, coturnClient.verdict, `${nat}: coturn's client against our broker\n${coturnOnOurs.stdout}`);
        // And our client finds the same profile against either server (TCP included).
        assert.deepEqual(oursOnOurs, ours, `${nat}: our client against our broker vs against coturn`);
        // Without --stun-compat coturn's client still reaches the same verdicts.
        const minimalVerdict = againstMinimal[i];
        t.diagnostic(`${nat}: coturn/nattrav without --stun-compat ${JSON.stringify(minimalVerdict)}`);
        assert.equal(minimalVerdict?.mapping, coturnClient.verdict.mapping, `${nat}: mapping without --stun-compat`);
        assert.equal(minimalVerdict?.filtering, coturnClient.verdict.filtering, `${nat}: filtering without --stun-compat`);
      }
    } finally {
      await lab.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('interop: coturn natdiscovery on loopback against a broker without --stun-compat', () => {
  test('classifies "no NAT" from the minimal answers (endpoint-independent mapping and filtering)', async (t) => {
    if (!(await haveNatdiscovery(t))) return;
    // 127.0.0.2 is a second local address on Linux's loopback: the RFC 5780 alternate address.
    const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '127.0.0.1:0', '--alternate', '127.0.0.2', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const broker = new CliProcess(child);
    try {
      const listening = await broker.waitForEvent('listening', SERVER_START_TIMEOUT_MS);
      const { stdout } = await run('turnutils_natdiscovery', ['-m', '-f', '-H', '-p', String(listening.port), '127.0.0.1'], { timeout: NATDISCOVERY_TIMEOUT_MS });
      const verdict = parseNatdiscovery(stdout);
      t.diagnostic(JSON.stringify(verdict));
      assert.equal(verdict.mapping, 'endpoint-independent', stdout);
      assert.equal(verdict.filtering, 'endpoint-independent', stdout);
      assert.ok(verdict.rfc5780Responses >= 3, `OTHER-ADDRESS in the answers to bare requests\n${stdout}`);
    } finally {
      if (child.exitCode === null) child.kill('SIGTERM');
      await broker.exited;
    }
  });
});
