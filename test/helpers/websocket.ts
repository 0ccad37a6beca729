/** WebSocket helpers for unit tests: a Binding over a WebSocket to the broker; an HTTP CONNECT proxy. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as netServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { createWebSocketStream, type WebSocket } from 'ws';
import { encodeMessage } from '../../src/wire/codec.js';
import { MessageClass, Method } from '../../src/wire/constants.js';
import { StunStreamDecoder } from '../../src/wire/framing.js';
import { StunMessage } from '../../src/wire/message.js';
import { getXorMappedAddress } from '../../src/wire/nattrav.js';

/** Sends a Binding over `ws` as a byte stream (split over two messages) and resolves with the XOR-MAPPED-ADDRESS answered. */
export async function bindingOver(ws: WebSocket): Promise<{ address: string; port: number }> {
  const stream = createWebSocketStream(ws);
  stream.on('error', () => undefined);
  const decoder = new StunStreamDecoder();
  const request = StunMessage.request(Method.Binding);
  const bytes = encodeMessage(request);
  // Split across two messages: the broker sees one byte stream, not message boundaries.
  stream.write(bytes.subarray(0, 7));
  stream.write(bytes.subarray(7));
  for await (const chunk of stream) {
    for (const message of decoder.push(chunk as Buffer)) {
      assert.equal(message.cls, MessageClass.SuccessResponse);
      assert.deepEqual(message.transactionId, request.transactionId);
      const mapped = getXorMappedAddress(message);
      assert.ok(mapped !== undefined, 'the answer has XOR-MAPPED-ADDRESS');
      return { address: mapped.address, port: mapped.port };
    }
  }
  assert.fail('the WebSocket closed before the Binding answer');
}

/**
 * A CONNECT proxy on loopback wanting `user:password` (when given); records the first line
 * of each request it was asked. Its close goes on `closers`.
 */
export async function connectProxy(closers: Array<() => unknown>, credentials?: string): Promise<{ url: (userinfo?: string) => string; asked: string[] }> {
  const asked: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = netServer((client) => {
    sockets.add(client);
    client.on('error', () => undefined);
    client.once('data', (head: Buffer) => {
      const text = head.toString('latin1');
      asked.push(text.split('\r\n')[0] ?? '');
      const auth = /Proxy-Authorization: Basic (\S+)/i.exec(text)?.[1];
      if (credentials !== undefined && auth !== Buffer.from(credentials).toString('base64')) {
        client.end('HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const [host, port] = (/^CONNECT (\S+):(\d+) /.exec(text) ?? []).slice(1);
      const upstream = netConnect({ host: host as string, port: Number(port) }, () => {
        client.write('HTTP/1.1 200 Connection established\r\n\r\n');
        client.pipe(upstream).pipe(client);
      });
      sockets.add(upstream);
      upstream.on('error', () => client.destroy());
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  const { port } = server.address() as { port: number };
  return { url: (userinfo = '') => `http://${userinfo === '' ? '' : `${userinfo}@`}127.0.0.1:${port}`, asked };
}
