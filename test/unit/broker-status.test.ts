/**
 * The watched broker on loopback: the monitor's counters against the connections the
 * test made (as the peers saw them), /metrics through a strict Prometheus text parser,
 * the status page's numbers, /healthz, and the HTTP server's hardening.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect as tcpConnect, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { createBroker } from '../../src/broker/broker.js';
import { BrokerMonitor, type BrokerStatus } from '../../src/broker/http/monitor.js';
import { renderStatusPage } from '../../src/broker/http/status-page.js';
import { serveBrokerStatus, type BrokerStatusServer } from '../../src/broker/http/status-server.js';
import { MemoryRegistry } from '../../src/broker/registry/memory.js';
import { connect } from '../../src/peer/connect.js';
import type { ConnectionPath } from '../../src/peer/info.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';
import { startRecipient } from '../helpers/loopback.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** A plain HTTP/1.1 exchange on a raw socket: what came back until the server closed (or `waitMs` passed). */
async function raw(port: number, request: string, waitMs = 5_000): Promise<{ text: string; closedMs: number }> {
  const socket = tcpConnect(port, '127.0.0.1');
  closers.push(() => socket.destroy());
  await once(socket, 'connect');
  const started = Date.now();
  socket.write(request);
  let text = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  socket.on('error', () => undefined);
  await Promise.race([once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, waitMs))]);
  return { text, closedMs: Date.now() - started };
}

async function startWatched(options: Parameters<typeof serveBrokerStatus>[1] = {}, registry?: MemoryRegistry): Promise<{ address: string; http: BrokerStatusServer; url: string; close: () => Promise<void> }> {
  const broker = createBroker({ host: '127.0.0.1', port: 0, recipientTimeoutMs: 400, ...(registry === undefined ? {} : { registry }) });
  const http = serveBrokerStatus(broker, { port: 0, ...options });
  const close = async (): Promise<void> => {
    await http.close();
    await broker.close();
  };
  closers.push(close);
  const { port } = await broker.listen();
  const bound = await http.listen();
  return { address: `127.0.0.1:${port}`, http, url: `http://127.0.0.1:${bound.port}`, close };
}

describe('the strict Prometheus text parser (test helper)', () => {
  test('accepts a valid exposition and refuses what the format forbids', () => {
    const good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1\\"q"} 3\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n';
    const families = parsePrometheusText(good);
    assert.equal(sampleValue(families, 'a_total', { x: '1"q' }), 3);
    assert.equal(sampleValue(families, 'h_count'), 2);
    const bad = [
      ['no final newline', '# TYPE a counter\na 1'],
      ['bad metric name', '# TYPE 1a counter\n1a 1\n'],
      ['bad value', '# TYPE a counter\na one\n'],
      ['unterminated label', '# TYPE a counter\na{x="1} 1\n'],
      ['bad escape', '# TYPE a counter\na{x="\\t"} 1\n'],
      ['duplicate series', '# TYPE a counter\na{x="1"} 1\na{x="1"} 2\n'],
      ['TYPE after samples', '# TYPE a counter\na 1\n# TYPE a counter\n'],
      ['family split in two', '# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na 2\n'],
      ['buckets not cumulative', '# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n'],
      ['+Inf bucket differs from _count', '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n'],
    ] as const;
    for (const [why, text] of bad) assert.throws(() => parsePrometheusText(text), Error, why);
  });
});

