/**
 * One client for NAT-PMP (RFC 6886) and PCP (RFC 6887) on one gateway: PCP first, NAT-PMP
 * when the gateway answers a PCP request with a version-0 UNSUPP_VERSION (RFC 6887 §9).
 * It keeps each mapping's PCP nonce for renewal and deletion (§11.2, §15) and follows the
 * gateway's epoch to notice a reboot (RFC 6886 §3.6, RFC 6887 §8.5).
 */
import { ErrorCode, NattravError } from '../errors.js';
import { systemClock, type Clock } from '../common/clock.js';
import { epochLost, type EpochObservation } from './epoch.js';
import { exchange, type DatagramLink } from './link.js';
import {
  NATPMP_VERSION,
  NatPmpResult,
  decodeNatPmpAddressResponse,
  decodeNatPmpHeader,
  decodeNatPmpMapResponse,
  encodeNatPmpAddressRequest,
  encodeNatPmpMapRequest,
} from './natpmp.js';
import { PCP_VERSION, decodePcpAnnounceResponse, decodePcpMapResponse, encodePcpAnnounceRequest, encodePcpMapRequest, newPcpNonce, type PcpMapRequest } from './pcp.js';
import type { GrantedMapping, MapRequest, MappingBackend } from './types.js';

/** Limits of one NAT-PMP/PCP exchange. */
export interface PmpClientOptions {
  /** The packet I/O to the gateway (see {@link openGatewayLink}). */
  link: DatagramLink;
  /** The gateway's address (for errors and reports). */
  gateway: string;
  /** `pcp` (falls back to NAT-PMP by itself) or `nat-pmp` (never tries PCP). @default 'pcp' */
  protocol?: 'pcp' | 'nat-pmp';
  /**
   * One request's limit, retransmissions included, ms: the LAN answers in a few ms, and a
   * gateway that is silent for 2 s does not speak the protocol.
   * @default 2000
   */
  requestTimeoutMs?: number;
  /** @default systemClock */
  clock?: Clock;
}

/** Defaults of {@link PmpClientOptions}. */
export const PMP_CLIENT_DEFAULTS = { protocol: 'pcp', requestTimeoutMs: 2_000 } as const;

/** The result of a version-0 answer to a PCP request: fall back to NAT-PMP. */
class FallBackToNatPmp extends Error {}

/** NAT-PMP and PCP client of one gateway; see the module comment. */
export class PmpClient implements MappingBackend {
  /** The gateway's address. */
  readonly gateway: string;
  readonly #link: DatagramLink;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  #protocol: 'pcp' | 'nat-pmp';
  #epoch: EpochObservation | undefined;
  /** PCP nonces by mapping (`tcp/5000`): renewals and the deletion repeat them. */
  readonly #nonces = new Map<string, Buffer>();
  /** The last external address learnt (a PCP MAP answer carries it). */
  #external: string | undefined;
  #queue: Promise<void> = Promise.resolve();

  constructor(options: PmpClientOptions) {
    this.#link = options.link;
    this.gateway = options.gateway;
    this.#clock = options.clock ?? systemClock;
    this.#protocol = options.protocol ?? PMP_CLIENT_DEFAULTS.protocol;
    this.#timeoutMs = options.requestTimeoutMs ?? PMP_CLIENT_DEFAULTS.requestTimeoutMs;
  }

  /** `pcp`, or `nat-pmp` once the gateway said it speaks only that. */
  get protocol(): 'pcp' | 'nat-pmp' {
    return this.#protocol;
  }

