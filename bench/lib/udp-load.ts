/**
 * A windowed UDP request generator in Node for the registration benchmarks: several sockets
 * on 127.0.0.1, each keeping `window` requests in flight (matched by transaction ID), a new
 * one leaving as an answer arrives. A request may need a follow-up (a registration's proof
 * after its challenge): `onAnswer` returns it and it takes the same slot. Unanswered requests
 * are retransmitted (or given up) after `retransmitMs`. Bounded by `durationMs`.
 */
import { createSocket, type Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { TRANSACTION_ID_LENGTH } from '../../src/wire/constants.js';

/** Bytes 8..20 of a STUN message: its transaction ID. */
const TXID_AT = 8;
/**
 * A request unanswered this long was dropped (a full socket buffer): long enough that a busy
 * server's queue (the window's worth of slow requests, e.g. signature checks) is not mistaken
 * for a loss, which would make it do the work twice.
 */
const DEFAULT_RETRANSMIT_MS = 1_000;
/** Retransmissions of one request before it counts as lost. */
const MAX_RETRANSMITS = 4;

/** What an answer means for its request. */
export interface AnswerVerdict {
  /** Whether the request (or its flow) succeeded. */
  readonly ok: boolean;
  /** A follow-up request of the same flow (sent at once, in the same window slot; the flow is not done yet). */
  readonly followUp?: Buffer;
}

/** Options of {@link udpLoad}. */
export interface UdpLoadOptions {
  /** Server ports on 127.0.0.1; socket `i` sends to `ports[i % ports.length]`. */
  readonly ports: readonly number[];
  /** The sockets to send from (see {@link openSockets}); left open. */
  readonly sockets: readonly Socket[];
  readonly window: number;
  /** Hard bound on the run, ms. */
  readonly durationMs: number;
  /** The next request for socket `index`; undefined when that socket has no more. */
  next(index: number): Buffer | undefined;
  /** What an answer means; default: ok when it is a success response. */
  onAnswer?(index: number, answer: Buffer): AnswerVerdict;
  /** Retransmit (or give up) after this many ms. @default 1000 */
  readonly retransmitMs?: number;
  /** Resend an unanswered request (true) or give it up (false: measuring a rate, order matters). @default true */
  readonly retransmit?: boolean;
}

/** What {@link udpLoad} counted. */
export interface UdpLoadResult {
  /** Flows that ended with a success. */
  readonly succeeded: number;
  /** Flows that ended with an error answer. */
  readonly failed: number;
  /** Requests given up unanswered. */
  readonly lost: number;
  readonly seconds: number;
  /** True when every socket ran out of requests before the deadline. */
  readonly complete: boolean;
}

interface Pending {
  bytes: Buffer;
  sentAt: number;
  tries: number;
}

/** True when `answer` is a STUN success response (class bits 0b10). */
export function isSuccess(answer: Buffer): boolean {
  return answer.length >= 2 && (answer[0]! & 0x01) === 0x01 && (answer[1]! & 0x10) === 0;
}

/**
 * Opens `count` UDP sockets with large buffers, socket `i` on loopback address 127.0.1.(i+1):
 * one source address per socket, as separate peers behind separate NATs have. (The broker
 * bounds some work per source address, e.g. 1,024 proofs of key per nonce lifetime, which
 * one address would hit within seconds.)
 */
export async function openSockets(count: number): Promise<Socket[]> {
  if (count > 254) throw new Error(`at most 254 sockets (one loopback address each), not ${count}`);
  const sockets: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.bind(0, `127.0.1.${i + 1}`, resolve));
    sockets.push(socket);
  }
  return sockets;
}

/** Closes sockets from {@link openSockets}. */
export async function closeSockets(sockets: readonly Socket[]): Promise<void> {
  await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
}

/** Runs the load; resolves when every socket is done or the time is up. */
export async function udpLoad(options: UdpLoadOptions): Promise<UdpLoadResult> {
  const retransmitMs = options.retransmitMs ?? DEFAULT_RETRANSMIT_MS;
  const resend = options.retransmit ?? true;
  const onAnswer = options.onAnswer ?? ((_: number, answer: Buffer): AnswerVerdict => ({ ok: isSuccess(answer) }));
  const { sockets, ports } = options;
  const portOf = (index: number): number => ports[index % ports.length]!;
  const pending = sockets.map(() => new Map<string, Pending>());
  const exhausted = sockets.map(() => false);
  let succeeded = 0;
  let failed = 0;
  let lost = 0;
  const started = performance.now();
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const send = (index: number, bytes: Buffer, tries = 0): void => {
    pending[index]!.set(bytes.toString('latin1', TXID_AT, TXID_AT + TRANSACTION_ID_LENGTH), { bytes, sentAt: performance.now(), tries });
    sockets[index]!.send(bytes, portOf(index), '127.0.0.1');
  };
  const refill = (index: number): void => {
    const map = pending[index]!;
    while (!exhausted[index] && map.size < options.window) {
      const bytes = options.next(index);
      if (bytes === undefined) exhausted[index] = true;
      else send(index, bytes);
    }
    if (exhausted.every(Boolean) && pending.every((m) => m.size === 0)) finish();
  };
  const listeners = sockets.map((socket, index) => {
    const listener = (answer: Buffer): void => {
      const key = answer.toString('latin1', TXID_AT, TXID_AT + TRANSACTION_ID_LENGTH);
      if (!pending[index]!.delete(key)) return; // a late duplicate
      const verdict = onAnswer(index, answer);
      if (verdict.followUp !== undefined) send(index, verdict.followUp);
      else if (verdict.ok) succeeded++;
      else failed++;
      refill(index);
    };
    socket.on('message', listener);
    return listener;
  });
  const sweeper = setInterval(() => {
    const now = performance.now();
    pending.forEach((map, index) => {
      for (const [key, p] of map) {
        if (now - p.sentAt < retransmitMs) continue;
        if (resend && p.tries < MAX_RETRANSMITS) {
          p.sentAt = now;
          p.tries++;
          sockets[index]!.send(p.bytes, portOf(index), '127.0.0.1');
        } else {
          map.delete(key);
          lost++;
        }
      }
      refill(index);
    });
  }, Math.max(10, retransmitMs / 4));
  const deadline = setTimeout(finish, options.durationMs);
  for (let i = 0; i < sockets.length; i++) refill(i);
  await finished;
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sweeper);
  clearTimeout(deadline);
  const complete = exhausted.every(Boolean) && pending.every((m) => m.size === 0);
  sockets.forEach((socket, index) => socket.off('message', listeners[index]!));
  return { succeeded, failed, lost, seconds, complete };
}
