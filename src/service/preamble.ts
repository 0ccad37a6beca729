/**
 * The expose preamble: one status frame the exposer sends first on every peer
 * connection, so a forwarder learns whether the exposed service took the connection
 * before it passes its client's bytes on, and why not when it did not.
 *
 * Version 1, after the nattrav connection (and its TLS, by default) is up:
 *
 * ```
 * offset size field
 * 0      3    magic "NXP" (0x4E 0x58 0x50)
 * 3      1    version: 1
 * 4      1    status: 0 ok, 1 refused (the service refused or could not be reached),
 *             2 busy (the exposer is at its connection limit), 3 error (anything else)
 * 5      1    reason length N, 0-255 (0 with ok)
 * 6      N    reason, UTF-8, for people (never parsed)
 * ```
 *
 * 1. The exposer accepts the peer connection and connects to its local service.
 * 2. It sends the frame: `ok`, then the service's bytes; or another status, then its
 *    FIN. It reads nothing from the peer before the frame (a peer that sends early
 *    waits on TCP flow control).
 * 3. The forwarder reads exactly one frame (at most 261 bytes, within
 *    {@link PREAMBLE_TIMEOUT_MS}). After `ok` both directions are the service's;
 *    bytes the service sent first (a banner) stay buffered for the client. After any
 *    other status it closes the connection and its client's, and reports the reason.
 *
 * A frame with another magic is not an exposer (`ERR_PROTOCOL`); another version is
 * one this side does not speak (`ERR_PROTOCOL`, naming both versions). Pure apart from
 * {@link readPreamble}, which reads a frame off a socket.
 */
import type { Duplex } from 'node:stream';
import { startPhase } from '../common/signal.js';
import { ErrorCode, NattravError } from '../errors.js';

/** The first three bytes of every frame: ASCII "NXP" (nattrav expose preamble). */
export const PREAMBLE_MAGIC: Readonly<Buffer> = Buffer.from('NXP', 'ascii');
/** The version this code speaks. */
export const PREAMBLE_VERSION = 1;
/** Bytes before the reason: magic, version, status, reason length. */
export const PREAMBLE_HEADER_BYTES = 6;
/** The longest reason, in bytes (the length field is one byte). */
export const PREAMBLE_MAX_REASON_BYTES = 255;
/**
 * How long a forwarder waits for the frame, in ms: the exposer's connect to its service
 * (10 s by default, `targetConnectTimeoutMs`) plus slack for a relayed round trip.
 */
export const PREAMBLE_TIMEOUT_MS = 15_000;

/** Status codes on the wire. */
export const PreambleStatusCode = {
  Ok: 0,
  Refused: 1,
  Busy: 2,
  Error: 3,
} as const;

/** A frame's status: `ok`, or why the connection is not carried. */
export type PreambleStatus = 'ok' | 'refused' | 'busy' | 'error';

const STATUS_BY_CODE: readonly PreambleStatus[] = ['ok', 'refused', 'busy', 'error'];
const CODE_BY_STATUS: Readonly<Record<PreambleStatus, number>> = {
  ok: PreambleStatusCode.Ok,
  refused: PreambleStatusCode.Refused,
  busy: PreambleStatusCode.Busy,
  error: PreambleStatusCode.Error,
};

/** One status frame. */
export interface Preamble {
  readonly status: PreambleStatus;
  /** Why, for people; empty with `ok`. */
  readonly reason: string;
}

/** Encodes a frame; a reason longer than 255 bytes is cut at a character boundary. */
export function encodePreamble(preamble: Preamble): Buffer {
  let reason = Buffer.from(preamble.status === 'ok' ? '' : preamble.reason, 'utf8');
  if (reason.length > PREAMBLE_MAX_REASON_BYTES) {
    let end = PREAMBLE_MAX_REASON_BYTES;
    // Back up over UTF-8 continuation bytes (10xxxxxx) so no character is split.
    while (end > 0 && ((reason[end] as number) & 0xc0) === 0x80) end--;
    reason = reason.subarray(0, end);
  }
  const header = Buffer.of(...PREAMBLE_MAGIC, PREAMBLE_VERSION, CODE_BY_STATUS[preamble.status], reason.length);
  return Buffer.concat([header, reason]);
}

