/**
 * `nattrav demo`: two peers behind two port-restricted NATs whose LANs use the
 * same private subnet connect directly through a broker on the public side.
 * Needs root for the network lab; without it the same peers run on loopback.
 */
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { createBroker } from '../broker/broker.js';
import { formatEndpoint } from '../common/endpoint.js';
import { connect } from '../peer/connect.js';
import { createServer } from '../peer/server.js';
import type { NattravSocket } from '../peer/info.js';
import { Lab } from './lab.js';
import { runPair, startLabBroker, startLabRecipient } from './scenario.js';
import { labSupport } from './support.js';

/** One step of the demo, as it happens. */
export interface DemoStep {
  /** Short machine name of the step. */
  readonly step: string;
  /** One line for a person. */
  readonly text: string;
  /** Facts of the step. */
  readonly detail?: Record<string, unknown>;
}

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** 'lab' requires root, 'loopback' never builds a lab, 'auto' picks. @default 'auto' */
  mode?: 'auto' | 'lab' | 'loopback';
  /** Called for each step as it happens. */
  onStep?: (step: DemoStep) => void;
  /** Where the loopback recipient keeps its key. @default ~/.nattrav/keys */
  keyDir?: string;
}

/** The outcome of {@link runDemo}. */
export interface DemoResult {
  readonly mode: 'lab' | 'loopback';
  /** Why the lab was skipped, in loopback mode. */
  readonly skipped?: string;
  readonly path: string;
  /** The remote endpoint the initiator's socket sees. */
  readonly initiatorRemote: string;
  /** The remote endpoint the recipient's socket sees. */
  readonly recipientRemote: string;
  readonly setupMs: number;
}

const DEMO_URI = 'nattrav://demo-recipient';

/** Runs the demo; reports steps through `onStep`. Always tears down what it built. */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const report = options.onStep ?? (() => undefined);
  const mode = options.mode ?? 'auto';
  if (mode !== 'loopback') {
    const support = await labSupport();
    if (support.ok) return labDemo(report);
    if (mode === 'lab') throw new Error(`the network lab is unavailable: ${support.reason}`);
    report({ step: 'skipped', text: `skipping the network lab: ${support.reason}; running the same peers on loopback instead`, detail: { reason: support.reason } });
    return { ...(await loopbackDemo(report, options.keyDir)), skipped: support.reason };
  }
  return loopbackDemo(report, options.keyDir);
}

async function labDemo(report: (step: DemoStep) => void): Promise<DemoResult> {
  report({ step: 'lab', text: 'building the lab: internet 203.0.113.0/24, two sites behind port-restricted NATs, both LANs 192.168.1.0/24' });
  const lab = await Lab.create({ sites: [{ name: 'a', nat: 'port-restricted' }, { name: 'b', nat: 'port-restricted' }] });
  try {
    const a = lab.site('a');
    const b = lab.site('b');
    report({ step: 'topology', text: `initiator ${a.host.address} behind NAT ${a.publicAddress}; recipient ${b.host.address} behind NAT ${b.publicAddress}; broker ${lab.broker.address}` });
    const broker = await startLabBroker(lab);
    report({ step: 'broker', text: `broker listening on ${broker.address} (UDP and TCP)` });
    const recipient = await startLabRecipient(lab, b.host, broker, DEMO_URI);
    report({ step: 'registered', text: `recipient registered ${DEMO_URI} over UDP` });
    report({ step: 'connecting', text: `initiator connecting to ${DEMO_URI}` });
    const pair = await runPair(lab, broker, a.host, recipient, DEMO_URI);
    const { connected, accepted } = pair;
    report({ step: 'connected', text: `connected: path ${String(connected.path)}, initiator sees ${String(connected.remote)}, recipient sees ${String(accepted.remote)}, setup ${String(connected.setupMs)} ms` });
    report({
      step: 'data',
      text: `sent ${pair.payloadBytes} bytes each way; the broker saw ${pair.brokerBytesDuringTransfer} bytes meanwhile (it saw ${pair.brokerBytesDuringSetup} during setup)`,
      detail: { payloadBytes: pair.payloadBytes, brokerBytes: pair.brokerBytesDuringTransfer, brokerSetupBytes: pair.brokerBytesDuringSetup },
    });
    return {
      mode: 'lab',
      path: String(connected.path),
      initiatorRemote: String(connected.remote),
      recipientRemote: String(accepted.remote),
      setupMs: Number(connected.setupMs),
    };
  } finally {
    await lab.close();
    report({ step: 'teardown', text: 'lab torn down' });
  }
}

async function loopbackDemo(report: (step: DemoStep) => void, keyDir: string | undefined): Promise<DemoResult> {
  const broker = createBroker({ host: '127.0.0.1', port: 0 });
  const sockets: Socket[] = [];
  try {
    const { port } = await broker.listen();
    const brokerAddress = `127.0.0.1:${port}`;
    report({ step: 'broker', text: `broker listening on ${brokerAddress} (UDP and TCP)` });
    // once: a one-shot demo fails rather than waits when its broker does not answer.
    const recipient = createServer({ broker: brokerAddress, uri: DEMO_URI, once: true, ...(keyDir === undefined ? {} : { keyDir }) });
    const accepted = new Promise<NattravSocket>((resolve) => recipient.once('connection', resolve));
    recipient.listen();
    await once(recipient, 'listening');
    report({ step: 'registered', text: `recipient registered ${DEMO_URI} over UDP` });
    try {
      report({ step: 'connecting', text: `initiator connecting to ${DEMO_URI}` });
      const socket = await connect({ broker: brokerAddress, uri: DEMO_URI });
      const other = await accepted;
      sockets.push(socket, other);
      report({ step: 'connected', text: `connected: path ${socket.nattrav.path}, initiator sees ${formatEndpoint(socket.nattrav.remote)}, recipient sees ${formatEndpoint(other.nattrav.remote)}, setup ${socket.nattrav.setupMs} ms` });
      other.write('hello from the recipient\n');
      socket.write('hello from the initiator\n');
      const [toInitiator, toRecipient] = await Promise.all([once(socket, 'data'), once(other, 'data')]);
      report({ step: 'data', text: `data both ways: initiator got "${String(toInitiator[0]).trim()}", recipient got "${String(toRecipient[0]).trim()}"` });
      return {
        mode: 'loopback',
        path: socket.nattrav.path,
        initiatorRemote: formatEndpoint(socket.nattrav.remote),
        recipientRemote: formatEndpoint(other.nattrav.remote),
        setupMs: socket.nattrav.setupMs,
      };
    } finally {
      recipient.close();
    }
  } finally {
    for (const socket of sockets) socket.destroy();
    await broker.close();
  }
}
