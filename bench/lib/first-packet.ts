/**
 * Time from spawning a process to its first packet: a local TCP listener or UDP socket
 * stands in for the broker, and the clock runs from just before `spawn()` until the
 * listener accepts the process's connection (its SYN, answered by the kernel) or the
 * socket receives its first datagram. The process is then killed (by PID) and the next
 * run starts. Nothing answers: what is measured is how soon the first packet leaves.
 */
import { spawn } from 'node:child_process';
import { createSocket, Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { canPin } from './procs.js';

/** How long one process may take to send its first packet (a Node start on a busy 2-core machine). */
const FIRST_PACKET_TIMEOUT_MS = 20_000;

/** The stand-in broker: where the first packet is expected. */
export type Transport = 'tcp' | 'udp';

/** A stand-in broker on 127.0.0.1 that reports each packet's arrival (a connection, a datagram). */
export class StandIn {
  readonly #server: Server | UdpSocket;
  #waiter: (() => void) | undefined;

  private constructor(readonly transport: Transport, server: Server | UdpSocket, readonly port: number) {
    this.#server = server;
    if (server instanceof UdpSocket) server.on('message', () => this.#arrived());
    else server.on('connection', (socket) => {
      socket.destroy();
      this.#arrived();
    });
  }

  /** Opens one on a free port. */
  static async open(transport: Transport): Promise<StandIn> {
    if (transport === 'udp') {
      const socket = createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(0, '127.0.0.1', () => resolve());
      });
      return new StandIn('udp', socket, socket.address().port);
    }
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the TCP stand-in has no port');
    return new StandIn('tcp', server, address.port);
  }

  #arrived(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  /**
   * Spawns `command args` with `env`, resolves with the ms from spawn to the first packet
   * here; the process is killed by PID and has exited when this resolves. Rejects when the
   * process exits or the timeout passes first (with its stderr).
   */
  async time(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
    // The runner pins itself to one core and children inherit that: a start is measured on every core, as a shell runs it.
    const [cmd, argv] = canPin() ? ['taskset', ['-c', `0-${cpus().length - 1}`, command, ...args]] : [command, [...args]];
    let stderr = '';
    const arrived = new Promise<void>((resolve) => {
      this.#waiter = resolve;
    });
    const began = performance.now();
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 4_096) stderr += chunk.toString();
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let timer: NodeJS.Timeout | undefined;
    try {
      const outcome = await Promise.race([
        arrived.then(() => performance.now() - began),
        exited.then(() => new Error(`exited (code ${String(child.exitCode)}) before its first packet: ${stderr.trim()}`)),
        new Promise<Error>((resolve) => {
          timer = setTimeout(() => resolve(new Error(`no packet within ${FIRST_PACKET_TIMEOUT_MS} ms: ${stderr.trim()}`)), FIRST_PACKET_TIMEOUT_MS);
        }),
      ]);
      if (outcome instanceof Error) throw new Error(`${[command, ...args].join(' ')}: ${outcome.message}`);
      return outcome;
    } finally {
      clearTimeout(timer);
      this.#waiter = undefined;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    }
  }

  /** Closes the listener or socket. */
  close(): Promise<void> {
    const server = this.#server;
    return new Promise((resolve) => (server instanceof UdpSocket ? server.close(() => resolve()) : server.close(() => resolve())));
  }
}

/**
 * The floor: a bare `node -e` whose only work is the packet, to the stand-in's port
 * (a TCP connect, or one datagram). Node's own start on this machine; a CLI cannot beat it.
 */
export function floorScript(transport: Transport, port: number): string {
  return transport === 'tcp'
    ? `require('node:net').connect(${port}, '127.0.0.1').on('error', () => {})`
    : `require('node:dgram').createSocket('udp4').send(Buffer.from('x'), ${port}, '127.0.0.1')`;
}
