/** Register requests and signed proofs as a peer (or an attacker) builds them by hand. */
import { sign, type KeyPairPem } from '../../src/security/keys.js';
import { newEphemeralKey, registrationPayload } from '../../src/security/proof.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addU32, addUri } from '../../src/wire/nattrav.js';

/** The lifetime these requests ask for, in ms. */
export const LIFETIME_MS = 30_000;

/** A first Register request for `uri` with `key`'s public key (the broker answers with a nonce). */
export function register(uri: string, key: KeyPairPem): StunMessage {
  const request = StunMessage.request(Method.Register);
  addUri(request, uri);
  addU32(request, AttrType.Lifetime, LIFETIME_MS);
  request.add(AttrType.PublicKey, key.spki);
  return request;
}

/** The signed proof for `nonce`; `garbage` replaces the signature with random bytes of the same length. */
export function proof(uri: string, key: KeyPairPem, nonce: Uint8Array, garbage = false): StunMessage {
  const request = register(uri, key);
  const ephemeral = newEphemeralKey();
  const signature = sign(key.privateKeyPem, registrationPayload({ nonce, uri, ephemeralKey: ephemeral.publicKey, lifetimeMs: LIFETIME_MS, transport: 'udp' }));
  request.add(AttrType.Nonce, nonce);
  request.add(AttrType.EphemeralKey, ephemeral.publicKey);
  request.add(AttrType.Signature, garbage ? Buffer.from(signature).reverse() : signature);
  return request;
}