/**
 * Decodes a frame at the start of `bytes`: the frame and its length, or undefined when
 * more bytes are needed. Throws ERR_PROTOCOL for a wrong magic, version or status.
 */
export function decodePreamble(bytes: Uint8Array): { preamble: Preamble; length: number } | undefined {
  const magicBytes = Math.min(bytes.length, PREAMBLE_MAGIC.length);
  if (!Buffer.from(bytes.subarray(0, magicBytes)).equals(PREAMBLE_MAGIC.subarray(0, magicBytes))) {
    throw new NattravError(
      ErrorCode.Protocol,
      `the peer did not start with an expose status frame (got 0x${Buffer.from(bytes.subarray(0, 8)).toString('hex')}); is it \`nattrav expose\`?`,
    );
  }
  if (bytes.length < PREAMBLE_HEADER_BYTES) return undefined;
  const version = bytes[3] as number;
  if (version !== PREAMBLE_VERSION) {
    throw new NattravError(ErrorCode.Protocol, `the exposer speaks expose preamble version ${version}; this side speaks version ${PREAMBLE_VERSION}`);
  }
  const status = STATUS_BY_CODE[bytes[4] as number];
  if (status === undefined) throw new NattravError(ErrorCode.Protocol, `unknown expose status ${bytes[4] as number} in the exposer's status frame`);
  const length = PREAMBLE_HEADER_BYTES + (bytes[5] as number);
  if (bytes.length < length) return undefined;
  // The reason comes from the remote exposer and ends up in our log: printable ASCII only (no terminal escapes, no forged lines).
  const reason = Buffer.from(bytes.subarray(PREAMBLE_HEADER_BYTES, length)).toString('utf8').replace(/[^\x20-\x7e]/g, '?');
  return { preamble: { status, reason }, length };
}

/**
 * Reads one frame off `socket` and leaves every later byte unread (pushed back), so a
 * pipe started afterwards sees the service's first byte first. Rejects with
 * ERR_PROTOCOL (not a frame, or the connection ended before a whole one), ERR_TIMEOUT
 * after `timeoutMs`, or ERR_ABORTED.
 */
export function readPreamble(socket: Duplex, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Preamble> {
  const timeoutMs = options.timeoutMs ?? PREAMBLE_TIMEOUT_MS;
  const phase = startPhase(options.signal, timeoutMs, 'waiting for the exposer\'s status frame');
  return new Promise<Preamble>((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const cleanup = (): void => {
      phase.dispose();
      phase.signal.removeEventListener('abort', onAbort);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
    };
    const fail = (err: NattravError): void => {
      cleanup();
      reject(err);
    };
    const onReadable = (): void => {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
        buffered = Buffer.concat([buffered, chunk]);
        let decoded: ReturnType<typeof decodePreamble>;
        try {
          decoded = decodePreamble(buffered);
        } catch (err) {
          fail(err as NattravError);
          return;
        }
        if (decoded === undefined) continue;
        cleanup();
        if (decoded.length < buffered.length) socket.unshift(buffered.subarray(decoded.length));
        resolve(decoded.preamble);
        return;
      }
    };
    const onEnd = (): void => fail(new NattravError(ErrorCode.Protocol, `the exposer closed the connection before its status frame was complete (${buffered.length} of at least ${PREAMBLE_HEADER_BYTES} bytes)`));
    const onError = (err: Error): void => fail(new NattravError(ErrorCode.ConnectionBroken, `the connection failed before the exposer's status frame: ${err.message}`, { cause: err }));
    const onAbort = (): void => fail(phase.error());
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onError);
    phase.signal.addEventListener('abort', onAbort, { once: true });
    if (phase.signal.aborted) onAbort();
    else if (socket.readableEnded || socket.destroyed) onEnd();
    else onReadable();
  });
}
