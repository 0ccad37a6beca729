/**
 * The broker's WebSocket listeners (broker/websocket.ts): a WebSocket, plain or
 * TLS with the broker's certificate, carries what a TCP connection to the broker
 * carries (here Binding, answered with the address of the TCP connection under the
 * WebSocket), under the same per-source caps; a plain HTTP request gets 426;
 * messages over maxPayload and compression are refused; bad options are named.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { WebSocket, type ClientOptions } from 'ws';
import { createBroker, type BrokerEvent } from '../../src/broker/broker.js';
import { WS_MAX_PAYLOAD } from '../../src/broker/websocket.js';
import { ErrorCode } from '../../src/errors.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { startWatchedBroker } from '../helpers/loopback.js';
import { bindingOver } from '../helpers/websocket.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

/** Opens a WebSocket to `url`, closed in teardown. */
async function openWs(url: string, options: ClientOptions = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...options });
  closers.push(() => ws.terminate());
  await once(ws, 'open');
  return ws;
}

describe('broker WebSocket listeners', () => {
  test('ws: Binding over a WebSocket is answered with the address of the TCP connection under it', async () => {
    const { broker, events } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const [endpoint] = broker.webSocketEndpoints();
    assert.ok(endpoint !== undefined);
    assert.equal(endpoint.tls, false);
    const ws = await openWs(`ws://127.0.0.1:${endpoint.port}/nattrav`);
    const local = (ws as unknown as { _socket: { localPort: number } })._socket.localPort;
    assert.deepEqual(await bindingOver(ws), { address: '127.0.0.1', port: local });
    assert.ok(events.some((e: BrokerEvent) => e.type === 'binding' && e.transport === 'tcp'));
  });

  test('wss: TLS 1.3 with the broker certificate, a client trusting its CA gets the Binding answered', async () => {
    const ca = await createCa({ name: 'broker CA' });
    const issued = await issueCertificate({ ca, uri: 'nattrav-broker://ws-test' });
    const { broker } = await startWatchedBroker(closers, { cert: issued.certPem, key: issued.keyPem, webSockets: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0, tls: false }] });
    const [secure, plain] = broker.webSocketEndpoints();
    assert.equal(secure?.tls, true);
    assert.equal(plain?.tls, false);
    const ws = await openWs(`wss://127.0.0.1:${secure?.port}/`, { ca: ca.certPem, checkServerIdentity: () => undefined } as unknown as ClientOptions);
    assert.equal((ws as unknown as { _socket: { getProtocol(): string } })._socket.getProtocol(), 'TLSv1.3');
    assert.equal((await bindingOver(ws)).address, '127.0.0.1');
    // Without the CA, the broker's certificate is not trusted.
    const untrusting = new WebSocket(`wss://127.0.0.1:${secure?.port}/`);
    const [err] = (await once(untrusting, 'error')) as [Error & { code?: string }];
    assert.match(String(err.code), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
  });

  test('per-source cap: WebSockets count as connections of their TCP source', async () => {
    const { broker, events } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }], limits: { maxConnectionsPerSource: 2 } });
    const port = broker.webSocketEndpoints()[0]?.port;
    await openWs(`ws://127.0.0.1:${port}/`);
    await openWs(`ws://127.0.0.1:${port}/`);
    const third = await openWs(`ws://127.0.0.1:${port}/`);
    // Over the cap the broker closes the oldest or the new connection; either way one is refused and reported.
    await Promise.race([once(third, 'close'), new Promise((resolve) => setTimeout(resolve, 200))]);
    assert.ok(events.some((e) => e.type === 'limited' && e.kind === 'connections-per-source'), `limited events: ${JSON.stringify(events.filter((e) => e.type === 'limited'))}`);
  });

  test('a message over maxPayload closes the WebSocket with 1009; compression is not offered', async () => {
    const { broker } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const port = broker.webSocketEndpoints()[0]?.port;
    const ws = await openWs(`ws://127.0.0.1:${port}/`, { perMessageDeflate: true });
    assert.equal(ws.extensions, '', 'no permessage-deflate negotiated');
    ws.send(Buffer.alloc(WS_MAX_PAYLOAD + 1));
    const [code] = (await once(ws, 'close')) as [number];
    assert.equal(code, 1009);
  });

  test('a plain HTTP request gets 426 Upgrade Required', async () => {
    const { broker } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const port = broker.webSocketEndpoints()[0]?.port;
    const req = httpRequest({ host: '127.0.0.1', port, path: '/' });
    req.end();
    const [res] = (await once(req, 'response')) as [{ statusCode: number; resume(): void }];
    res.resume();
    assert.equal(res.statusCode, 426);
  });

  test('close() ends the listener and every WebSocket', async () => {
    const broker = createBroker({ host: '127.0.0.1', port: 0, webSockets: [{ host: '127.0.0.1', port: 0 }] });
    closers.push(() => broker.close());
    await broker.listen();
    const port = broker.webSocketEndpoints()[0]?.port;
    const ws = await openWs(`ws://127.0.0.1:${port}/`);
    const closed = once(ws, 'close');
    await broker.close();
    await closed;
    const late = new WebSocket(`ws://127.0.0.1:${port}/`);
    const [err] = (await once(late, 'error')) as [Error & { code?: string }];
    assert.equal(err.code, 'ECONNREFUSED');
  });

  test('bad options are named: wss without a certificate, a bad port, a port in use', async () => {
    assert.throws(() => createBroker({ webSockets: [{ host: '127.0.0.1', port: 443, tls: true }] }), (err: Error & { code?: string }) => err.code === ErrorCode.InvalidArgument && /webSockets\[0\] asks for wss .* no cert and key/.test(err.message));
    assert.throws(() => createBroker({ webSockets: [{ host: '127.0.0.1', port: 70_000 }] }), /webSockets\[0\]\.port: port must be an integer/);
    assert.throws(() => createBroker({ webSockets: [{ host: '', port: 80 }] }), /webSockets\[0\] must have a host/);
    const { broker } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const taken = broker.webSocketEndpoints()[0]?.port as number;
    const second = createBroker({ host: '127.0.0.1', port: 0, webSockets: [{ host: '127.0.0.1', port: taken }] });
    closers.push(() => second.close());
    await assert.rejects(second.listen(), (err: Error & { code?: string }) => err.code === ErrorCode.AddressInUse && err.message.includes(`WebSocket 127.0.0.1:${taken}`));
    // Nothing of the failed broker stays bound: its UDP/TCP port can be listened on again by a new broker.
    const again = createBroker({ host: '127.0.0.1', port: 0 });
    closers.push(() => again.close());
    const { port } = (await again.listen()) as AddressInfo;
    assert.ok(port > 0);
  });
});
