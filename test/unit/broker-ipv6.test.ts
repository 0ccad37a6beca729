/**
 * The broker over IPv6 on loopback: a dual-stack broker ([::]) answers IPv4 and
 * IPv6 clients over UDP and TCP, and peers register and connect over IPv6 (::1)
 * end to end, their registrations holding IPv6 endpoints. Skipped, with the
 * reason, on a host without an IPv6 loopback address.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createBroker, type Broker, type BrokerEvent } from '../../src/broker/broker.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { CLI_PATH, CliProcess } from '../../src/lab/cli-process.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import { Method } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { getXorMappedAddress } from '../../src/wire/nattrav.js';
import { addRequestPadding } from '../../src/wire/request-padding.js';
import type { TransportAddress } from '../../src/wire/types.js';
import { startRecipient, until } from '../helpers/loopback.js';
import { noIPv6Loopback, udpSocket } from '../helpers/udp.js';

const skip = await noIPv6Loopback();

/** A UDP Binding from `socket` to `host`:`port`; resolves with the XOR-MAPPED-ADDRESS of the answer. */
async function udpBinding(socket: UdpSocket, host: string, port: number): Promise<TransportAddress | undefined> {
  const reply = once(socket, 'message');
  socket.send(encodeMessage(addRequestPadding(StunMessage.request(Method.Binding))), port, host);
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no UDP answer from ${host}`)), 2_000).unref());
  const [data] = (await Promise.race([reply, timeout])) as [Buffer];
  return getXorMappedAddress(decodeMessage(data));
}

/** A TCP Binding to `host`:`port`; resolves with the XOR-MAPPED-ADDRESS and the local end of the connection. */
async function tcpBinding(host: string, port: number): Promise<{ mapped: TransportAddress | undefined; local: { address: string; port: number } }> {
  const socket = netConnect({ host, port });
  try {
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    const local = { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
    socket.write(encodeMessage(StunMessage.request(Method.Binding)));
    const decoder = new StunStreamDecoder();
    for await (const chunk of socket) {
      const [message] = decoder.push(chunk as Buffer);
      if (message !== undefined) return { mapped: getXorMappedAddress(message), local };
    }
    throw new Error(`${host} closed the connection without answering`);
  } finally {
    socket.destroy();
  }
}

/** Sends `bytes` through `socket` to an echoing recipient and resolves with the SHA-256 of what came back. */
async function echoHash(socket: NattravSocket, bytes: Buffer): Promise<string> {
  const hash = createHash('sha256');
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => hash.update(chunk));
    socket.once('end', resolve);
    socket.once('error', reject);
  });
  socket.end(bytes);
  await done;
  return hash.digest('hex');
}

describe('broker over IPv6', { skip }, () => {
  const closers: Array<() => unknown> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  async function broker(host: string, registry = new MemoryRegistry()): Promise<{ broker: Broker; port: number; events: BrokerEvent[] }> {
    const b = createBroker({ host, port: 0, registry });
    closers.push(() => b.close());
    const events: BrokerEvent[] = [];
    b.on('event', (e: BrokerEvent) => events.push(e));
    const { port } = await b.listen();
    return { broker: b, port, events };
  }

  test('a dual-stack broker ([::]) answers IPv4 and IPv6 Bindings over UDP and TCP with the right family', async () => {
    const { port } = await broker('::');
    const v4 = await udpSocket('127.0.0.1');
    const v6 = await udpSocket('::1');
    closers.push(() => v4.close(), () => v6.close());
    // An IPv4 peer reaches a udp6 socket as ::ffff:127.0.0.1; the answer must go back to it and name it as IPv4.
    assert.deepEqual(await udpBinding(v4, '127.0.0.1', port), { family: 'IPv4', address: '127.0.0.1', port: v4.address().port });
    assert.deepEqual(await udpBinding(v6, '::1', port), { family: 'IPv6', address: '::1', port: v6.address().port });
    const overV4 = await tcpBinding('127.0.0.1', port);
    assert.deepEqual(overV4.mapped, { family: 'IPv4', address: '127.0.0.1', port: overV4.local.port });
    const overV6 = await tcpBinding('::1', port);
    assert.deepEqual(overV6.mapped, { family: 'IPv6', address: '::1', port: overV6.local.port });
  });

  test('a peer registers over IPv6 and another connects to it over IPv6; bytes arrive intact', async () => {
    const registry = new MemoryRegistry();
    const { port, events } = await broker('::1', registry);
    const address = `[::1]:${port}`;
    const { server } = await startRecipient(address, 'nattrav://v6-echo');
    server.on('connection', (socket: NattravSocket) => socket.pipe(socket));
    closers.push(() => server.close());
    const registered = events.find((e) => e.type === 'registered' && e.uri === 'nattrav://v6-echo');
    assert.ok(registered !== undefined && registered.type === 'registered');
    assert.equal(registered.transport, undefined, 'registered over UDP, not the TCP fallback');
    assert.equal(registered.publicEndpoint.family, 'IPv6');
    assert.equal(registered.publicEndpoint.address, '::1');
    const stored = await registry.get('nattrav://v6-echo');
    assert.ok(stored !== undefined);
    assert.equal(stored.publicEndpoint.family, 'IPv6');
    assert.ok(stored.privateEndpoints.length > 0 && stored.privateEndpoints.every((e) => e.family === 'IPv6'), JSON.stringify(stored.privateEndpoints));

    const socket = await connect({ broker: address, uri: 'nattrav://v6-echo', signal: AbortSignal.timeout(10_000) });
    closers.push(() => socket.destroy());
    assert.ok(socket.nattrav.path === 'lan' || socket.nattrav.path === 'public', `path ${socket.nattrav.path}`);
    assert.equal(socket.nattrav.remote.family, 'IPv6');
    assert.equal(socket.nattrav.publicEndpoint.family, 'IPv6');
    const bytes = randomBytes(512 * 1024);
    assert.equal(await echoHash(socket, bytes), createHash('sha256').update(bytes).digest('hex'));
  });

  test('a dual-stack broker takes an IPv4 peer\'s registration over UDP and an IPv6 peer\'s, and connects each', async () => {
    const { port, events } = await broker('::');
    for (const [host, uri] of [['127.0.0.1', 'nattrav://dual-v4'], ['[::1]', 'nattrav://dual-v6']] as const) {
      const { server } = await startRecipient(`${host}:${port}`, uri);
      server.on('connection', (socket: NattravSocket) => socket.pipe(socket));
      closers.push(() => server.close());
      const registered = events.find((e) => e.type === 'registered' && e.uri === uri);
      assert.ok(registered !== undefined && registered.type === 'registered');
      assert.equal(registered.transport, undefined, `${uri} registered over UDP (an answer to an IPv4 peer must leave the udp6 socket)`);
      assert.equal(registered.publicEndpoint.family, host === '127.0.0.1' ? 'IPv4' : 'IPv6');
      const socket = await connect({ broker: `${host}:${port}`, uri, signal: AbortSignal.timeout(10_000) });
      closers.push(() => socket.destroy());
      const bytes = randomBytes(64 * 1024);
      assert.equal(await echoHash(socket, bytes), createHash('sha256').update(bytes).digest('hex'));
    }
  });

  test('an IPv6 initiator reaches a recipient registered over IPv4 through the relay at once, not after timeouts', async () => {
    const { port, events } = await broker('::');
    const { server } = await startRecipient(`127.0.0.1:${port}`, 'nattrav://cross-family');
    server.on('connection', (socket: NattravSocket) => socket.pipe(socket));
    closers.push(() => server.close());
    const socket = await connect({ broker: `[::1]:${port}`, uri: 'nattrav://cross-family', signal: AbortSignal.timeout(10_000) });
    closers.push(() => socket.destroy());
    assert.equal(socket.nattrav.path, 'relay');
    assert.deepEqual(socket.nattrav.trace.map((t) => t.strategy), ['relay'], 'no direct strategy tried across families');
    const scheduled = events.find((e) => e.type === 'scheduled');
    assert.ok(scheduled !== undefined && scheduled.type === 'scheduled');
    assert.deepEqual(scheduled.plan, ['relay']);
    const bytes = randomBytes(64 * 1024);
    assert.equal(await echoHash(socket, bytes), createHash('sha256').update(bytes).digest('hex'));
  });

  test('CLI: broker --listen [::]:0 serves IPv4 and IPv6 peers and logs where each registered from', async () => {
    const home = mkdtempSync(join(tmpdir(), 'nattrav-ipv6-cli-'));
    closers.push(() => rmSync(home, { recursive: true, force: true }));
    const child = spawn(process.execPath, [CLI_PATH, 'broker', '--listen', '[::]:0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: home } });
    closers.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const proc = new CliProcess(child);
    const listening = await proc.waitForEvent('listening', 10_000);
    assert.equal(listening.address, '::');
    const port = Number(listening.port);
    for (const host of ['127.0.0.1', '[::1]']) {
      const { server } = await startRecipient(`${host}:${port}`, `nattrav://cli-${host === '127.0.0.1' ? 'v4' : 'v6'}`, { keyDir: join(home, 'keys') });
      closers.push(() => server.close());
    }
    await until(() => proc.events.filter((e) => e.event === 'registered').length === 2, 5_000, 'two registrations logged');
    const registered = proc.events.filter((e) => e.event === 'registered');
    assert.equal(registered.some((e) => e.transport !== undefined), false, `both over UDP: ${proc.stderr}`);
    const families = registered.map((e) => (e.publicEndpoint as { family?: string } | undefined)?.family).sort();
    assert.deepEqual(families, ['IPv4', 'IPv6'], proc.stderr);
    child.kill('SIGTERM');
    assert.equal(await proc.exited, 143);
  });
});
