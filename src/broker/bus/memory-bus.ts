/**
 * A {@link BrokerBus} inside one process: brokers of one {@link MemoryBusHub} reach each
 * other by ID. For tests (several brokers in one process on a shared memory registry)
 * and for embedding several brokers in one program. Delivery is asynchronous (next
 * tick), like a network: a handler never runs inside `send`.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, NattravError } from '../../errors.js';
import type { BrokerBus } from './bus.js';

type Handler = (message: Uint8Array, from: string) => void;

/** The brokers of one in-process bus. */
export class MemoryBusHub {
  readonly #members = new Map<string, { handler: Handler | undefined }>();

  /** Joins the hub as `id` (default: a fresh random ID); throws ERR_INVALID_ARGUMENT for an ID already taken. */
  join(id: string = `m-${randomBytes(8).toString('hex')}`): BrokerBus {
    if (this.#members.has(id)) throw new NattravError(ErrorCode.InvalidArgument, `bus ID ${id} is already taken on this hub`);
    const member: { handler: Handler | undefined } = { handler: undefined };
    this.#members.set(id, member);
    let closed = false;
    return {
      id,
      send: (to, message) => {
        if (closed) return;
        const copy = Uint8Array.from(message); // the receiver must not see later changes of the sender's buffer
        setImmediate(() => this.#members.get(to)?.handler?.(copy, id));
      },
      onMessage: (handler) => {
        member.handler = handler;
      },
      close: async () => {
        if (closed) return;
        closed = true;
        if (this.#members.get(id) === member) this.#members.delete(id);
      },
    };
  }
}
