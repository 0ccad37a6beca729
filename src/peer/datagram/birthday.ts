/**
 * UDP birthday probing: a random symmetric NAT against an endpoint-independent one
 * (strategies/birthday.ts is the TCP one, with the same arithmetic). The random side
 * sends PROBEs to the cone side's one endpoint from many UDP sockets, each a fresh
 * mapping on its NAT; the cone side sends PROBEs from its one socket to random ports of
 * the random side's address. A cone PROBE that lands on one of those mappings crosses,
 * and opens the cone's filter for it (a port-restricted cone lets in only what it sent
 * to), so that socket's next PROBE crosses the other way. 256 mappings x 2048 probes
 * over 64,512 ports meet with probability 1 - e^-8 (99.97%).
 */
import { randomInt } from 'node:crypto';
import type { Socket as UdpSocket } from 'node:dgram';
import type { SocketBudget } from '../strategies/socket-budget.js';
import type { DatagramEndpoint, DatagramTransport, TransportHandlers } from './channel.js';
import { bindUdpSocket, UdpTransport } from './transports.js';

/** Sockets (mappings) the random side opens, the first being the one the broker saw. */
export const BIRTHDAY_UDP_SOCKETS = 256;
/** Distinct random ports the cone side probes in all. */
export const BIRTHDAY_UDP_PROBES = 2048;
/** New random ports per probe interval: 640 PROBEs/s at the default 100 ms, done in about 3 s. */
export const BIRTHDAY_PORTS_PER_ROUND = 64;
/** Lowest port a NAT hands out for a remapped flow. */
const MIN_NAT_PORT = 1024;

/** The cone side's candidates: each call, fresh random ports of `peer`'s address, until {@link BIRTHDAY_UDP_PROBES} were given. */
export function birthdayPorts(peer: DatagramEndpoint, random: (min: number, max: number) => number = randomInt): () => DatagramEndpoint[] {
  const tried = new Set<number>();
  return () => {
    const round: DatagramEndpoint[] = [];
    while (round.length < BIRTHDAY_PORTS_PER_ROUND && tried.size < BIRTHDAY_UDP_PROBES) {
      const port = random(MIN_NAT_PORT, 65_536);
      if (tried.has(port)) continue;
      tried.add(port);
      round.push({ ...peer, port });
    }
    return round;
  };
}

/**
 * The random side's sockets: `first` and as many more as `budget` allows (up to
 * {@link BIRTHDAY_UDP_SOCKETS} in all); `release` gives the budget back.
 */
export async function birthdaySockets(first: UdpSocket, host: string, budget: SocketBudget | undefined): Promise<{ sockets: UdpSocket[]; release: () => void }> {
  const wanted = BIRTHDAY_UDP_SOCKETS - 1;
  const extra = budget === undefined ? wanted : Math.min(wanted, budget.available);
  if (budget !== undefined && extra > 0 && !budget.tryTake(extra)) return { sockets: [first], release: () => undefined };
  const sockets = [first];
  try {
    for (let i = 0; i < extra; i++) sockets.push(await bindUdpSocket(host));
  } catch (err) {
    for (const socket of sockets.slice(1)) socket.close();
    budget?.release(extra);
    throw err;
  }
  let released = false;
  return {
    sockets,
    release: () => {
      if (!released && budget !== undefined) budget.release(extra);
      released = true;
    },
  };
}

/**
 * A channel over several UDP sockets: a packet to an endpoint one of them heard from goes
 * out of that socket, any other out of all of them (the PROBEs). Once the channel took its
 * peer it sends from the socket that reached it, but still hears every socket: the other
 * side may have opened on another one's mapping. The first packet the channel follows
 * (its peer's newest authenticated one, channel.ts step 2) settles the transport on the
 * socket that packet came in on, and the others close.
 */
export class MultiUdpTransport implements DatagramTransport {
  readonly #transports: UdpTransport[];
  /** Which socket last heard each endpoint ("address:port"), recorded until the channel opens. */
  readonly #routes = new Map<string, number>();
  /** The socket packets go out of once the channel opened. */
  #kept: number | undefined;
  /** True once the transport settled on {@link #kept} and closed the others. */
  #settled = false;
  /** The socket whose packet is being handed to the channel now. */
  #delivering: number | undefined;

  constructor(sockets: readonly UdpSocket[]) {
    this.#transports = sockets.map((socket) => new UdpTransport(socket));
  }

  /** Endpoints with a recorded route (bounded: recorded only while punching). */
  get routes(): number {
    return this.#routes.size;
  }

  attach(handlers: TransportHandlers): void {
    this.#transports.forEach((transport, i) =>
      transport.attach({
        message: (data, from) => {
          if (this.#settled && this.#kept !== i) return;
          if (this.#kept === undefined) this.#routes.set(`${from.address}:${from.port}`, i);
          this.#delivering = i;
          try {
            handlers.message(data, from);
          } finally {
            this.#delivering = undefined;
          }
        },
        error: (err) => {
          if (!this.#settled || this.#kept === i) handlers.error(err);
        },
      }),
    );
  }

  send(data: Buffer, to: DatagramEndpoint): void {
    const route = this.#kept ?? this.#routes.get(`${to.address}:${to.port}`);
    if (route !== undefined) this.#transports[route]?.send(data, to);
    else for (const transport of this.#transports) transport.send(data, to);
  }

  local(): DatagramEndpoint {
    return (this.#transports[this.#kept ?? 0] as UdpTransport).local();
  }

  opened(peer: DatagramEndpoint): void {
    this.#kept = this.#delivering ?? this.#routes.get(`${peer.address}:${peer.port}`) ?? 0;
    this.#routes.clear();
  }

  follow(): void {
    if (this.#settled || this.#delivering === undefined) return;
    this.#kept = this.#delivering;
    this.#settled = true;
    this.#transports.forEach((transport, i) => i !== this.#kept && transport.close());
  }

  close(): void {
    for (const transport of this.#transports) transport.close();
  }
}
