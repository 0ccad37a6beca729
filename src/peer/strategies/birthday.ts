/**
 * `birthday`: a random symmetric NAT against an endpoint-independent one.
 * The random side opens many sockets (each a fresh mapping on its NAT) to the
 * cone side's known public endpoint; the cone side sends probes from its one
 * mapped port to random ports of the random side's public address. A probe
 * that lands on one of those mappings crosses the other side's SYN (Tailscale's
 * analysis: 256 ports x 2048 probes ~ 99.9%). Rate and time are bounded.
 * A full cone does not filter: it hands our spray to its host, whose RSTs refuse it.
 * The random side gives up as soon as it sees that ({@link coneRefuses}), so the plan's
 * next strategy (the cone side listening) runs at once instead of after the time limit.
 */
import { randomInt } from 'node:crypto';
import { ErrorCode, NattravError } from '../../errors.js';
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
/**
 * Refused spray sockets that show the cone side does not filter (a full cone's host answers
 * RST). A filtering cone drops what it does not expect; a stray RST (a probe closed while its
 * NAT entry lived on) stays far below this.
 */
export const REFUSALS_TO_GIVE_UP = 16;

/**
 * Whether the cone side refuses our spray (it forwards unsolicited SYNs to a host that answers
 * RST, so birthday cannot work there but a listener can): at least {@link REFUSALS_TO_GIVE_UP}
 * refusals, and at least a quarter of the sockets opened so far. Pure.
 */
export function coneRefuses(refused: number, opened: number): boolean {
  return refused >= REFUSALS_TO_GIVE_UP && refused * 4 >= opened;
}

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
  let opened = 0;
  let refused = 0;
  const onError = (err: NodeJS.ErrnoException): void => {
    if (err.code !== 'ECONNREFUSED' || !coneRefuses(++refused, opened) || race.settled) return;
    race.fail(new NattravError(ErrorCode.ConnectFailed, `birthday: the cone side refused ${refused} of our ${opened} SYNs: its NAT does not filter (a full cone), so the cone side can listen instead`));
  };
  for (let i = 0; i < BIRTHDAY_PORTS && !race.settled; i += BATCH_SIZE) {
    for (let j = i; j < Math.min(i + BATCH_SIZE, BIRTHDAY_PORTS) && !race.settled; j++) {
      if (!race.mayOpen()) return;
      const socket = dial(ctx.exchange.peerPublicEndpoint);
      socket.once('error', onError);
      opened++;
      race.add(socket);
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