  /** Records a response's epoch; true when it shows the gateway lost its state. */
  #observe(epochSeconds: number): boolean {
    const current = { epochSeconds, atMs: this.#clock.now() };
    const lost = epochLost(this.#protocol, this.#epoch, current);
    this.#epoch = current;
    return lost;
  }

  /** One exchange at a time on the link (it has one handler): later ones wait their turn. */
  #exchange<T>(request: Buffer, accept: (bytes: Buffer) => T | undefined, doing: string, signal: AbortSignal | undefined): Promise<T> {
    const run = (): Promise<T> => exchange(this.#link, this.#clock, request, accept, { timeoutMs: this.#timeoutMs, doing: `${doing} (gateway ${this.gateway})`, signal });
    const result = this.#queue.then(run, run);
    this.#queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /**
   * The external address. NAT-PMP asks for it (§3.2); PCP has no such request, so a PCP
   * gateway is asked with NAT-PMP's request too (miniupnpd and most PCP servers answer it),
   * else the address of the last MAP answer is used.
   */
  async externalAddress(signal?: AbortSignal): Promise<string> {
    try {
      const answer = await this.#exchange(encodeNatPmpAddressRequest(), (bytes) => (bytes[0] === NATPMP_VERSION ? decodeNatPmpAddressResponse(bytes) : undefined), 'asking for the external address over NAT-PMP', signal);
      if (this.#protocol === 'nat-pmp') this.#observe(answer.epoch);
      return answer.externalAddress;
    } catch (err) {
      if (this.#protocol === 'pcp' && this.#external !== undefined) return this.#external;
      throw err;
    }
  }

  /** Maps (or renews, repeating its nonce) over PCP; over NAT-PMP once the gateway said it speaks only that. */
  async add(request: MapRequest, previous: GrantedMapping | undefined, signal?: AbortSignal): Promise<GrantedMapping> {
    if (this.#protocol === 'pcp') {
      try {
        return await this.#pcpMap(request, request.lifetimeSeconds, previous, signal);
      } catch (err) {
        if (!(err instanceof FallBackToNatPmp)) throw err;
        this.#protocol = 'nat-pmp';
        this.#epoch = undefined;
      }
    }
    return this.#natPmpMap(request, request.lifetimeSeconds, signal);
  }

  /**
   * A mapping still exists unless the gateway's epoch says it lost its state: NAT-PMP and PCP
   * have no way to read one mapping back, so the cheapest exchange that carries the epoch
   * (the external-address request) is sent.
   */
  async exists(_request: MapRequest, _granted: GrantedMapping, signal?: AbortSignal): Promise<boolean> {
    const answer =
      this.#protocol === 'pcp'
        ? await this.#exchange(encodePcpAnnounceRequest(this.#link.localAddress), (bytes) => (bytes[0] === PCP_VERSION ? decodePcpAnnounceResponse(bytes) : undefined), 'checking the gateway\'s PCP epoch', signal)
        : await this.#exchange(encodeNatPmpAddressRequest(), (bytes) => (bytes[0] === NATPMP_VERSION ? decodeNatPmpHeader(bytes) : undefined), 'checking the gateway\'s NAT-PMP epoch', signal);
    return !this.#observe(answer.epoch);
  }

  /** Deletes the mapping: lifetime 0, with the PCP nonce (§15) or NAT-PMP's external port 0 (§3.4). */
  async remove(request: MapRequest, granted: GrantedMapping, signal?: AbortSignal): Promise<void> {
    if (this.#protocol === 'pcp') await this.#pcpMap(request, 0, granted, signal);
    else await this.#natPmpMap({ ...request, suggestedExternalPort: 0 }, 0, signal);
    this.#nonces.delete(key(request));
  }

  /** Closes the socket to the gateway. */
  close(): void {
    this.#link.close();
  }

  async #pcpMap(request: MapRequest, lifetimeSeconds: number, previous: GrantedMapping | undefined, signal: AbortSignal | undefined): Promise<GrantedMapping> {
    const k = key(request);
    const nonce = this.#nonces.get(k) ?? newPcpNonce();
    this.#nonces.set(k, nonce);
    const pcp: PcpMapRequest = {
      nonce,
      protocol: request.transport,
      clientAddress: this.#link.localAddress,
      internalPort: request.internalPort,
      suggestedExternalPort: previous?.externalPort ?? request.suggestedExternalPort,
      suggestedExternalAddress: previous?.externalAddress ?? '0.0.0.0',
      lifetimeSeconds,
    };
    const answer = await this.#exchange(
      encodePcpMapRequest(pcp),
      (bytes) => {
        if (bytes[0] === PCP_VERSION) return decodePcpMapResponse(bytes, pcp);
        // A NAT-PMP-only gateway answers any other version with its own header and UNSUPP_VERSION.
        if (bytes[0] === NATPMP_VERSION && decodeNatPmpHeader(bytes).result === NatPmpResult.UnsupportedVersion) throw new FallBackToNatPmp();
        return undefined;
      },
      lifetimeSeconds === 0 ? 'deleting a PCP mapping' : 'asking for a PCP mapping',
      signal,
    );
    const gatewayReset = this.#observe(answer.epoch);
    this.#external = answer.externalAddress;
    return { externalAddress: answer.externalAddress, externalPort: answer.externalPort, lifetimeSeconds: answer.lifetimeSeconds, gatewayReset };
  }

  async #natPmpMap(request: MapRequest, lifetimeSeconds: number, signal: AbortSignal | undefined): Promise<GrantedMapping> {
    const bytes = encodeNatPmpMapRequest({ protocol: request.transport, internalPort: request.internalPort, suggestedExternalPort: request.suggestedExternalPort, lifetimeSeconds });
    const answer = await this.#exchange(
      bytes,
      (reply) => {
        if (reply[0] !== NATPMP_VERSION) return undefined;
        const header = decodeNatPmpHeader(reply);
        // An external-address answer is not ours; anything else is judged by the decoder.
        return header.opcode === 0 ? undefined : decodeNatPmpMapResponse(reply, request.transport);
      },
      lifetimeSeconds === 0 ? 'deleting a NAT-PMP mapping' : 'asking for a NAT-PMP mapping',
      signal,
    );
    if (lifetimeSeconds > 0 && answer.internalPort !== request.internalPort) {
      throw new NattravError(ErrorCode.PortMapping, `NAT-PMP: the gateway ${this.gateway} mapped internal port ${answer.internalPort}, not ${request.internalPort}`);
    }
    const gatewayReset = this.#observe(answer.epoch);
    const externalAddress = lifetimeSeconds === 0 ? '0.0.0.0' : await this.externalAddress(signal);
    return { externalAddress, externalPort: answer.externalPort, lifetimeSeconds: answer.lifetimeSeconds, gatewayReset };
  }
}

function key(request: MapRequest): string {
  return `${request.transport}/${request.internalPort}`;
}
