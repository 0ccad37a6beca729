/**
 * `birthday`: a random symmetric NAT against an endpoint-independent one.
 * The random side opens many sockets (each a fresh mapping on its NAT) to the
 * cone side's known public endpoint; the cone side sends probes from its one
 * mapped port to random ports of the random side's public address. A probe
 * that lands on one of those mappings crosses the other side's SYN (Tailscale's
 * analysis: 256 ports x 2048 probes ~ 99.9%). Rate and time are bounded.
 */
import { randomInt } from 'node:crypto';
import { sleep } from '../../common/signal.js';
import type { Socket } from 'node:net';
import { dial } from '../sockets.js';
import { SocketRace } from './race.js';
import type { StrategyContext, StrategyRunner } from './types.js';

/** Sockets the random side opens toward the cone side. */
export const BIRTHDAY_PORTS = 256;
/** Probes the cone side sends to random ports. */
export const BIRTHDAY_PROBES = 2048;
/** Sockets started per batch, and the pause between batches: about 2,500 SYNs/s at most. */
const BATCH_SIZE = 64;
const BATCH_PAUSE_MS = 25;
/** A probe that met no mapping is closed after this, in ms (keeps descriptors bounded); long enough for SYN/ACKs over a slow path. */
const PROBE_LIFETIME_MS = 2_500;
/** Lowest port a NAT hands out for a remapped flow. */
const MIN_NAT_PORT = 1024;

/** Runs whichever half of the birthday strategy our NAT calls for. */
export const birthday: StrategyRunner = async (ctx) => {
  const race = new SocketRace(ctx);
  await sleep(ctx.exchange.startDelayMs, ctx.signal).catch(() => undefined);
  if (ctx.exchange.mapping.kind === 'random') void spray(ctx, race);
  else void probe(ctx, race);
  return race.result;
};

/**
 * Random side: many fresh mappings toward the cone's one endpoint; each waits (SYN
 * retransmits) for a probe. Our sockets stay open until the race ends, so once the
 * socket budget is spent no more come back: the spray stops there, with fewer mappings.
 */
async function spray(ctx: StrategyContext, race: SocketRace): Promise<void> {
  for (let i = 0; i < BIRTHDAY_PORTS && !race.settled; i += BATCH_SIZE) {
    for (let j = i; j < Math.min(i + BATCH_SIZE, BIRTHDAY_PORTS); j++) {
      if (!race.mayOpen()) return;
      race.add(dial(ctx.exchange.peerPublicEndpoint));
    }
    await sleep(BATCH_PAUSE_MS, ctx.signal).catch(() => undefined);
  }
}

/**
 * Cone side: probes from our mapped port to random ports of the peer's address, each
 * closed after a while. With the socket budget spent, it waits for expired probes to
 * give theirs back.
 */
async function probe(ctx: StrategyContext, race: SocketRace): Promise<void> {
  const { exchange } = ctx;
  const tried = new Set<number>();
  const local = { address: exchange.localAddress, port: exchange.localPort };
  for (let sent = 0; sent < BIRTHDAY_PROBES && !race.settled; ) {
    const batch: Socket[] = [];
    for (let j = 0; j < BATCH_SIZE && sent < BIRTHDAY_PROBES && race.mayOpen(); j++, sent++) {
      let port = randomInt(MIN_NAT_PORT, 65536);
      while (tried.has(port)) port = randomInt(MIN_NAT_PORT, 65536);
      tried.add(port);
      const socket = dial({ ...exchange.peerPublicEndpoint, port }, local);
      race.add(socket);
      batch.push(socket);
    }
    if (batch.length > 0) {
      setTimeout(() => {
        for (const socket of batch) if (socket.connecting) race.drop(socket);
      }, PROBE_LIFETIME_MS).unref();
    }
    await sleep(BATCH_PAUSE_MS, ctx.signal).catch(() => undefined);
  }
}
