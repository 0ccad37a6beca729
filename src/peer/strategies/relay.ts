/**
 * `relay`: both peers open a TCP connection to the broker and send
 * Relay(attempt ID, role); once both are in, the broker answers and splices
 * the two sockets. The Hello then runs end to end through the broker.
 */
import { MessageClass, Method } from '../../wire/constants.js';
import { encodeMessage } from '../../wire/codec.js';
import { StunMessage } from '../../wire/message.js';
import { addAttemptId, addRole, getRelayQuota } from '../../wire/nattrav.js';
import type { RelayQuotaAttribute } from '../../wire/relay-quota.js';
import type { Socket } from 'node:net';
import { brokerError, openBrokerConnection } from '../exchange.js';
import { readOneMessage } from '../sockets.js';
import type { StrategyRunner } from './types.js';

/** The quotas the broker announced for each relayed socket. */
const quotas = new WeakMap<Socket, RelayQuotaAttribute>();

/** The relay quotas the broker announced for `socket`, if it is a relayed connection. */
export function relayQuotaOf(socket: Socket): RelayQuotaAttribute | undefined {
  return quotas.get(socket);
}

/** Connects through the broker's relay and verifies the peer. */
export const relay: StrategyRunner = async (ctx) => {
  const socket = await openBrokerConnection(ctx.broker, ctx.signal, ctx.brokerCa, ctx.dialer);
  try {
    const request = StunMessage.request(Method.Relay);
    addAttemptId(request, ctx.exchange.attemptId);
    addRole(request, ctx.role);
    // Integrity under the attempt secret: the broker relays only the two peers of the attempt.
    socket.write(encodeMessage(request, { integritySha256Key: ctx.exchange.attemptSecret, fingerprint: true }));
    const answer = await readOneMessage(socket, ctx.signal);
    if (answer.cls === MessageClass.ErrorResponse) throw brokerError(answer, ctx.broker);
    const quota = getRelayQuota(answer);
    if (quota !== undefined) quotas.set(socket, quota);
    await ctx.verify(socket);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
};
