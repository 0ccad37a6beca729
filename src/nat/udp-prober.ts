/**
 * The UDP side of NAT discovery: Binding transactions over one shared local
 * socket (so every test sees the same NAT mapping), the hairpinning probe, and
 * one-shot fresh sockets for port-allocation samples. Implements
 * {@link UdpProbeIo} for classify.ts.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { abortError } from '../common/signal.js';
import { decodeDatagram, encodeMessage } from '../wire/codec.js';
import { AttrType, MessageClass, Method } from '../wire/constants.js';
import { encodeChangeRequest } from '../wire/change-request.js';
import { StunMessage } from '../wire/message.js';
import { addRequestPadding } from '../wire/request-padding.js';
import { getErrorCode, getMappedAddress, getOtherAddress, getXorMappedAddress } from '../wire/nattrav.js';
import type { BindingOutcome, ChangeFlags, Endpoint, PortSample, UdpProbeIo } from './classify.js';

/**
 * Retransmission schedule of one UDP transaction (RFC 8489 §6.2.1 with
 * shorter values: discovery waits on purpose for answers that a NAT drops,
 * so every silent test costs the whole schedule).
 */
export interface UdpTiming {
  /** First retransmission timeout (RFC 8489's RTO, there 500 ms), doubled after each send. */
  readonly rtoMs: number;
  /** Requests sent in all (RFC 8489's Rc, there 7). */
  readonly transmissions: number;
  /** Wait after the last request (RFC 8489's Rm × RTO, there 16 × 500 ms). */
  readonly lastWaitMs: number;
}

/** What arrived for a transaction. */
interface Arrival {
  readonly message: StunMessage;
  readonly rinfo: RemoteInfo;
}

/** Binds a UDP socket to an ephemeral port of the wildcard address of `family`. */
function bindSocket(family: 4 | 6): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: family === 6 ? 'udp6' : 'udp4' });
    socket.once('error', reject);
    socket.bind(0, () => {
      socket.off('error', reject);
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}

/**
 * Sends `request` to `to` on the RFC 8489 §6.2.1 schedule until `accept`
 * matches an arriving message with its transaction ID; resolves undefined when
 * the schedule runs out, rejects when `signal` aborts.
 */
function transact(
  socket: Socket,
  request: StunMessage,
  to: Endpoint,
  timing: UdpTiming,
  accept: (message: StunMessage) => boolean,
  signal: AbortSignal,
): Promise<Arrival | undefined> {
  const bytes = encodeMessage(request, { fingerprint: true });
  const id = Buffer.from(request.transactionId);
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    let sent = 0;
    let rto = timing.rtoMs;
    const finish = (): void => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      signal.removeEventListener('abort', onAbort);
    };
    const onMessage = (data: Buffer, rinfo: RemoteInfo): void => {
      const message = decodeDatagram(data);
      if (message === undefined) return;
      if (!id.equals(message.transactionId) || !accept(message)) return;
      finish();
      resolve({ message, rinfo });
    };
    const onAbort = (): void => {
      finish();
      reject(abortError(signal));
    };
    const send = (): void => {
      sent++;
      socket.send(bytes, to.port, to.address, () => undefined);
      if (sent < timing.transmissions) {
        timer = setTimeout(send, rto);
        rto *= 2;
      } else {
        timer = setTimeout(() => {
          finish();
          resolve(undefined);
        }, timing.lastWaitMs);
      }
    };
    socket.on('message', onMessage);
    signal.addEventListener('abort', onAbort, { once: true });
    send();
  });
}

const isResponse = (m: StunMessage): boolean => m.cls === MessageClass.SuccessResponse || m.cls === MessageClass.ErrorResponse;

/** Reads a Binding response into a {@link BindingOutcome}; a success without any mapped address counts as an error. */
function outcome(arrival: Arrival): BindingOutcome {
  const { message, rinfo } = arrival;
  const source = { address: rinfo.address, port: rinfo.port };
  try {
    if (message.cls === MessageClass.ErrorResponse) {
      const error = getErrorCode(message);
      return { ok: false, code: error?.code ?? 0, reason: error?.reason ?? 'no ERROR-CODE' };
    }
    const mapped = getXorMappedAddress(message) ?? getMappedAddress(message);
    if (mapped === undefined) return { ok: false, code: 0, reason: 'the response carries no (XOR-)MAPPED-ADDRESS' };
    const other = getOtherAddress(message);
    return {
      ok: true,
      mapped: { address: mapped.address, port: mapped.port },
      source,
      ...(other === undefined ? {} : { otherAddress: { address: other.address, port: other.port } }),
    };
  } catch (err) {
    return { ok: false, code: 0, reason: err instanceof Error ? err.message : String(err) };
  }
}

/** UDP probes for {@link runUdpDiscovery}: one shared socket, closed by {@link UdpProber.close}. */
export class UdpProber implements UdpProbeIo {
  readonly #socket: Socket;
  readonly #family: 4 | 6;
  readonly #timing: UdpTiming;
  readonly localPort: number;
  readonly localAddresses: readonly string[];

  private constructor(socket: Socket, family: 4 | 6, timing: UdpTiming) {
    this.#socket = socket;
    this.#family = family;
    this.#timing = timing;
    this.localPort = socket.address().port;
    this.localAddresses = Object.values(networkInterfaces()).flatMap((infos) => (infos ?? []).map((info) => info.address));
  }

  /** Opens the shared socket for talking to servers of `serverAddress`'s family. */
  static async open(serverAddress: string, timing: UdpTiming): Promise<UdpProber> {
    const family = isIP(serverAddress) === 6 ? 6 : 4;
    return new UdpProber(await bindSocket(family), family, timing);
  }

  /** RFC 5780 §4.3/§4.4 tests: a Binding request, with CHANGE-REQUEST when `change` is given. */
  async binding(to: Endpoint, change: ChangeFlags | undefined, signal: AbortSignal): Promise<BindingOutcome | undefined> {
    const request = StunMessage.request(Method.Binding);
    if (change !== undefined) request.add(AttrType.ChangeRequest, encodeChangeRequest(change));
    // As large as the answer, so an anti-amplification server (ours) answers in full.
    addRequestPadding(request);
    const arrival = await transact(this.#socket, request, to, this.#timing, isResponse, signal);
    return arrival === undefined ? undefined : outcome(arrival);
  }

  /** RFC 5780 §4.5: did a request to our own mapped endpoint come back to us? */
  async hairpin(to: Endpoint, signal: AbortSignal): Promise<boolean> {
    const request = StunMessage.request(Method.Binding);
    const arrival = await transact(this.#socket, request, to, this.#timing, (m) => m.cls === MessageClass.Request, signal);
    return arrival !== undefined;
  }

  /** One Binding from a fresh socket, which is closed afterwards. */
  async freshMapping(to: Endpoint, signal: AbortSignal): Promise<PortSample | undefined> {
    const socket = await bindSocket(this.#family);
    try {
      const arrival = await transact(socket, addRequestPadding(StunMessage.request(Method.Binding)), to, this.#timing, isResponse, signal);
      const result = arrival === undefined ? undefined : outcome(arrival);
      return result?.ok === true ? { local: socket.address().port, mapped: result.mapped.port } : undefined;
    } finally {
      socket.close();
    }
  }

  /** Closes the shared socket. Idempotent. */
  close(): void {
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
  }
}
