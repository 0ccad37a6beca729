/** WebSocket helpers for unit tests: a Binding over a WebSocket to the broker. */
import assert from 'node:assert/strict';
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
