/** Bulk transfer for the throughput benchmarks: one side writes `bytes`, the other counts them. */
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';

/** Chunk written at a time. */
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

/** Writes `bytes` to `socket` as fast as it drains, then ends it. */
export async function sendBytes(socket: Duplex, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
    left -= chunk.length;
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const drained = (): void => {
          socket.off('error', failed);
          resolve();
        };
        const failed = (err: Error): void => {
          socket.off('drain', drained);
          reject(err);
        };
        socket.once('drain', drained);
        socket.once('error', failed);
      });
    }
  }
  socket.end();
}

/** Resolves with the time in ms from the call until `bytes` arrived on `socket` (rejects when it ends first or `timeoutMs` passes). */
export function receiveBytes(socket: Duplex, bytes: number, timeoutMs: number): Promise<number> {
  const started = performance.now();
  let got = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${bytes} bytes within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      got += chunk.length;
      if (got >= bytes) {
        clearTimeout(timer);
        resolve(performance.now() - started);
      }
    });
    socket.once('end', () => got < bytes && reject(new Error(`the stream ended after ${got} of ${bytes} bytes`)));
    socket.once('error', reject);
  });
}

/** Bytes from `from` to `to`: MB/s (10^6 bytes per second). */
export async function throughput(from: Duplex, to: Duplex, bytes: number, timeoutMs: number): Promise<number> {
  const received = receiveBytes(to, bytes, timeoutMs);
  await sendBytes(from, bytes);
  const ms = await received;
  return bytes / 1e6 / (ms / 1000);
}
