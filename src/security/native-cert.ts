/**
 * Self-signed certificates for self-certifying URIs, and the reading of a certificate's
 * subjectAltName URIs, with node:crypto and der.ts alone (no `@peculiar/x509`, see der.ts
 * for why). The certificate is the one ca.ts's `selfSignedCertificate` describes: version 3,
 * a random 128-bit serial, subject and issuer CN = the URI, basicConstraints (critical, not
 * a CA), keyUsage digitalSignature (critical), extKeyUsage serverAuth and clientAuth,
 * subjectAltName = the URI, subjectKeyIdentifier; signed with ecdsa-with-SHA256 or Ed25519.
 */
import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto';
import { bitString, children, type Element, explicit, octetString, oid, readTlv, sequence, set, Tag, time, TRUE, tlv, unsignedInteger, utf8String } from './der.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { KeyPairPem, KeyType } from './keys.js';
import { uriKeyFingerprint, uriMatchesKey } from './uri.js';

/** Object identifiers a certificate here names. */
const OID = {
  commonName: '2.5.4.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ed25519: '1.3.101.112',
} as const;

/** Bytes of a certificate serial number: 128 bits, as CA/Browser Forum baseline requirements ask (at least 64). */
const SERIAL_BYTES = 16;

/** A random positive serial number with no leading zero byte (for this module and x509.ts's issued certificates). */
export function randomSerialBytes(): Buffer {
  const bytes = randomBytes(SERIAL_BYTES);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes;
}
/** The public key's length at the end of its SPKI: an uncompressed P-256 point, or an Ed25519 key. */
const PUBLIC_KEY_BYTES: Readonly<Record<KeyType, number>> = { 'ecdsa-p256': 65, ed25519: 32 };
/** GeneralName's uniformResourceIdentifier: [6] IMPLICIT IA5String. */
const SAN_URI_TAG = 0x86;

/** Certificates start this long before their creation, so a peer whose clock is a little behind accepts them. */
export const CLOCK_SKEW_ALLOWANCE_MS = 5 * 60_000;
/** Milliseconds per day. */
const DAY_MS = 86_400_000;

/** The validity of a certificate made now for `validDays` days: from {@link CLOCK_SKEW_ALLOWANCE_MS} ago. */
export function validityFromNow(validDays: number): { notBefore: Date; notAfter: Date } {
  const notBefore = new Date(Date.now() - CLOCK_SKEW_ALLOWANCE_MS);
  return { notBefore, notAfter: new Date(notBefore.getTime() + validDays * DAY_MS) };
}

/** What {@link nativeSelfSignedCertificate} needs: the key, the URI, and the validity period. */
export interface NativeSelfSignedOptions {
  key: KeyPairPem;
  uri: string;
  notBefore: Date;
  notAfter: Date;
}

function extension(id: string, critical: boolean, value: Uint8Array): Buffer {
  return critical ? sequence(oid(id), TRUE, octetString(value)) : sequence(oid(id), octetString(value));
}

/**
 * A self-signed certificate (PEM) for `uri` and `key`, as described in the module comment.
 * Throws ERR_INVALID_ARGUMENT when `uri` is the self-certifying URI of another key.
 */
export function nativeSelfSignedCertificate(options: NativeSelfSignedOptions): string {
  const { key, uri } = options;
  if (uriKeyFingerprint(uri) !== undefined && !uriMatchesKey(uri, key.spki)) {
    throw new NattravError(ErrorCode.InvalidArgument, `${uri} is a self-certifying URI of another key; certify the key it names, or name this key's own URI`);
  }
  const algorithm = sequence(oid(key.type === 'ed25519' ? OID.ed25519 : OID.ecdsaWithSha256));
  const serial = randomSerialBytes();
  const name = sequence(set(sequence(oid(OID.commonName), utf8String(uri))));
  const publicKeyBits = key.spki.subarray(key.spki.length - PUBLIC_KEY_BYTES[key.type]);
  const extensions = sequence(
    extension(OID.basicConstraints, true, sequence()),
    // digitalSignature is bit 0: one significant bit, seven unused.
    extension(OID.keyUsage, true, bitString(Buffer.of(0x80), 7)),
    extension(OID.extKeyUsage, false, sequence(oid(OID.serverAuth), oid(OID.clientAuth))),
    extension(OID.subjectAltName, false, sequence(tlv(SAN_URI_TAG, Buffer.from(uri, 'ascii')))),
    // RFC 5280 section 4.2.1.2, method 1: SHA-1 of the subjectPublicKey bits.
    extension(OID.subjectKeyIdentifier, false, octetString(createHash('sha1').update(publicKeyBits).digest())),
  );
  const tbs = sequence(
    explicit(0, unsignedInteger(Buffer.of(2))),
    unsignedInteger(serial),
    algorithm,
    name,
    sequence(time(options.notBefore), time(options.notAfter)),
    name,
    key.spki,
    explicit(3, extensions),
  );
  const privateKey = createPrivateKey(key.privateKeyPem);
  const signature = key.type === 'ed25519' ? sign(null, tbs, privateKey) : sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const der = sequence(tbs, algorithm, bitString(signature));
  const body = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`;
}

/** What {@link certificateParts} reads of a certificate. */
export interface CertificateParts {
  /** The URIs of its subjectAltName, in order (empty without the extension). */
  readonly sanUris: string[];
  /** Its SubjectPublicKeyInfo, as encoded in the certificate (DER). */
  readonly spki: Buffer;
}

/** The subjectAltName URIs and the SPKI of a certificate (DER). Throws RangeError when the DER is malformed. */
export function certificateParts(certificate: Uint8Array): CertificateParts {
  const [tbs] = children(readTlv(Buffer.from(certificate)).content);
  if (tbs === undefined || tbs.tag !== Tag.Sequence) throw new RangeError('DER: no tbsCertificate');
  const fields = children(tbs.content);
  // version [0] (optional), serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
  const spki = fields[fields[0]?.tag === 0xa0 ? 6 : 5];
  if (spki === undefined || spki.tag !== Tag.Sequence) throw new RangeError('DER: no subjectPublicKeyInfo');
  return { sanUris: sanUris(fields.find((element) => element.tag === 0xa3)), spki: Buffer.from(spki.encoded) };
}

function sanUris(wrapper: Element | undefined): string[] {
  if (wrapper === undefined) return [];
  const wanted = oid(OID.subjectAltName).subarray(2);
  for (const ext of children(readTlv(wrapper.content).content)) {
    const parts = children(ext.content);
    const id = parts[0];
    if (id?.tag !== Tag.Oid || !id.content.equals(wanted)) continue;
    const value = parts.at(-1);
    if (value?.tag !== Tag.OctetString) throw new RangeError('DER: subjectAltName without its value');
    return children(readTlv(value.content).content)
      .filter((name) => name.tag === SAN_URI_TAG)
      .map((name) => name.content.toString('latin1'));
  }
  return [];
}
