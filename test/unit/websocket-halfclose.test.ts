/**
 * Half-close over a WebSocket stream (common/websocket-stream.ts) with TLS on top, on
 * loopback: one side ends its direction, the other reads to the end and can still send;
 * the first side reads what came back only after the other side closed and the
 * WebSocket's close handshake is over (a slow reader, like `connect` writing to a busy
 * stdout), and still gets every byte (SHA-256). Node's TLS over a JS stream destroys
 * itself, unread bytes and all, when the stream under it closes: the stream must leave
 * its closing to the TLS socket. Then the same through the broker's relay, both peers on
 * WebSockets, end-to-end TLS (the default), the reader slow on each side in turn.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocketServer } from 'ws';
import { beforeTls, webSocketAsSocket } from '../../src/common/websocket-stream.js';
import { connect } from '../../src/peer/connect.js';
import type { NattravSocket } from '../../src/peer/info.js';
import { webSocketDialer } from '../../src/peer/web/dialer.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { startRecipient, startWatchedBroker, until } from '../helpers/loopback.js';

const closers: Array<() => unknown> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
/** How long the slow reader waits after the other side closed: the WebSocket close handshake is one loopback round trip. */
const SLOW_READER_MS = 500;

/** Everything `socket` delivers until its end (resolves at 'end'; rejects if it closes or fails first). */
function readAll(socket: NodeJS.ReadableStream & { once(event: 'close', listener: () => void): unknown }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`closed before its end, after ${Buffer.concat(chunks).length} bytes`)));
  });
}

/** A ws server on loopback whose every WebSocket becomes a stream (half-open) handed to `onStream`. */
async function streamServer(onStream: (stream: Socket) => void): Promise<number> {
  const server: Server = createServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  server.on('upgrade', (request, raw: Socket, head) => wss.handleUpgrade(request, raw, head, (ws) => onStream(webSocketAsSocket(ws, raw, true))));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => {
    wss.close();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as { port: number }).port;
}

describe('WebSocket stream half-close under TLS', () => {
  test('our end reaches the other side as EOF, it still sends, and a slow reader gets every byte after the WebSocket closed', { timeout: 30_000 }, async () => {
    const ca = await createCa({ name: 'half-close CA' });
    const issued = await issueCertificate({ ca, uri: 'nattrav-broker://halfclose' });
    const request = randomBytes(256 * 1024);
    const reply = randomBytes(256 * 1024);
    let serverGot: Promise<Buffer> | undefined;
    let serverClosed: Promise<unknown> | undefined;
    let serverStreamClosed: Promise<unknown> | undefined;
    const port = await streamServer((stream) => {
      serverStreamClosed = once(stream, 'close');
      const secure = new TLSSocket(beforeTls(stream), { isServer: true, cert: issued.certPem, key: issued.keyPem });
      secure.on('error', () => undefined);
      serverClosed = once(secure, 'close');
      // Reads to the client's end, then answers on its own direction, still open.
      serverGot = readAll(secure).then((data) => {
        secure.end(reply);
        return data;
      });
    });
    const stream = await webSocketDialer(`ws://127.0.0.1:${port}/`).dial({ host: '127.0.0.1', port }, AbortSignal.timeout(10_000));
    const streamClosed = once(stream, 'close');
    const client = tlsConnect({ socket: beforeTls(stream), ca: ca.certPem, checkServerIdentity: () => undefined });
    closers.push(() => client.destroy());
    await once(client, 'secureConnect');
    client.pause();
    client.end(request);
    await until(() => serverGot !== undefined, 10_000, 'the server got the stream');
    assert.equal(sha256(await (serverGot as Promise<Buffer>)), sha256(request), 'the server read our bytes to our end');
    // The server is done both ways: its TLS socket, then its WebSocket stream close; the close handshake reaches us.
    await serverClosed;
    await serverStreamClosed;
    await sleep(SLOW_READER_MS);
    assert.equal(client.destroyed, false, 'our TLS socket is still there with the bytes we have not read');
    const back = readAll(client);
    client.resume();
    assert.equal(sha256(await back), sha256(reply));
    // Once TLS is done with it, the stream under it closes (the WebSocket is not left open).
    await streamClosed;
  });
});

describe('relayed connection over WebSockets, end-to-end TLS', () => {
  test('a slow reader on either side gets every byte after the other side ended and closed', { timeout: 60_000 }, async () => {
    const { broker, address } = await startWatchedBroker(closers, { webSockets: [{ host: '127.0.0.1', port: 0 }] });
    const url = `ws://127.0.0.1:${broker.webSocketEndpoints()[0]?.port}/`;
    const { server } = await startRecipient(address, 'nattrav://web-halfclose', { dialer: webSocketDialer(url) });
    closers.push(() => server.close());
    const incoming: NattravSocket[] = [];
    server.on('connection', (socket: NattravSocket) => {
      socket.on('error', () => undefined);
      incoming.push(socket);
    });
    for (const slow of ['initiator', 'recipient'] as const) {
      const connection = await connect({ broker: address, uri: 'nattrav://web-halfclose', dialer: webSocketDialer(url), knownKeysFile: false, timeoutMs: 25_000 });
      closers.push(() => connection.destroy());
      assert.equal(connection.nattrav.path, 'relay');
      assert.equal(connection.nattrav.tls, true);
      await until(() => incoming.length > 0, 10_000, 'the recipient got the connection');
      const accepted = incoming.shift() as NattravSocket;
      // `writer` ends first; `reader` then answers and ends; `writer` reads the answer late.
      const [writer, reader] = slow === 'initiator' ? [connection, accepted] : [accepted, connection];
      const first = randomBytes(192 * 1024);
      const answer = randomBytes(192 * 1024);
      const readerGot = readAll(reader).then((data) => {
        reader.end(answer);
        return data;
      });
      const readerClosed = once(reader, 'close');
      writer.pause();
      writer.end(first);
      assert.equal(sha256(await readerGot), sha256(first), `${slow === 'initiator' ? 'recipient' : 'initiator'} read to the end`);
      await readerClosed;
      await sleep(SLOW_READER_MS);
      assert.equal(writer.destroyed, false, `the slow ${slow}'s socket is still there with the bytes it has not read`);
      const back = readAll(writer);
      writer.resume();
      assert.equal(sha256(await back), sha256(answer), `the slow ${slow} got every byte`);
    }
  });
});
