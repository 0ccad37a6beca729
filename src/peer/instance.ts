/**
 * The recipient's side of instances (broker/instances.ts): each registration process has a
 * random instance ID it sends in every Register; it answers the broker's INSTANCE-CHECK
 * "alive?" with that ID, and on "taken over" it stops (another process of its key took the
 * URI with `takeover`). Only checks under the registration's session key count: a forged one
 * is ignored, so nobody but the broker can make a recipient give up its URI.
 */
import { randomBytes } from 'node:crypto';
import { verifyMessageIntegritySha256, type EncodeOptions } from '../wire/codec.js';
import { INSTANCE_ID_LENGTH, MessageClass, Method } from '../wire/constants.js';
import { addInstanceId, getInstanceCheck, type InstanceCheckKind } from '../wire/instance.js';
import type { StunMessage } from '../wire/message.js';
import type { RegistrationSession } from './register-proof.js';

/** A new random instance ID ({@link INSTANCE_ID_LENGTH} bytes): one per server instance. */
export function newInstanceId(): Uint8Array {
  return randomBytes(INSTANCE_ID_LENGTH);
}

/**
 * Whether `message` is an INSTANCE-CHECK (a ConnectionRequest carrying one): then the caller
 * passes it here and not to the connection-request book. Answers it when it is under
 * `session`'s key (success with our INSTANCE-ID, under the key) and returns what it asked;
 * returns 'ignored' for a check that is not (forged, open mode, malformed), undefined when
 * `message` is no check at all.
 */
export function answerInstanceCheck(
  message: StunMessage,
  session: RegistrationSession | undefined,
  instanceId: Uint8Array,
  answer: (response: StunMessage, options: EncodeOptions) => void,
): InstanceCheckKind | 'ignored' | undefined {
  if (message.cls !== MessageClass.Request || message.method !== Method.ConnectionRequest) return undefined;
  let kind: InstanceCheckKind | undefined;
  try {
    kind = getInstanceCheck(message);
  } catch {
    return 'ignored';
  }
  if (kind === undefined) return undefined;
  if (session === undefined || !verifyMessageIntegritySha256(message, session.key)) return 'ignored';
  const response = message.successResponse();
  addInstanceId(response, instanceId);
  answer(response, { fingerprint: true, integritySha256Key: session.key });
  return kind;
}
