/**
 * The IPC channel between the primary of `nattrav broker --workers N` and one worker
 * (Node `cluster`, `serialization: 'advanced'`, so Buffers and Uint8Arrays cross as
 * bytes). Messages posted in one turn of the event loop leave as one batch: under load a
 * worker's many registry calls and bus messages cost one IPC write, not one each
 * (measured in the README's "Several cores" section). Messages with a socket handle
 * leave at once, after the batch queued before them, so order is kept.
 */
import type { Socket } from 'node:net';

/** What crosses the channel: a tagged plain object (structured clone). */
export interface IpcMessage {
  /** The message's kind (see primary.ts and worker-router.ts). */
  readonly nt: string;
  readonly [field: string]: unknown;
}

/** The sending side of a channel: `process` in a worker, a `cluster.Worker` in the primary. */
export interface IpcTarget {
  send(message: IpcMessage, handle?: Socket, options?: { keepOpen?: boolean }, callback?: (error: Error | null) => void): boolean;
  connected?: boolean;
  isConnected?(): boolean;
}

/** The tag of a batch of messages. */
const BATCH = 'nt-batch';

/** One end of an IPC channel, batching what is posted in one turn of the event loop. */
export class IpcPort {
  readonly #target: IpcTarget;
  #queue: IpcMessage[] = [];
  #scheduled = false;

  constructor(target: IpcTarget) {
    this.#target = target;
  }

  /** Queues `message`; the queue leaves as one batch once this turn of the event loop is over. */
  post(message: IpcMessage): void {
    this.#queue.push(message);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Sends what is queued, then `message` with `handle` (the socket is closed here once sent). */
  postHandle(message: IpcMessage, handle: Socket): void {
    this.flush();
    this.#send(message, handle);
  }

  /** Sends what is queued now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#send(batch.length === 1 ? (batch[0] as IpcMessage) : { nt: BATCH, m: batch });
  }

  #send(message: IpcMessage, handle?: Socket): void {
    const target = this.#target;
    const connected = target.isConnected?.() ?? target.connected ?? true;
    if (!connected) return; // the other end is gone: dropped, like a datagram to a dead host
    try {
      target.send(message, handle, {}, () => undefined);
    } catch {
      // The channel closed between the check and the send: dropped as above.
    }
  }
}

/** Calls `handler` for each message `raw` carries (a batch, or one message with its handle). */
export function unbatch(raw: unknown, handle: unknown, handler: (message: IpcMessage, handle: Socket | undefined) => void): void {
  if (!isIpcMessage(raw)) return;
  if (raw.nt === BATCH) {
    const batch = raw['m'];
    if (Array.isArray(batch)) for (const one of batch) if (isIpcMessage(one)) handler(one, undefined);
    return;
  }
  handler(raw, isSocket(handle) ? handle : undefined);
}

function isIpcMessage(value: unknown): value is IpcMessage {
  return typeof value === 'object' && value !== null && typeof (value as { nt?: unknown }).nt === 'string';
}

function isSocket(value: unknown): value is Socket {
  return typeof value === 'object' && value !== null && typeof (value as { write?: unknown }).write === 'function';
}

/** Bytes that crossed the channel (a Uint8Array after structured clone) as a Buffer over the same memory. */
export function asBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return Buffer.alloc(0);
}
