/**
 * UPnP IGD discovery, pure parts: the SSDP M-SEARCH request and its answer (UPnP Device
 * Architecture 1.1 §1.3.2-1.3.3), and the device description (§2.3) from which the WAN
 * connection service and its control URL are chosen: WANIPConnection:2, then :1, then
 * WANPPPConnection:1 (what miniupnpc's igd_desc_parse.c and upnpcommands.c look for).
 */
import { ErrorCode, NattravError } from '../errors.js';
import { childText, descendants, parseXml } from './xml.js';

/** The SSDP multicast group and port (UDA 1.1 §1.1.2). */
export const SSDP_ADDRESS = '239.255.255.250';
/** The SSDP port. */
export const SSDP_PORT = 1900;
/** The search target of an IGD of either version (a v2 IGD also answers the v1 target). */
export const IGD_SEARCH_TARGET = 'urn:schemas-upnp-org:device:InternetGatewayDevice:1';
/** The largest SSDP answer read, bytes. */
export const SSDP_MAX_BYTES = 2048;

/** The WAN connection services, most preferred first. */
export const WAN_SERVICE_TYPES = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
] as const;
/** One of {@link WAN_SERVICE_TYPES}. */
export type WanServiceType = (typeof WAN_SERVICE_TYPES)[number];

/** The M-SEARCH request (UDA 1.1 §1.3.2); `mxSeconds` is how long devices may wait to answer. */
export function encodeMSearch(searchTarget: string = IGD_SEARCH_TARGET, mxSeconds = 1): Buffer {
  return Buffer.from(
    `M-SEARCH * HTTP/1.1\r\nHOST: ${SSDP_ADDRESS}:${SSDP_PORT}\r\nMAN: "ssdp:discover"\r\nMX: ${mxSeconds}\r\nST: ${searchTarget}\r\n\r\n`,
    'latin1',
  );
}

/** What an SSDP answer says. */
export interface SsdpAnswer {
  /** The device description URL. */
  readonly location: URL;
  /** The search target answered (ST). */
  readonly searchTarget: string;
  /** The SERVER header, if any (for reports). */
  readonly server?: string;
}

function fail(message: string): NattravError {
  return new NattravError(ErrorCode.PortMapping, `UPnP: ${message}`);
}

/**
 * Parses an M-SEARCH answer that came from `from` (the sender's IP). Returns undefined for
 * anything that is not an IGD's `HTTP/1.1 200` answer. The LOCATION must be an http URL on
 * the sender's own address: a LAN host cannot send us to fetch from elsewhere.
 */
export function parseSsdpAnswer(bytes: Uint8Array, from: string): SsdpAnswer | undefined {
  if (bytes.length > SSDP_MAX_BYTES) return undefined;
  const lines = Buffer.from(bytes).toString('latin1').split('\r\n');
  if (!/^HTTP\/1\.[01] 200\b/.test(lines[0] ?? '')) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const st = headers.get('st');
  const loc = headers.get('location');
  if (st === undefined || loc === undefined || !st.startsWith('urn:schemas-upnp-org:device:InternetGatewayDevice:')) return undefined;
  let location: URL;
  try {
    location = new URL(loc);
  } catch {
    return undefined;
  }
  if (location.protocol !== 'http:' || location.hostname !== from) return undefined;
  const server = headers.get('server');
  return { location, searchTarget: st, ...(server === undefined ? {} : { server }) };
}

/** The WAN connection service chosen from a device description. */
export interface IgdService {
  /** Its service type (one of {@link WAN_SERVICE_TYPES}). */
  readonly serviceType: WanServiceType;
  /** The absolute control URL, on the description's host. */
  readonly controlUrl: URL;
  /** IGD version 2 (AddAnyPortMapping available). */
  readonly v2: boolean;
}

/**
 * Reads a device description (`xml`, fetched from `location`) and picks the preferred WAN
 * connection service. The control URL is resolved against URLBase (when given) or the
 * location, and must stay on the location's host and be http. Throws ERR_PORTMAP when no
 * usable service is described.
 */
export function parseIgdDescription(xml: string, location: URL): IgdService {
  const root = parseXml(xml);
  if (root.name !== 'root') throw fail(`the device description's root element is <${root.name}>, not <root>`);
  const urlBase = childText(root, 'URLBase');
  let base = location;
  if (urlBase !== undefined && urlBase !== '') {
    try {
      base = new URL(urlBase);
    } catch {
      throw fail(`the device description's URLBase "${urlBase.slice(0, 80)}" is not a URL`);
    }
  }
  const services = descendants(root, 'service');
  for (const serviceType of WAN_SERVICE_TYPES) {
    const service = services.find((s) => childText(s, 'serviceType') === serviceType);
    const control = service === undefined ? undefined : childText(service, 'controlURL');
    if (control === undefined || control === '') continue;
    let controlUrl: URL;
    try {
      controlUrl = new URL(control, base);
    } catch {
      throw fail(`the control URL "${control.slice(0, 80)}" of ${serviceType} is not a URL`);
    }
    if (controlUrl.protocol !== 'http:' || controlUrl.host !== location.host) {
      throw fail(`the control URL ${controlUrl.href.slice(0, 80)} is not http on the gateway ${location.host}`);
    }
    return { serviceType, controlUrl, v2: serviceType.endsWith(':2') };
  }
  throw fail('the device description has no WANIPConnection:1/2 or WANPPPConnection:1 service with a control URL');
}
