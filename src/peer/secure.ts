/**
 * TLS between peers, after the connection is made (direct or relayed): wraps
 * the socket with security/tls.ts and carries the connection info over.
 */
import { performance } from 'node:perf_hooks';
import { generateKeyPair } from '../security/keys.js';
import { selfSignedCertificate } from '../security/ca.js';
import type { Identity } from '../security/identity.js';
import { secureConnection } from '../security/tls.js';
import type { VerifiedPeer } from '../security/verify.js';
import { selfCertifyingUri } from '../security/uri.js';
import { attachInfo, factsOf, type NattravSocket } from './info.js';

/** A throwaway self-certifying identity, for an initiator that has none. */
export async function throwawayIdentity(): Promise<Identity> {
  const key = generateKeyPair();
  const uri = selfCertifyingUri(key.spki);
  return { uri, keyPem: key.privateKeyPem, certPem: await selfSignedCertificate({ key, uri }), ca: [] };
}

/** Runs mutual TLS over a connected nattrav socket; resolves with the TLS socket carrying the updated info. */
export async function secure(
  socket: NattravSocket,
  options: {
    identity: Identity;
    ca: string[];
    expectedPeerUri?: string;
    expectedKeyFingerprint?: string;
    signal?: AbortSignal;
    started: number;
    /** Recipient only: refuses a verified initiator with a reason (security/tls.ts step 4). */
    admit?: (peer: VerifiedPeer) => string | undefined;
  },
): Promise<NattravSocket> {
  const role = socket.nattrav.role;
  const result = await secureConnection(socket, {
    role,
    identity: options.identity,
    ca: options.ca,
    ...(options.expectedPeerUri === undefined ? {} : { expectedPeerUri: options.expectedPeerUri }),
    ...(options.expectedKeyFingerprint === undefined ? {} : { expectedKeyFingerprint: options.expectedKeyFingerprint }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.admit === undefined ? {} : { admit: options.admit }),
  });
  return attachInfo(
    result.socket,
    {
      ...factsOf(socket.nattrav),
      peerUri: result.peerUri,
      peerKeyFingerprint: result.peerKeyFingerprint,
      peerVouchedBy: result.vouchedBy,
      tls: true,
      setupMs: Math.round(performance.now() - options.started),
    },
    socket,
  );
}
