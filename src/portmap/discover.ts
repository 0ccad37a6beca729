/**
 * Finding the gateway and which port-mapping protocols it speaks, within a small budget
 * (tailscale's portmapper probes PCP, NAT-PMP and UPnP at once and waits 250 ms).
 */
import { readFile } from 'node:fs/promises';
import type { Clock } from '../common/clock.js';
import type { DatagramLink } from './link.js';
import { NATPMP_VERSION, NatPmpOpcode, NatPmpResult, decodeNatPmpAddressResponse, decodeNatPmpHeader, encodeNatPmpAddressRequest } from './natpmp.js';
import { PCP_VERSION, PcpResult, decodePcpResponseHeader, encodePcpAnnounceRequest } from './pcp.js';

/** How long discovery waits for the gateway's answers, ms: a gateway that answers later is not worth delaying a connection for. */
export const DISCOVERY_BUDGET_MS = 250;

/** What the NAT-PMP/PCP probe learnt. */
export interface PmpProbeResult {
  /** The gateway answered a PCP ANNOUNCE with version 2. */
  readonly pcp: boolean;
  /** The gateway answered NAT-PMP's external-address request with success. */
  readonly natPmp: boolean;
  /** The external address from the NAT-PMP answer. */
  readonly externalAddress?: string;
}

/**
 * Sends a PCP ANNOUNCE and a NAT-PMP external-address request together on `link` and
 * collects answers for `budgetMs` (less when both have answered). Malformed answers are ignored.
 */
export function probePmp(link: DatagramLink, clock: Clock, budgetMs: number = DISCOVERY_BUDGET_MS): Promise<PmpProbeResult> {
  return new Promise((resolve) => {
    let pcp: boolean | undefined;
    let natPmp: boolean | undefined;
    let externalAddress: string | undefined;
    const finish = (): void => {
      clock.clearTimeout(timer);
      link.onMessage(undefined);
      resolve({ pcp: pcp === true, natPmp: natPmp === true, ...(externalAddress === undefined ? {} : { externalAddress }) });
    };
    const timer = clock.setTimeout(finish, budgetMs);
    link.onMessage((bytes) => {
      try {
        if (bytes[0] === PCP_VERSION) {
          const header = decodePcpResponseHeader(bytes);
          // A PCP server's answer to either request shows it speaks PCP, unless it is UNSUPP_VERSION to our NAT-PMP one.
          if (header.opcode === 0 && header.result !== PcpResult.UnsuppVersion) pcp = true;
          else if (header.result === PcpResult.UnsuppVersion) natPmp ??= false;
        } else if (bytes[0] === NATPMP_VERSION) {
          const header = decodeNatPmpHeader(bytes);
          if (header.result === NatPmpResult.UnsupportedVersion) pcp ??= false;
          else if (header.opcode === NatPmpOpcode.ExternalAddress && header.result === NatPmpResult.Success) {
            externalAddress = decodeNatPmpAddressResponse(bytes).externalAddress;
            natPmp = true;
          } else natPmp = false;
        }
      } catch {
        return;
      }
      if (pcp !== undefined && natPmp !== undefined) finish();
    });
    link.send(encodePcpAnnounceRequest(link.localAddress));
    link.send(encodeNatPmpAddressRequest());
  });
}

/**
 * The IPv4 default gateway in the text of Linux's /proc/net/route, or undefined. Fields are
 * hex, little-endian; the default route has destination and mask 0 and the RTF_GATEWAY flag.
 */
export function parseDefaultGateway(procNetRoute: string): string | undefined {
  for (const line of procNetRoute.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[1] !== '00000000' || f[7] !== '00000000') continue;
    const flags = parseInt(f[3] ?? '0', 16);
    const gw = f[2] ?? '';
    if ((flags & 0x2) === 0 || !/^[0-9A-Fa-f]{8}$/.test(gw)) continue;
    const n = parseInt(gw, 16);
    return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
  }
  return undefined;
}

/** This host's IPv4 default gateway (Linux: /proc/net/route), or undefined when there is none or it cannot be read. */
export async function defaultGateway(): Promise<string | undefined> {
  try {
    return parseDefaultGateway(await readFile('/proc/net/route', 'utf8'));
  } catch {
    return undefined;
  }
}
