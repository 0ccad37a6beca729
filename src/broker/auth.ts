/**
 * Builds the broker's registration authentication from its options: nonces,
 * sessions, the CA that vouches for plain-name URIs (optional), and the
 * broker's own identity for signing its answers (optional).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { ErrorCode, NattravError } from '../errors.js';
import { issuedCertificate } from '../security/issued.js';
import { NonceBook } from '../security/proof.js';
import type { ResolvedBrokerOptions } from './options.js';
import type { RegisterAuth } from './register.js';
import { SessionTable } from './sessions.js';

/** Builds {@link RegisterAuth}; throws ERR_INVALID_ARGUMENT naming a bad certificate or key. */
export function buildAuth(options: ResolvedBrokerOptions): RegisterAuth {
  const ca = options.ca === undefined ? undefined : parseCertificate(options.ca, 'broker option ca');
  let identity: RegisterAuth['identity'];
  if (options.cert !== undefined || options.key !== undefined) {
    if (options.cert === undefined || options.key === undefined) {
      throw new NattravError(ErrorCode.InvalidArgument, 'broker options cert and key go together: pass both PEM strings, or neither');
    }
    const cert = parseCertificate(options.cert, 'broker option cert');
    try {
      if (!cert.checkPrivateKey(createPrivateKey(options.key))) throw new Error('the key does not belong to the certificate');
    } catch (err) {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option key: ${(err as Error).message}`, { cause: err });
    }
    identity = { keyPem: options.key, certDer: cert.raw };
  }
  return {
    mode: options.open ? 'open' : 'authenticated',
    // Workers of one broker share the primary's nonce secret and record of used nonces.
    nonces: options.workerLink?.nonces ?? new NonceBook(),
    sessions: options.sessions ?? new SessionTable(options.maxSessions),
    ...(ca === undefined ? {} : { verifyCertificate: (der, uri, spki) => certificateProblem(der, uri, spki, ca) }),
    ...(identity === undefined ? {} : { identity }),
  };
}

/** Why `der` does not prove `uri` for `spki` under `ca`, or undefined when it does. */
export function certificateProblem(der: Uint8Array, uri: string, spki: Uint8Array, ca: X509Certificate, now = new Date()): string | undefined {
  const checked = issuedCertificate(der, ca, "the broker's CA", now);
  if ('problem' in checked) return checked.problem;
  const { cert } = checked;
  const uris = (cert.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice(4));
  if (!uris.includes(uri)) return `certificate names ${uris.join(', ') || 'no URI'}, not ${uri}`;
  const certSpki = cert.publicKey.export({ type: 'spki', format: 'der' });
  if (!certSpki.equals(Buffer.from(spki))) return 'certificate key differs from PUBLIC-KEY';
  return undefined;
}

function parseCertificate(pem: string, what: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new NattravError(ErrorCode.InvalidArgument, `${what}: not a PEM certificate (${(err as Error).message})`, { cause: err });
  }
}
