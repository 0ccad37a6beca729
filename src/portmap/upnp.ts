/**
 * The UPnP IGD client: SSDP search on the LAN, the device description, then SOAP actions on
 * the WAN connection service (GetExternalIPAddress, AddAnyPortMapping on IGDv2 /
 * AddPortMapping, GetSpecificPortMappingEntry, DeletePortMapping), as miniupnpc does. Every
 * HTTP exchange has a deadline and a size cap; the answers are parsed as untrusted.
 */
import { createSocket } from 'node:dgram';
import { request as httpRequest } from 'node:http';
import { ErrorCode, NattravError } from '../errors.js';
import { startPhase } from '../common/signal.js';
import { IGD_SEARCH_TARGET, SSDP_ADDRESS, SSDP_PORT, encodeMSearch, parseIgdDescription, parseSsdpAnswer, type IgdService, type SsdpAnswer } from './igd.js';
import { UpnpActionError, UpnpErrorCode, decodeSoapResponse, encodeSoapRequest, soapActionHeader } from './soap.js';
import { XML_MAX_BYTES } from './xml.js';
import type { GrantedMapping, MapRequest, MappingBackend } from './types.js';

/** One HTTP exchange with the gateway (description or action), ms: a LAN device answers in a few ms. */
export const UPNP_HTTP_TIMEOUT_MS = 2_000;
/** The description of mappings nattrav makes, so they can be told apart on the gateway. */
export const UPNP_MAPPING_DESCRIPTION = 'nattrav';
/** How many other external ports an IGDv1 conflict (718) makes us try. */
const CONFLICT_RETRIES = 3;

/**
 * Sends M-SEARCH unicast to `gateway` (and to the SSDP multicast group with `multicast`) from
 * an ephemeral port and resolves with the gateway's first IGD answer within `budgetMs`, or
 * undefined. Answers from other hosts are ignored.
 */
export function searchIgd(options: { budgetMs: number; gateway: string; multicast: boolean; signal?: AbortSignal | undefined }): Promise<SsdpAnswer | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    let done = false;
    const finish = (answer: SsdpAnswer | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.close();
      resolve(answer);
    };
    const onAbort = (): void => finish(undefined);
    const timer = setTimeout(() => finish(undefined), options.budgetMs);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('error', () => finish(undefined));
    socket.on('message', (bytes, rinfo) => {
      if (rinfo.address !== options.gateway) return;
      const answer = parseSsdpAnswer(bytes, rinfo.address);
      if (answer !== undefined) finish(answer);
    });
    socket.bind(0, () => {
      if (done) return;
      const search = encodeMSearch(IGD_SEARCH_TARGET, 1);
      if (options.multicast) socket.send(search, SSDP_PORT, SSDP_ADDRESS, () => undefined);
      socket.send(search, SSDP_PORT, options.gateway, () => undefined);
    });
  });
}

/** A bounded HTTP exchange: status and body text (at most {@link XML_MAX_BYTES}). */
function httpExchange(url: URL, init: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string }, doing: string, signal: AbortSignal | undefined): Promise<{ status: number; body: string }> {
  const phase = startPhase(signal, UPNP_HTTP_TIMEOUT_MS, doing);
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(url, { method: init.method, headers: { ...init.headers, ...(init.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(init.body)) }) }, signal: phase.signal, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > XML_MAX_BYTES) {
          req.destroy(new NattravError(ErrorCode.PortMapping, `UPnP: the answer while ${doing} is larger than ${XML_MAX_BYTES} bytes`, { address: url.hostname }));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (err) => {
      if (phase.signal.aborted) reject(phase.error());
      else if (err instanceof NattravError) reject(err);
      else reject(new NattravError(ErrorCode.PortMapping, `UPnP: HTTP to ${url.host} failed while ${doing}: ${err.message}`, { cause: err, address: url.hostname }));
    });
    req.end(init.body);
  }).finally(() => phase.dispose());
}

/** Our address on the path to `host` (the InternalClient of a mapping). */
export async function localAddressToward(host: string): Promise<string> {
  const socket = createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(SSDP_PORT, host, () => resolve());
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}

/** A UPnP IGD's WAN connection service, driven as a {@link MappingBackend}. */
export class UpnpClient implements MappingBackend {
  /** Always `upnp`. */
  readonly protocol = 'upnp' as const;
  /** The gateway's address (the control URL's host). */
  readonly gateway: string;
  /** The service used (type, control URL, IGD version). */
  readonly service: IgdService;
  /** Our address on the LAN, the mappings' InternalClient. */
  readonly localAddress: string;
  /** Set when the gateway said it takes only permanent leases (error 725): leases are then 0. */
  #permanentOnly = false;

  private constructor(service: IgdService, localAddress: string) {
    this.service = service;
    this.gateway = service.controlUrl.hostname;
    this.localAddress = localAddress;
  }

  /** Fetches and reads the device description at `location` (from {@link searchIgd}). */
  static async open(location: URL, signal?: AbortSignal): Promise<UpnpClient> {
    const { status, body } = await httpExchange(location, { method: 'GET' }, `fetching the IGD description ${location.href}`, signal);
    if (status !== 200) throw new NattravError(ErrorCode.PortMapping, `UPnP: the IGD description ${location.href} answered HTTP ${status}`, { address: location.hostname });
    const service = parseIgdDescription(body, location);
    return new UpnpClient(service, await localAddressToward(location.hostname));
  }

