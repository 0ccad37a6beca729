/**
 * A registration's sockets: binding one, and sending the withdrawal (register-proof.ts builds it) on close: once,
 * unanswered, and never holding close() up for long. Over UDP the socket closes when
 * the datagram left; over a TCP control connection the connection ends after it.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import type { StunChannel } from '../common/stun-channel.js';
import { abortError } from '../common/signal.js';
import { encodeMessage, type EncodeOptions } from '../wire/codec.js';
import type { StunMessage } from '../wire/message.js';
import { addRequestPadding } from '../wire/request-padding.js';
import type { TransportAddress } from '../wire/types.js';

/**
 * How long close() waits for the withdrawal to leave (and for an aborted exchange to settle), in ms:
 * it is sent once, unanswered; a lost one only costs what closing without it cost (the URI stays for a lifetime).
 */
export const WITHDRAWAL_SEND_BOUND_MS = 200;

/** A withdrawal and the options to encode it with (integrity under the session). */
export interface Withdrawal {
  readonly request: StunMessage;
  readonly options: EncodeOptions;
}

/** Resolves once `promise` settled (either way) or after `ms`, whichever comes first. */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.then(noop, noop), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

function noop(): void {}

/** Binds `socket` to an ephemeral port; rejects with `signal`'s reason when it aborts first (a socket closed mid-bind never calls back). */
export function bindEphemeral(socket: UdpSocket, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    socket.bind(0, () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

/** Closes `socket` if it is open. */
export function closeQuietly(socket: UdpSocket | undefined): void {
  try {
    socket?.close();
  } catch {
    // already closed
  }
}

/** Fires the withdrawal at the broker and closes `socket` once it left (or after the bound). No answer is awaited. */
export function withdrawOverUdp(socket: UdpSocket, broker: TransportAddress, withdrawal: Withdrawal): Promise<void> {
  // Padded like every UDP request of ours, so the broker's answer is never larger (anti-amplification).
  addRequestPadding(withdrawal.request);
  const bytes = encodeMessage(withdrawal.request, { fingerprint: true, ...withdrawal.options });
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(bound);
      closeQuietly(socket);
      resolve();
    };
    const bound = setTimeout(done, WITHDRAWAL_SEND_BOUND_MS);
    try {
      socket.send(bytes, broker.port, broker.address, done);
    } catch {
      done(); // the socket was not usable (never bound): nothing to withdraw through it
    }
  });
}

/** Sends the withdrawal down the control connection, then ends it; destroys it if the broker has not closed its side within the bound. */
export function withdrawOverControl(control: StunChannel, withdrawal: Withdrawal): Promise<void> {
  control.send(withdrawal.request, { fingerprint: true, ...withdrawal.options });
  control.end();
  return new Promise<void>((resolve) => {
    const bound = setTimeout(() => {
      control.destroy();
      resolve();
    }, WITHDRAWAL_SEND_BOUND_MS);
    void control.closed.then(() => {
      clearTimeout(bound);
      resolve();
    });
  });
}

/**
 * Sends `withdrawal` (none: nothing was granted) on the transport the registration uses
 * (down a control connection still open, or over UDP to `broker`), and closes the UDP
 * socket and the control connection either way.
 */
export async function withdrawAndClose(
  withdrawal: Withdrawal | undefined,
  transport: 'udp' | 'tcp',
  socket: UdpSocket | undefined,
  control: StunChannel | undefined,
  broker: TransportAddress | undefined,
): Promise<void> {
  if (withdrawal !== undefined && transport === 'tcp' && control !== undefined && !control.socket.destroyed) {
    closeQuietly(socket);
    await withdrawOverControl(control, withdrawal);
    return;
  }
  control?.destroy();
  if (withdrawal !== undefined && transport === 'udp' && socket !== undefined && broker !== undefined) {
    await withdrawOverUdp(socket, broker, withdrawal);
    return;
  }
  closeQuietly(socket);
}