describe('broker monitor, /metrics and the status page (loopback)', () => {
  test('counters equal the connections made: by path as the peers saw them, failures, registrations; /healthz follows the broker', async () => {
    const registry = new MemoryRegistry();
    const watched = await startWatched({}, registry);
    const { server } = await startRecipient(watched.address, 'nattrav://watched', { tls: false });
    closers.push(() => server.close());
    const paths: ConnectionPath[] = [];
    for (let i = 0; i < 3; i++) {
      const socket = await connect({ broker: watched.address, uri: 'nattrav://watched', tls: false, timeoutMs: 10_000 });
      paths.push(socket.nattrav.path);
      socket.destroy();
    }
    // A registration whose holder never answers: the broker gives the attempt up after recipientTimeoutMs.
    const silent: UdpSocket = createSocket('udp4');
    closers.push(() => silent.close());
    silent.bind(0, '127.0.0.1');
    await once(silent, 'listening');
    await registry.put({ uri: 'nattrav://silent', publicEndpoint: { family: 'IPv4', address: '127.0.0.1', port: silent.address().port }, privateEndpoints: [], expiresAt: Date.now() + 60_000 });
    await assert.rejects(connect({ broker: watched.address, uri: 'nattrav://silent', tls: false, timeoutMs: 10_000 }));

    const metricsResponse = await fetch(`${watched.url}/metrics`);
    assert.equal(metricsResponse.status, 200);
    assert.match(metricsResponse.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusText(await metricsResponse.text());
    const scheduled = (path: string): number => sampleValue(families, 'nattrav_broker_attempts_total', { path, result: 'scheduled' });
    for (const path of new Set(paths)) assert.equal(scheduled(path), paths.filter((p) => p === path).length, `attempts on path ${path}`);
    const failed = sampleValue(families, 'nattrav_broker_attempts_total', { path: 'none', result: 'failed' });
    assert.ok(failed >= 1, 'the silent recipient failed at least one attempt');
    assert.equal(sampleValue(families, 'nattrav_broker_attempts_started_total'), paths.length + failed, 'every attempt started has finished');
    assert.equal(sampleValue(families, 'nattrav_broker_registrations_active'), 2, 'the recipient and the planted registration');
    assert.equal(sampleValue(families, 'nattrav_broker_registrations_total', { kind: 'new' }), 1);
    assert.equal(sampleValue(families, 'nattrav_broker_setup_seconds_count', { path: paths[0] as string }), paths.filter((p) => p === paths[0]).length);
    assert.equal(families.get('nattrav_broker_setup_seconds')?.type, 'histogram');
    assert.equal(sampleValue(families, 'nattrav_broker_relays_active'), 0);
    assert.equal(families.get('nattrav_broker_attempts_total')?.type, 'counter');

    const page = await fetch(`${watched.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const html = await page.text();
    assert.match(html, /data-metric="registrations">2</);
    assert.match(html, new RegExp(`data-metric="attempts">${paths.length + failed}<`));
    assert.match(html, new RegExp(`data-metric="path-scheduled" data-path="${paths[0] as string}">${scheduled(paths[0] as string)}<`));
    assert.match(html, new RegExp(`data-metric="path-failed" data-path="none">${failed}<`));
    assert.match(html, /<meta http-equiv="refresh" content="5">/);
    assert.match(html, /nattrav:\/\/silent/, 'the failed attempt is listed');
    assert.doesNotMatch(html, /<script|<link|src=|url\(/, 'no scripts and no external assets');

    const status = (await (await fetch(`${watched.url}/status.json`)).json()) as BrokerStatus;
    assert.equal(status.registrations, 2);
    assert.equal(status.successRate, paths.length / (paths.length + failed));

    const healthy = await fetch(`${watched.url}/healthz`);
    assert.deepEqual([healthy.status, await healthy.text()], [200, 'ok\n']);
    const head = await fetch(`${watched.url}/healthz`, { method: 'HEAD' });
    assert.deepEqual([head.status, head.headers.get('content-length'), await head.text()], [200, '3', '']);
  });

  test('/healthz says 503 once the broker stopped listening', async () => {
    const broker = createBroker({ host: '127.0.0.1', port: 0 });
    const http = serveBrokerStatus(broker);
    closers.push(() => http.close(), () => broker.close());
    const { port } = await http.listen();
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 503, 'not yet listening');
    await broker.listen();
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    await broker.close();
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 503);
  });

  test('a monitor counts registrations and refreshes apart, and stops counting when closed', async () => {
    const broker = createBroker({ host: '127.0.0.1', port: 0 });
    closers.push(() => broker.close());
    const monitor = new BrokerMonitor(broker);
    const endpoint = { family: 'IPv4' as const, address: '127.0.0.1', port: 1 };
    broker.emit('event', { type: 'registered', uri: 'nattrav://a', publicEndpoint: endpoint, lifetimeMs: 1, refresh: false });
    broker.emit('event', { type: 'registered', uri: 'nattrav://a', publicEndpoint: endpoint, lifetimeMs: 1, refresh: true });
    broker.emit('event', { type: 'registered', uri: 'nattrav://a', publicEndpoint: endpoint, lifetimeMs: 1, refresh: true });
    const scheduled = { type: 'scheduled', uri: 'nattrav://a', attemptId: '00', plan: ['direct'], skipped: [], rttInitiatorMs: 1, rttRecipientMs: 1 } as const;
    broker.emit('event', { ...scheduled, strategy: 'direct', initiatorMapping: 'sequential(+2)', recipientMapping: 'eim', setupMs: 30 });
    broker.emit('event', { ...scheduled, strategy: 'relay', initiatorMapping: 'random', recipientMapping: 'something new', setupMs: 3_000 });
    monitor.close();
    broker.emit('event', { type: 'registered', uri: 'nattrav://b', publicEndpoint: endpoint, lifetimeMs: 1, refresh: false });
    const status = await monitor.status();
    assert.deepEqual([status.registrationsMade, status.refreshes], [1, 2]);
    assert.deepEqual(status.natPairs, [
      { initiator: 'sequential', recipient: 'eim', attempts: 1 },
      { initiator: 'random', recipient: 'unknown', attempts: 1 },
    ]);
    // 30 ms falls in the 50 ms bucket (index 1), 3 s in the 5 s bucket (index 7).
    assert.deepEqual(status.setup.counts, [0, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert.equal(status.successRate, 1);
  });
});

describe('the monitor and a shared registry', () => {
  test('concurrent scrapes and page requests share one count of the registry (a Redis count scans every key)', async () => {
    class SlowRegistry extends MemoryRegistry {
      counts = 0;
      override async size(): Promise<number> {
        this.counts++;
        await new Promise((resolve) => setTimeout(resolve, 50));
        return super.size();
      }
    }
    const registry = new SlowRegistry({ sweepIntervalMs: 0 });
    const broker = createBroker({ host: '127.0.0.1', port: 0, registry });
    const monitor = new BrokerMonitor(broker);
    try {
      await Promise.all([...Array.from({ length: 10 }, () => monitor.metricsText()), ...Array.from({ length: 10 }, () => monitor.status())]);
      assert.equal(registry.counts, 1, 'twenty concurrent requests, one count');
      await monitor.metricsText();
      assert.equal(registry.counts, 2, 'a later request counts afresh (no stale number)');
    } finally {
      monitor.close();
      await broker.close();
      await registry.close();
    }
  });
});

describe('the monitor over time', () => {
  test('samples every sampleIntervalMs, keeps historySamples, and the page draws them once there are two', async () => {
    const registry = new MemoryRegistry();
    const broker = createBroker({ host: '127.0.0.1', port: 0, registry });
    closers.push(() => broker.close());
    const monitor = new BrokerMonitor(broker, { sampleIntervalMs: 40, historySamples: 3 });
    closers.push(() => monitor.close());
    const before = await monitor.status();
    assert.equal(before.history.length, 0);
    assert.match(renderStatusPage(before), /the charts appear after two samples/);
    await registry.put({ uri: 'nattrav://sampled', publicEndpoint: { family: 'IPv4', address: '127.0.0.1', port: 9 }, privateEndpoints: [], expiresAt: Date.now() + 60_000 });
    const deadline = Date.now() + 5_000;
    let status = before;
    while (status.history.length < 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 40));
      status = await monitor.status();
    }
    assert.equal(status.history.length, 3);
    await new Promise((resolve) => setTimeout(resolve, 200));
    status = await monitor.status();
    assert.equal(status.history.length, 3, 'never more than historySamples');
    assert.equal(status.history.at(-1)?.registrations, 1);
    assert.ok((status.history[0]?.at ?? 0) < (status.history[2]?.at ?? 0), 'oldest first');
    const html = renderStatusPage(status);
    assert.match(html, /<figcaption>Registrations and active relays<\/figcaption><svg/);
    assert.match(html, /registrations: 1<\/text>/);
    monitor.close();
    const closed = (await monitor.status()).history.at(-1)?.at;
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal((await monitor.status()).history.at(-1)?.at, closed, 'a closed monitor samples no more');
    assert.throws(() => new BrokerMonitor(broker, { sampleIntervalMs: 0 }), /monitor option sampleIntervalMs must be a positive integer/);
  });
});

describe('status server hardening', () => {
  test('GET/HEAD only, fixed routes, long targets and big headers refused; the server stays up', async () => {
    const { url, http } = await startWatched();
    const { port } = http.address();
    const post = await fetch(`${url}/`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    for (const method of ['PUT', 'DELETE', 'OPTIONS']) assert.equal((await fetch(`${url}/metrics`, { method })).status, 405, method);
    for (const path of ['/nope', '/metrics/', '/index.html', '/%2e%2e/etc/passwd']) assert.equal((await fetch(`${url}${path}`)).status, 404, path);
    assert.equal((await fetch(`${url}/metrics?x=1`)).status, 200, 'a query string is ignored');
    assert.equal((await fetch(`${url}/?${'a'.repeat(3_000)}`)).status, 414);
    const huge = await raw(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`);
    assert.match(huge.text, /^HTTP\/1\.1 431 /);
    const garbage = await raw(port, 'NOT HTTP AT ALL\r\n\r\n');
    assert.match(garbage.text, /^HTTP\/1\.1 400 /);
    assert.equal((await fetch(`${url}/healthz`)).status, 200, 'still serving');
  });

  test('a slow client is cut after the header deadline; connections beyond the cap are closed at once', async () => {
    const { http, url } = await startWatched({ headersTimeoutMs: 500, requestTimeoutMs: 1_000, maxConnections: 2 });
    const { port } = http.address();
    const slow = await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\n', 8_000);
    assert.ok(slow.closedMs < 8_000, `the server closed the slow request (after ${slow.closedMs} ms)`);
    assert.match(slow.text, /^HTTP\/1\.1 408 /);
    const held: Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const socket = tcpConnect(port, '127.0.0.1');
      closers.push(() => socket.destroy());
      await once(socket, 'connect');
      held.push(socket);
    }
    const extra = await raw(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 3_000);
    assert.equal(extra.text, '', 'the third connection got no answer');
    assert.ok(extra.closedMs < 3_000, 'and was closed');
    for (const socket of held) socket.destroy();
    // Once the held connections are gone the server answers again.
    let status = 0;
    for (let i = 0; i < 20 && status !== 200; i++) {
      status = await fetch(`${url}/healthz`).then((r) => r.status, () => 0);
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(status, 200);
  });

  test('a failing handler answers 500 and a warning; the broker and the server carry on', async () => {
    class FailingRegistry extends MemoryRegistry {
      override size(): Promise<number> {
        return Promise.reject(new Error('registry down'));
      }
    }
    const { http, url } = await startWatched({}, new FailingRegistry());
    const warnings: Error[] = [];
    http.on('warning', (err: Error) => warnings.push(err));
    assert.equal((await fetch(`${url}/metrics`)).status, 500);
    assert.equal((await fetch(`${url}/`)).status, 500);
    assert.match(warnings[0]?.message ?? '', /registry down/);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
  });

  test('bad options are refused naming the option', () => {
    const broker = createBroker({ host: '127.0.0.1', port: 0 });
    assert.throws(() => serveBrokerStatus(broker, { port: 70_000 }), /status server port/);
    assert.throws(() => serveBrokerStatus(broker, { maxConnections: 0 }), /maxConnections must be a positive integer/);
    assert.throws(() => serveBrokerStatus(broker, { headersTimeoutMs: 5_000, requestTimeoutMs: 1_000 }), /headersTimeoutMs/);
  });

  test('listen twice at once binds once; close during listen leaves nothing bound', async () => {
    const broker = createBroker({ host: '127.0.0.1', port: 0 });
    const twice = serveBrokerStatus(broker);
    closers.push(() => twice.close());
    const [first, second] = await Promise.all([twice.listen(), twice.listen()]);
    assert.deepEqual(first, second);
    const closing = serveBrokerStatus(broker);
    const listening = closing.listen();
    await closing.close();
    await assert.rejects(listening, (err: Error & { code?: string }) => err.code === 'ERR_CLOSED');
    assert.throws(() => closing.address(), /not listening/);
    await twice.close();
    await twice.close();
    await assert.rejects(fetch(`http://127.0.0.1:${first.port}/healthz`), 'closed means closed');
  });

  test('a port in use is ERR_ADDRESS_IN_USE naming the address', async () => {
    const { http } = await startWatched();
    const broker = createBroker({ host: '127.0.0.1', port: 0 });
    const second = serveBrokerStatus(broker, { port: http.address().port });
    await assert.rejects(second.listen(), (err: Error & { code?: string }) => err.code === 'ERR_ADDRESS_IN_USE' && /127\.0\.0\.1:\d+: port \d+ is in use/.test(err.message));
    await second.close();
  });

  test('the page escapes everything peers can put in it', async () => {
    const broker = createBroker({ host: '127.0.0.1', port: 0 });
    const status = await new BrokerMonitor(broker).status();
    const evil = '<script>alert("x")</script>';
    const html = renderStatusPage({ ...status, recent: [{ at: 0, uri: `nattrav://${evil}`, path: 'none', result: 'failed', reason: `refused: ${evil}` }] }, { title: evil });
    assert.doesNotMatch(html, /<script/);
    assert.match(html, /nattrav:\/\/&#60;script&#62;alert\(&#34;x&#34;\)&#60;\/script&#62;/);
  });
});
