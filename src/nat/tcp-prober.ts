/**
 * The TCP side of NAT discovery: STUN Binding over TCP (RFC 8489 §6.2.2) on
 * connections that all leave from one local port (explicit bind: libuv sets
 * SO_REUSEADDR, so several outgoing connections may share a local port, see
 * TRAVERSAL-NOTES), plus fresh connections for port-allocation samples.
 * Implements {@link TcpProbeIo} for classify.ts.
 */
import { connect, isIP, type Socket } from 'node:net';
import { startPhase } from '../common/signal.js';
import { StunChannel } from '../common/stun-channel.js';
import { MessageClass, Method } from '../wire/constants.js';
import { StunMessage } from '../wire/message.js';
import { getMappedAddress, getXorMappedAddress } from '../wire/nattrav.js';
import type { Endpoint, PortSample, TcpProbeIo } from './classify.js';

/** Opens a connection from `localPort` (0: any) and resolves once connected; rejects when `signal` aborts. */
function open(to: Endpoint, localPort: number, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: to.address,
      port: to.port,
      localAddress: isIP(to.address) === 6 ? '::' : '0.0.0.0',
      localPort,
    });
    const onAbort = (): void => {
      socket.destroy();
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(err);
    });
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}

/** TCP probes for {@link runTcpDiscovery}; {@link TcpProber.close} destroys every connection. */
export class TcpProber implements TcpProbeIo {
  readonly #timeoutMs: number;
  readonly #sockets = new Set<Socket>();
  #sharedPort = 0;
  #lastFailure: string | undefined;

  /** `timeoutMs` bounds each connection plus its Binding exchange. */
  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
  }

  /** Why the latest probe got no mapping ("ECONNREFUSED", "timed out after 1000 ms ..."); undefined after a success. */
  get lastFailure(): string | undefined {
    return this.#lastFailure;
  }

  /** The local port all shared connections use (0 until the first one connected). */
  get sharedPort(): number {
    return this.#sharedPort;
  }

  /** A Binding over a connection from the shared local port; undefined when it fails or times out. */
  async sharedBinding(to: Endpoint, signal: AbortSignal): Promise<Endpoint | undefined> {
    const result = await this.#probe(to, this.#sharedPort, signal);
    if (result !== undefined && this.#sharedPort === 0) this.#sharedPort = result.local;
    return result?.mapped;
  }

  /** A Binding over a connection from a fresh local port. */
  async freshMapping(to: Endpoint, signal: AbortSignal): Promise<PortSample | undefined> {
    const result = await this.#probe(to, 0, signal);
    return result === undefined ? undefined : { local: result.local, mapped: result.mapped.port };
  }

  /** Destroys every connection the prober opened. Idempotent. */
  close(): void {
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
  }

  async #probe(to: Endpoint, localPort: number, signal: AbortSignal): Promise<{ local: number; mapped: Endpoint } | undefined> {
    const phase = startPhase(signal, this.#timeoutMs, `probing TCP mapping via ${to.address}:${to.port}`);
    let socket: Socket | undefined;
    try {
      socket = await open(to, localPort, phase.signal);
      this.#sockets.add(socket);
      const local = socket.localPort ?? 0;
      const channel = new StunChannel(socket, () => undefined);
      const response = await channel.request(StunMessage.request(Method.Binding), phase.signal, { fingerprint: true });
      const mapped = response.cls === MessageClass.SuccessResponse ? (getXorMappedAddress(response) ?? getMappedAddress(response)) : undefined;
      this.#lastFailure = mapped === undefined ? 'the answer to the Binding carried no mapped address' : undefined;
      return mapped === undefined ? undefined : { local, mapped: { address: mapped.address, port: mapped.port } };
    } catch (err) {
      // A refused, reset or timed-out probe is a result ("no mapping seen"), not an error; the caller's abort is.
      if (signal.aborted) throw phase.error();
      this.#lastFailure = phase.signal.aborted ? phase.error().message : ((err as { code?: string }).code ?? String(err));
      return undefined;
    } finally {
      phase.dispose();
    }
  }
}