  /** Calls `action` and returns its output arguments (throws {@link UpnpActionError} on a fault). */
  async call(action: string, args: ReadonlyArray<readonly [string, string | number]>, signal?: AbortSignal): Promise<Record<string, string>> {
    const { serviceType, controlUrl } = this.service;
    const { status, body } = await httpExchange(
      controlUrl,
      { method: 'POST', headers: { 'content-type': 'text/xml; charset="utf-8"', soapaction: soapActionHeader(serviceType, action) }, body: encodeSoapRequest(serviceType, action, args) },
      `calling ${action} on ${controlUrl.host}`,
      signal,
    );
    if (status !== 200 && status !== 500) throw new NattravError(ErrorCode.PortMapping, `UPnP: ${action} answered HTTP ${status}`, { address: this.gateway });
    return decodeSoapResponse(body, action, this.gateway);
  }

  /** GetExternalIPAddress. */
  async externalAddress(signal?: AbortSignal): Promise<string> {
    const out = await this.call('GetExternalIPAddress', [], signal);
    const address = out.NewExternalIPAddress ?? '';
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(address)) throw new NattravError(ErrorCode.PortMapping, `UPnP: GetExternalIPAddress gave "${address.slice(0, 40)}", not an IPv4 address`, { address: this.gateway });
    return address;
  }

  #lease(request: MapRequest): number {
    return this.#permanentOnly ? 0 : request.lifetimeSeconds;
  }

  #mappingArgs(request: MapRequest, externalPort: number): Array<readonly [string, string | number]> {
    return [
      ['NewRemoteHost', ''],
      ['NewExternalPort', externalPort],
      ['NewProtocol', request.transport.toUpperCase()],
      ['NewInternalPort', request.internalPort],
      ['NewInternalClient', this.localAddress],
      ['NewEnabled', 1],
      ['NewPortMappingDescription', UPNP_MAPPING_DESCRIPTION],
      ['NewLeaseDuration', this.#lease(request)],
    ];
  }

  /** AddAnyPortMapping on IGDv2 (the gateway may pick the port), AddPortMapping on IGDv1; a renewal asks for the port held. */
  async add(request: MapRequest, previous: GrantedMapping | undefined, signal?: AbortSignal): Promise<GrantedMapping> {
    const wanted = previous?.externalPort ?? (request.suggestedExternalPort || request.internalPort);
    const externalAddress = await this.externalAddress(signal);
    let externalPort = wanted;
    if (this.service.v2) {
      const out = await this.call('AddAnyPortMapping', this.#mappingArgs(request, wanted), signal);
      externalPort = Number(out.NewReservedPort);
      if (!Number.isInteger(externalPort) || externalPort < 1 || externalPort > 0xffff) throw new NattravError(ErrorCode.PortMapping, `UPnP: AddAnyPortMapping reserved port "${String(out.NewReservedPort).slice(0, 12)}"`, { address: this.gateway });
    } else {
      externalPort = await this.#addV1(request, wanted, signal);
    }
    return { externalAddress, externalPort, lifetimeSeconds: this.#lease(request), gatewayReset: false };
  }

  /** IGDv1 AddPortMapping: 725 -> permanent lease; 718 (port taken) -> a few random ports. */
  async #addV1(request: MapRequest, wanted: number, signal: AbortSignal | undefined): Promise<number> {
    let port = wanted;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.call('AddPortMapping', this.#mappingArgs(request, port), signal);
        return port;
      } catch (err) {
        if (err instanceof UpnpActionError && err.upnpCode === UpnpErrorCode.OnlyPermanentLeasesSupported && !this.#permanentOnly) {
          this.#permanentOnly = true;
          attempt--;
          continue;
        }
        if (!(err instanceof UpnpActionError) || err.upnpCode !== UpnpErrorCode.ConflictInMappingEntry || attempt >= CONFLICT_RETRIES) throw err;
        port = 1024 + Math.floor(Math.random() * (0xffff - 1024));
      }
    }
  }

  /** GetSpecificPortMappingEntry: true only when the entry still forwards to us and our port (714: gone). */
  async exists(request: MapRequest, granted: GrantedMapping, signal?: AbortSignal): Promise<boolean> {
    try {
      const out = await this.call('GetSpecificPortMappingEntry', [['NewRemoteHost', ''], ['NewExternalPort', granted.externalPort], ['NewProtocol', request.transport.toUpperCase()]], signal);
      return out.NewInternalClient === this.localAddress && Number(out.NewInternalPort) === request.internalPort;
    } catch (err) {
      if (err instanceof UpnpActionError && err.upnpCode === UpnpErrorCode.NoSuchEntryInArray) return false;
      throw err;
    }
  }

  /** DeletePortMapping; an entry already gone (714) counts as deleted. */
  async remove(request: MapRequest, granted: GrantedMapping, signal?: AbortSignal): Promise<void> {
    try {
      await this.call('DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', granted.externalPort], ['NewProtocol', request.transport.toUpperCase()]], signal);
    } catch (err) {
      if (!(err instanceof UpnpActionError) || err.upnpCode !== UpnpErrorCode.NoSuchEntryInArray) throw err;
    }
  }

  /** Nothing to release. */
  close(): void {
    // Each HTTP exchange uses its own connection (agent: false): nothing stays open.
  }
}
