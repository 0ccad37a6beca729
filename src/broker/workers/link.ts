/** What a worker of `--workers N` and the broker around it share: the link to the primary and the router's needs. */
import type { Socket } from 'node:net';
import type { StunChannel } from '../../common/stun-channel.js';
import type { StunMessage } from '../../wire/message.js';
import type { RoleName } from '../../wire/nattrav.js';
import type { RegisterNonces } from '../register.js';
import type { RelayHub } from '../relay.js';
import type { AnswerSource, Rendezvous, RendezvousContext } from '../rendezvous.js';
import type { IpcMessage, IpcPort } from './ipc.js';

/** How a worker reaches the primary (made by worker.ts, given to the broker as its `workerLink`). */
export interface WorkerLink {
  /** This worker's slot, 1..`workers` (a restarted worker takes its predecessor's slot). */
  readonly slot: number;
  /** How many workers the broker runs. */
  readonly workers: number;
  /** The primary's ID: registrations name their worker as `${prefix}/w${slot}`. */
  readonly prefix: string;
  /** The channel to the primary. */
  readonly port: IpcPort;
  /** Registration nonces under the primary's secret, used nonces recorded by the primary (a proof counts once for the whole broker). */
  readonly nonces: RegisterNonces;
  /** What the whole broker scheduled per initiator and URI (the primary's record: retries are planned from it). */
  readonly history: NonNullable<RendezvousContext['history']>;
  /** The next ConnectionRequest SEQUENCE for `uri`, from the primary's one counter. */
  nextSequence(uri: string): Promise<number>;
  /** Sets the handler of what the primary sends this worker (everything but store answers). */
  onMessage(handler: (message: IpcMessage, handle: Socket | undefined) => void): void;
}

/** Cross-worker traffic a worker saw, by path (sent: it routed; served: it served for another). */
export interface RouteCounts {
  join: number;
  probe: number;
  relay: number;
  ack: number;
  control: number;
}

/** What the router uses of the broker around it. */
export interface RouterParts {
  readonly rendezvous: Rendezvous;
  readonly relay: RelayHub;
  readonly software: string;
  /** The control connection of `uri`, if this worker holds it. */
  control(uri: string): StunChannel | undefined;
  /** An answer to a ConnectionRequest another worker relayed for a broker of the cluster (cluster.ts); undefined without a bus. */
  clusterAnswered?(response: StunMessage, source: AnswerSource): void;
  /** Serves a Relay connection moved here from another worker (tcp.ts). */
  adoptRelay(socket: Socket, attemptId: string, role: RoleName, request: StunMessage, early: Buffer): void;
}

/** A worker's bus ID as registrations carry it. */
export function workerBrokerId(prefix: string, slot: number): string {
  return `${prefix}/w${slot}`;
}

