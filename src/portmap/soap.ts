/**
 * UPnP control (UDA 1.1 §3.2): the SOAP envelope of an action and the reading of its answer
 * or fault. Pure. The IGD error codes used by the port-mapping actions are named here
 * (WANIPConnection:2 spec §2.5, and :1).
 */
import { ErrorCode, NattravError } from '../errors.js';
import { child, childText, descendants, parseXml } from './xml.js';

/** UPnP error codes the port-mapping actions return. */
export const UpnpErrorCode = {
  InvalidArgs: 402,
  ActionNotAuthorized: 606,
  /** GetSpecificPortMappingEntry / DeletePortMapping: no such mapping. */
  NoSuchEntryInArray: 714,
  /** The external port is mapped to another client. */
  ConflictInMappingEntry: 718,
  /** IGDv1 gateways that accept only lease 0 (permanent). */
  OnlyPermanentLeasesSupported: 725,
  /** IGDv2: the lease asked is over the gateway's maximum. */
  ExternalPortOnlySupportsWildcard: 727,
  /** IGDv2: the port is taken, AddAnyPortMapping would pick another. */
  ConflictWithOtherMechanisms: 729,
} as const;

/** A SOAP fault from the gateway, with its UPnP errorCode. */
export class UpnpActionError extends NattravError {
  /** The UPnP errorCode (see {@link UpnpErrorCode}), or 0 when the fault had none. */
  readonly upnpCode: number;

  constructor(action: string, upnpCode: number, description: string, address?: string) {
    super(ErrorCode.PortMapping, `UPnP: ${action} failed with error ${upnpCode}${description === '' ? '' : ` (${description})`}`, address === undefined ? {} : { address });
    this.name = 'UpnpActionError';
    this.upnpCode = upnpCode;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

function escapeXml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}

/** The HTTP SOAPAction header value of `action` on `serviceType`. */
export function soapActionHeader(serviceType: string, action: string): string {
  return `"${serviceType}#${action}"`;
}

/** The SOAP envelope that calls `action` with `args` (in the order the service's SCPD lists them). */
export function encodeSoapRequest(serviceType: string, action: string, args: ReadonlyArray<readonly [string, string | number]>): string {
  const body = args.map(([name, value]) => `<${name}>${escapeXml(String(value))}</${name}>`).join('');
  return (
    '<?xml version="1.0"?>\r\n' +
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">' +
    `<s:Body><u:${action} xmlns:u="${escapeXml(serviceType)}">${body}</u:${action}></s:Body></s:Envelope>\r\n`
  );
}

/**
 * Reads the answer to `action`: its output arguments by name, or throws
 * {@link UpnpActionError} for a SOAP fault (with the UPnP errorCode) and ERR_PORTMAP for
 * anything that is neither.
 */
export function decodeSoapResponse(xml: string, action: string, gateway?: string): Record<string, string> {
  const root = parseXml(xml);
  const body = root.name === 'Envelope' ? child(root, 'Body') : undefined;
  if (body === undefined) throw new NattravError(ErrorCode.PortMapping, `UPnP: the answer to ${action} is not a SOAP envelope with a body`);
  const fault = child(body, 'Fault');
  if (fault !== undefined) {
    const error = descendants(fault, 'UPnPError')[0];
    const code = Number(error === undefined ? NaN : childText(error, 'errorCode'));
    const description = (error === undefined ? childText(fault, 'faultstring') : childText(error, 'errorDescription')) ?? '';
    throw new UpnpActionError(action, Number.isInteger(code) ? code : 0, description.slice(0, 120), gateway);
  }
  const response = child(body, `${action}Response`);
  if (response === undefined) throw new NattravError(ErrorCode.PortMapping, `UPnP: the answer to ${action} has no ${action}Response`);
  const out: Record<string, string> = {};
  for (const arg of response.children) out[arg.name] = arg.text;
  return out;
}
