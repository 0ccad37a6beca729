/**
 * `socks5-bind`: the recipient holds a BIND open at its SOCKS5 proxy (../socks5-bind.ts), so the
 * initiator, from anywhere, connects to the address the proxy bound (PEER-PUBLIC-ENDPOINT for
 * this path, broker/schedule.ts) with a plain connect, or through its own proxy's CONNECT. The
 * recipient takes the connection whose first message, the initiator's Hello (sent in the
 * clear, before TLS), names this attempt: the agent routes by its ATTEMPT-ID, and the claim
 * checks its MESSAGE-INTEGRITY-SHA256 under the attempt secret before taking it, so neither
 * another initiator nor anyone who only knows the bound address can take or use up the claim.
 * The Hello check then runs as on every path, and TLS follows: until then it is untrusted.
 */
import { verifyMessageIntegritySha256 } from '../../wire/codec.js';
import { dialUntilConnected } from '../sockets.js';
import { inboundPath } from './inbound.js';
import { dialThrough } from './listening.js';
import type { StrategyRunner } from './types.js';

/** After a refusal, dial again this soon, in ms. */
const REDIAL_MS = 100;

/** Runs `socks5-bind` for either role: the initiator dials the bound address, the recipient takes what comes through the BIND. */
export const socks5Bind: StrategyRunner = inboundPath({
  inbound: (ctx) => ctx.boundInbound,
  missing: 'the broker chose socks5-bind but this recipient holds no BIND at a SOCKS5 proxy',
  claim: (inbound, { exchange }, take) =>
    inbound.claim(exchange.attemptId, (socket, _from, hello) => take(socket, () => verifyMessageIntegritySha256(hello, exchange.attemptSecret))),
  dial: (ctx, race) => {
    const proxy = ctx.dialer?.kind === 'direct' ? undefined : ctx.dialer;
    const target = ctx.exchange.peerPublicEndpoint;
    void (proxy === undefined ? dialUntilConnected(race, ctx.signal, target, { retryMs: REDIAL_MS, mayDial: () => race.mayOpen() }) : dialThrough(proxy, ctx.signal, race, target));
  },
});
