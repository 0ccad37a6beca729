/** Registration by hand over UDP: a raw client, its requests and refreshes (tests, and what an attacker sends). */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { sign, type KeyPairPem } from '../../src/security/keys.js';
import { newEphemeralKey, registrationPayload, sessionKey } from '../../src/security/proof.js';
import { decodeMessage, encodeMessage, type EncodeOptions } from '../../src/wire/codec.js';
import { AttrType, MessageClass, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri, getErrorCode } from '../../src/wire/nattrav.js';

/** A session as a raw client holds it after proving its key: what it needs to sign refreshes. */
export interface RawSession {
  readonly id: Uint8Array;
  readonly key: Buffer;
}

/** A raw UDP client speaking the registration protocol by hand, as the tests (and an attacker) need. */
export class RawPeer {
  private constructor(readonly socket: UdpSocket, readonly brokerPort: number) {}

  /** Opens the peer's socket on loopback; `closers` gets the function that closes it. */
  static async open(brokerPort: number, closers: Array<() => unknown>): Promise<RawPeer> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const peer = new RawPeer(socket, brokerPort);
    closers.push(() => socket.close());
    return peer;
  }

  /** Sends `request` to the broker (or to another one on `port`) and returns its answer. */
  async send(request: StunMessage, options: EncodeOptions = {}, port = this.brokerPort): Promise<StunMessage> {
    return this.sendBytes(encodeMessage(request, options), port);
  }

  /** Sends `bytes` and returns the answer (within 2 s). */
  async sendBytes(bytes: Buffer, port = this.brokerPort): Promise<StunMessage> {
    const reply = once(this.socket, 'message');
    this.socket.send(bytes, port, '127.0.0.1');
    const [data] = (await Promise.race([reply, new Promise((_, reject) => setTimeout(() => reject(new Error('no answer')), 2_000))])) as [Buffer];
    return decodeMessage(data);
  }

  /** Proves `key` for `uri` and returns the session the broker opened. */
  async register(uri: string, key: KeyPairPem, lifetimeMs = 60_000, port = this.brokerPort): Promise<RawSession> {
    const first = register(uri, lifetimeMs);
    first.add(AttrType.PublicKey, key.spki);
    const challenge = await this.send(first, {}, port);
    const nonce = challenge.get(AttrType.Nonce);
    assert.ok(nonce, 'a challenge with a NONCE');
    const ephemeral = newEphemeralKey();
    const proof = register(uri, lifetimeMs);
    proof.add(AttrType.PublicKey, key.spki);
    proof.add(AttrType.Nonce, nonce);
    proof.add(AttrType.EphemeralKey, ephemeral.publicKey);
    proof.add(AttrType.Signature, sign(key.privateKeyPem, registrationPayload({ nonce, uri, ephemeralKey: ephemeral.publicKey, lifetimeMs, transport: 'udp' })));
    const ok = await this.send(proof, {}, port);
    assert.equal(ok.cls, MessageClass.SuccessResponse, JSON.stringify(getErrorCode(ok)));
    const id = ok.get(AttrType.Username);
    const brokerEphemeral = ok.get(AttrType.EphemeralKey);
    assert.ok(id && brokerEphemeral);
    const sessionKeyBytes = sessionKey(ephemeral, brokerEphemeral, nonce);
    assert.ok(sessionKeyBytes);
    return { id, key: sessionKeyBytes };
  }
}

/** A bare Register request for `uri` asking for `lifetimeMs` (0: a withdrawal). */
export function register(uri: string, lifetimeMs: number): StunMessage {
  const request = StunMessage.request(Method.Register);
  addUri(request, uri);
  addU32(request, AttrType.Lifetime, lifetimeMs);
  return request;
}

/** A refresh under `session` with `sequence`: its bytes, signed with `key` (the session's unless forging; null: no integrity). */
export function refreshBytes(uri: string, lifetimeMs: number, session: RawSession, sequence: number, key: Buffer | null = session.key): Buffer {
  const request = register(uri, lifetimeMs);
  request.add(AttrType.Username, session.id);
  addU32(request, AttrType.Sequence, sequence);
  return encodeMessage(request, key === null ? {} : { integritySha256Key: key });
}
