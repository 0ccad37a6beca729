/**
 * Lookups under load: an initiator's Connect for a registered URI, over a fresh TCP exchange
 * (as a real initiator opens one), counted when the broker's answer to the lookup, the
 * ConnectionRequest carrying the attempt ID the initiator proposed, reaches the recipient's
 * registered UDP socket. The exchange is then closed (the attempt goes no further).
 * `parallel` lookups at a time, bounded by `durationMs`.
 */
import { randomBytes } from 'node:crypto';
import type { Socket as UdpSocket } from 'node:dgram';
import { connect as netConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { decodeDatagram, encodeMessage } from '../../src/wire/codec.js';
import { ATTEMPT_ID_LENGTH, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addUri, getAttemptId } from '../../src/wire/nattrav.js';

/** A lookup whose ConnectionRequest has not arrived after this long counts as failed. */
const LOOKUP_TIMEOUT_MS = 2_000;

/** Options of {@link lookupLoad}. */
export interface LookupLoadOptions {
  /** Broker TCP ports on 127.0.0.1; worker `w` connects to `ports[w % ports.length]`. */
  readonly ports: readonly number[];
  /** Registered recipients: URI and the UDP socket the URI was registered from. */
  readonly recipients: ReadonlyArray<{ readonly uri: string; readonly socket: UdpSocket }>;
  readonly parallel: number;
  readonly durationMs: number;
}

/** What {@link lookupLoad} counted. */
export interface LookupLoadResult {
  readonly answered: number;
  readonly failed: number;
  readonly seconds: number;
}

/** Runs lookups until `durationMs` has passed. */
export async function lookupLoad(options: LookupLoadOptions): Promise<LookupLoadResult> {
  const waiting = new Map<string, () => void>();
  const onDatagram = (bytes: Buffer): void => {
    const message = decodeDatagram(bytes);
    const id = message?.method === Method.ConnectionRequest ? getAttemptId(message) : undefined;
    if (id === undefined) return;
    const key = Buffer.from(id).toString('hex');
    waiting.get(key)?.();
    waiting.delete(key);
  };
  for (const r of options.recipients) r.socket.on('message', onDatagram);
  let answered = 0;
  let failed = 0;
  const started = performance.now();
  const end = started + options.durationMs;
  const one = (port: number, uri: string): Promise<boolean> => new Promise((resolve) => {
    const id = new Uint8Array(randomBytes(ATTEMPT_ID_LENGTH));
    const key = Buffer.from(id).toString('hex');
    const socket = netConnect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      waiting.delete(key);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), LOOKUP_TIMEOUT_MS);
    waiting.set(key, () => done(true));
    socket.on('error', () => done(false));
    const request = StunMessage.request(Method.Connect);
    addUri(request, uri);
    addAttemptId(request, id);
    socket.write(encodeMessage(request, { fingerprint: true }));
  });
  const worker = async (w: number): Promise<void> => {
    const port = options.ports[w % options.ports.length]!;
    const { uri } = options.recipients[w % options.recipients.length]!;
    while (performance.now() < end) {
      if (await one(port, uri)) answered++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: options.parallel }, (_, w) => worker(w)));
  const seconds = (performance.now() - started) / 1000;
  for (const r of options.recipients) r.socket.off('message', onDatagram);
  return { answered, failed, seconds };
}
