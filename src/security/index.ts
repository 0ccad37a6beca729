/**
 * Security: identity keys, self-certifying URIs, a small CA, peer identities,
 * and mutually authenticated TLS 1.3 over nattrav connections.
 */
export { DEFAULT_KEY_TYPE, FINGERPRINT_LENGTH, KEY_TYPES, generateKeyPair, keyFingerprint, keyPairFromPrivatePem, sign as signWithKey, verify as verifyWithKey } from './keys.js';
export type { KeyPairPem, KeyType } from './keys.js';
export { MAX_LABEL_LENGTH, SELF_CERTIFYING_PREFIX, checkNattravUri, selfCertifyingUri, uriKeyFingerprint, uriMatchesKey } from './uri.js';
export { CA_DEFAULTS, createCa, issueCertificate, readCaDir, selfSignedCertificate, writeCaDir } from './ca.js';
export type { CaFiles, CreateCaOptions, IssueCertificateOptions, SelfSignedCertificateOptions } from './ca.js';
export { defaultKeyDir, ephemeralOrKeptIdentity, loadIdentity, loadOrCreateIdentity, newSelfCertifyingIdentity, saveIdentity } from './identity.js';
export type { Identity, KeptIdentityOptions } from './identity.js';
export { verifyPeerCertificate } from './verify.js';
export type { VerifiedPeer, VerifyPeerOptions } from './verify.js';
export { ADMITTED_ALPN, CERTIFICATE_REFUSED_BYTE, CONFIRM_BYTE, REFUSED_ALPN, REJECT_BYTE, REJECT_REASON_MAX_BYTES, NATTRAV_ALPN, TLS_HANDSHAKE_TIMEOUT_MS, secureConnection } from './tls.js';
export type { PeerTlsOptions, SecureConnection, SecureConnectionOptions } from './tls.js';
export { describeCertificate } from './inspect.js';
export type { CertificateInfo } from './inspect.js';
