/**
 * The basic lab scenario, shared by `nattrav demo` and the lab tests: a broker
 * on the public side, a recipient and an initiator (real `nattrav` processes in
 * their namespaces), a connection, data both ways, and a byte count at the
 * broker proving the data went direct.
 */
import { ErrorCode, NattravError } from '../errors.js';
import { startCli, type CliEvent, type CliProcess } from './cli-process.js';
import type { Lab } from './lab.js';
import type { LabHost } from './types.js';

/** The port the lab broker listens on (RFC 8489 §18.4 default). */
export const LAB_BROKER_PORT = 3478;
/** Start-up of a Node process in a namespace plus registration: generous on a loaded 2-core machine. */
const START_TIMEOUT_MS = 20_000;
/** A connect's own limit is 30 s; wait a little longer for its report. */
const CONNECT_WAIT_MS = 35_000;
/** Moving the payload across the lab. */
const TRANSFER_TIMEOUT_MS = 20_000;

/** A running lab broker. */
export interface LabBroker {
  readonly process: CliProcess;
  /** `IP:PORT` to pass as --broker. */
  readonly address: string;
  /** `[IPv6]:PORT` to pass as --broker, when the broker listens on both families (`dualStack`). */
  readonly address6?: string;
}

/** Options of {@link startLabBroker}. */
export interface LabBrokerOptions {
  /**
   * Listen on `[::]`, IPv4 and IPv6 (the broker host has both); then {@link LabBroker.address6} is set.
   * @default false: the broker's IPv4 address only
   */
  dualStack?: boolean;
}

/** Starts `nattrav broker` on the lab's broker host (with `extraArgs`, e.g. --ca). */
export async function startLabBroker(lab: Lab, extraArgs: string[] = [], options: LabBrokerOptions = {}): Promise<LabBroker> {
  const address = `${lab.broker.address}:${LAB_BROKER_PORT}`;
  const dualStack = options.dualStack === true;
  const process = startCli(lab, lab.broker, ['broker', '--listen', dualStack ? `[::]:${LAB_BROKER_PORT}` : address, ...extraArgs]);
  await process.waitForEvent('listening', START_TIMEOUT_MS);
  return { process, address, ...(dualStack ? { address6: `[${lab.broker.address6 ?? '::'}]:${LAB_BROKER_PORT}` } : {}) };
}

/** The same broker, with its IPv6 address as {@link LabBroker.address} (what --broker gets); it must listen dual-stack. */
export function overIpv6(broker: LabBroker): LabBroker {
  return { ...broker, address: ipv6Address(broker) };
}

/** The same broker, with its address of each family as {@link LabBroker.address} (`IPv4:PORT,[IPv6]:PORT`: a dual-stack peer). */
export function overBothFamilies(broker: LabBroker): LabBroker {
  return { ...broker, address: `${broker.address},${ipv6Address(broker)}` };
}

function ipv6Address(broker: LabBroker): string {
  if (broker.address6 === undefined) {
    throw new NattravError(ErrorCode.InvalidArgument, 'the lab broker does not listen on IPv6; start it with startLabBroker(lab, [], { dualStack: true })');
  }
  return broker.address6;
}

/** Starts `nattrav listen URI` on `host` (with `extraArgs`, e.g. --tls) and waits until it is registered. */
export async function startLabRecipient(lab: Lab, host: LabHost, broker: LabBroker, uri: string, echo = false, extraArgs: string[] = []): Promise<CliProcess> {
  const process = startCli(lab, host, ['listen', uri, '--broker', broker.address, ...(echo ? ['--echo'] : []), ...extraArgs]);
  await process.waitForEvent('registered', START_TIMEOUT_MS);
  return process;
}

/** What {@link runPair} observed. */
export interface PairResult {
  /** The initiator's `connected` event. */
  readonly connected: CliEvent;
  /** The recipient's `accepted` event. */
  readonly accepted: CliEvent;
  /** Application bytes sent each way. */
  readonly payloadBytes: number;
  /** Bytes in and out of the broker host while the payload crossed (keepalives only, if direct). */
  readonly brokerBytesDuringTransfer: number;
  /** Bytes in and out of the broker host while the connection was set up (the exchanges): proves the counter counts. */
  readonly brokerBytesDuringSetup: number;
}

/**
 * Connects `initiatorHost` to the registered `recipient` (a `listen` process in
 * pipe mode), sends `payloadBytes` each way, and counts the broker's traffic meanwhile
 * (IPv4, and IPv6 too in a lab with IPv6 sites).
 */
export async function runPair(
  lab: Lab,
  broker: LabBroker,
  initiatorHost: LabHost,
  recipient: CliProcess,
  uri: string,
  payloadBytes = 65_536,
  connectArgs: string[] = [],
): Promise<PairResult> {
  const counter = await lab.trafficCounter(lab.broker, { ipv6: lab.sites.some((site) => site.ipv6 !== 'off') });
  const setup = await counter();
  const initiator = startCli(lab, initiatorHost, ['connect', uri, '--broker', broker.address, ...connectArgs]);
  const connected = await initiator.waitForEvent('connected', CONNECT_WAIT_MS);
  const accepted = await recipient.waitForEvent('accepted', START_TIMEOUT_MS);
  const before = await counter();
  const forward = `${'a'.repeat(payloadBytes)}\nEND-FROM-INITIATOR\n`;
  const backward = `${'b'.repeat(payloadBytes)}\nEND-FROM-RECIPIENT\n`;
  initiator.write(forward);
  await recipient.waitForStdout('END-FROM-INITIATOR', TRANSFER_TIMEOUT_MS);
  recipient.write(backward);
  await initiator.waitForStdout('END-FROM-RECIPIENT', TRANSFER_TIMEOUT_MS);
  const after = await counter();
  if (!recipient.stdout.includes(forward) || !initiator.stdout.includes(backward)) {
    throw new NattravError(ErrorCode.Lab, 'the payload arrived altered');
  }
  return {
    connected,
    accepted,
    payloadBytes,
    brokerBytesDuringTransfer: total(after) - total(before),
    brokerBytesDuringSetup: total(before) - total(setup),
  };
}

function total(counts: { bytesIn: number; bytesOut: number }): number {
  return counts.bytesIn + counts.bytesOut;
}
