/**
 * Wire constants of STUN (RFC 8489), its NAT behaviour discovery extension
 * (RFC 5780) and nattrav's own methods and attributes.
 *
 * nattrav's methods sit in 0xE00-0xE0F, inside the range RFC 8489 §18.2 leaves
 * to Expert Review (0x800-0xFFF). Its attributes sit in 0x4E00-0x4E2F
 * (comprehension-required, Expert Review, §18.3) and 0xCE00-0xCE2F
 * (comprehension-optional, Expert Review). No IETF-reviewed value is used.
 */

/** RFC 8489 §5: the fixed magic cookie in every header. */
export const MAGIC_COOKIE = 0x2112a442;
/** RFC 8489 §5: the header is 20 bytes. */
export const HEADER_LENGTH = 20;
/** RFC 8489 §5: transaction IDs are 96 bits. */
export const TRANSACTION_ID_LENGTH = 12;
/** RFC 8489 §14: attribute header (type + length) is 4 bytes. */
export const ATTRIBUTE_HEADER_LENGTH = 4;
/** RFC 8489 §14.7: FINGERPRINT XORs the CRC-32 with this. */
export const FINGERPRINT_XOR = 0x5354554e;
/** RFC 8489 §14.5: HMAC-SHA1 output is 20 bytes. */
export const MESSAGE_INTEGRITY_LENGTH = 20;
/** RFC 8489 §14.6: HMAC-SHA256 output is 32 bytes (may be truncated to no less than 16). */
export const MESSAGE_INTEGRITY_SHA256_LENGTH = 32;
/**
 * The largest message nattrav accepts or produces. RFC 8489 §6.1 bounds UDP
 * messages by the path MTU; a STUN length field allows 65535, which no honest
 * nattrav message approaches.
 */
export const MAX_MESSAGE_LENGTH = 4096;

/** RFC 8489 §5: the two class bits. */
export const MessageClass = {
  Request: 0b00,
  Indication: 0b01,
  SuccessResponse: 0b10,
  ErrorResponse: 0b11,
} as const;
/** One of the {@link MessageClass} values. */
export type MessageClassValue = (typeof MessageClass)[keyof typeof MessageClass];

/** STUN methods: RFC 8489 §18.2, and nattrav's in the Expert Review range. */
export const Method = {
  /** RFC 8489 §18.2: Binding. */
  Binding: 0x001,
  /** nattrav: a peer registers (or refreshes) a URI over UDP. */
  Register: 0xe01,
  /** nattrav: an initiator asks the broker over TCP for a connection to a URI. */
  Connect: 0xe02,
  /** nattrav: the broker asks a registered recipient (over its UDP registration) to join an attempt. */
  ConnectionRequest: 0xe03,
  /** nattrav: the recipient joins an attempt over a fresh TCP connection to the broker. */
  Join: 0xe04,
  /** nattrav: the broker measures the round-trip time to a peer on its TCP exchange. */
  Probe: 0xe05,
  /** nattrav: the first message on a freshly punched connection, naming the attempt. */
  Hello: 0xe06,
  /** nattrav: a peer opens an extra connection to the broker's alternate port so the broker sees one more NAT mapping. */
  MappingProbe: 0xe07,
  /** nattrav: a peer asks the broker to splice it to the other peer of an attempt (the relay path). */
  Relay: 0xe08,
  /** nattrav: upgrade this TCP connection to TLS 1.3 (STARTTLS), so the peer can authenticate the broker. */
  StartTls: 0xe09,
  /**
   * nattrav: a registered recipient opens a standby exchange (TCP, kept open) under its session
   * key; the broker answers the next attempt for its URI down it (broker/standby.ts).
   */
  Standby: 0xe18,
  /** nattrav: the broker's keepalive on a standby exchange; its answer measures the round trip to the recipient. */
  StandbyRefresh: 0xe19,
  /** nattrav: the broker's answer for an attempt, sent down the recipient's standby exchange (under its session key). */
  StandbyAttempt: 0xe1a,
} as const;

/** STUN attribute types. */
export const AttrType = {
  /** RFC 8489 §14.1 */
  MappedAddress: 0x0001,
  /** RFC 5780 §7.2 */
  ChangeRequest: 0x0003,
  /** RFC 8489 §14.3 */
  Username: 0x0006,
  /** RFC 8489 §14.5 */
  MessageIntegrity: 0x0008,
  /** RFC 8489 §14.8 */
  ErrorCode: 0x0009,
  /** RFC 8489 §14.13 */
  UnknownAttributes: 0x000a,
  /** RFC 8489 §14.9 */
  Realm: 0x0014,
  /** RFC 8489 §14.10 */
  Nonce: 0x0015,
  /** RFC 8489 §14.6 */
  MessageIntegritySha256: 0x001c,
  /** RFC 8489 §14.2 */
  XorMappedAddress: 0x0020,
  /** RFC 5780 §7.6 */
  Padding: 0x0026,
  /** RFC 5780 §7.5 */
  ResponsePort: 0x0027,
  /** RFC 8489 §14.14 */
  Software: 0x8022,
  /** RFC 8489 §14.15 */
  AlternateServer: 0x8023,
  /** RFC 8489 §14.7 */
  Fingerprint: 0x8028,
  /** RFC 5780 §7.3 */
  ResponseOrigin: 0x802b,
  /** RFC 5780 §7.4 */
  OtherAddress: 0x802c,

  /** nattrav: the URI a peer registers or looks up (UTF-8, at most {@link MAX_URI_BYTES}). */
  Uri: 0x4e01,
  /** nattrav: 16 random bytes naming one connection attempt. */
  AttemptId: 0x4e02,
  /** nattrav: one of the sender's own private endpoints (XOR-address encoding; repeatable). */
  PrivateEndpoint: 0x4e03,
  /** nattrav: the other peer's public endpoint as the broker saw it (XOR-address encoding). */
  PeerPublicEndpoint: 0x4e04,
  /** nattrav: one of the other peer's private endpoints (XOR-address encoding; repeatable). */
  PeerPrivateEndpoint: 0x4e05,
  /** nattrav: milliseconds to wait after receipt before sending the SYN (u32). */
  StartDelay: 0x4e06,
  /** nattrav: registration lifetime in milliseconds (u32); {@link WITHDRAWAL_LIFETIME_MS} in a refresh withdraws it. */
  Lifetime: 0x4e07,
  /** nattrav: the strategy of this attempt (u32, a {@link StrategyCode}). */
  Strategy: 0x4e08,
  /** nattrav: the sender's role in an attempt (u32, a {@link RoleCode}). */
  Role: 0x4e09,
  /** nattrav: how the receiver's own NAT maps TCP, as the broker measured it (u32, see MappingKind encoding). */
  Mapping: 0x4e0a,
  /** nattrav: how the other peer's NAT maps TCP, as the broker measured it (u32). */
  PeerMapping: 0x4e0b,
  /** nattrav: strategies that already failed for this connection, as the initiator says (u32, bit `1 << code` per {@link StrategyCode}). */
  FailedStrategies: 0x4e0c,
  /** nattrav: the sender's public key (SubjectPublicKeyInfo, DER). */
  PublicKey: 0x4e0d,
  /** nattrav: a signature by the sender's key over the registration proof (see security/proof.ts). */
  Signature: 0x4e0e,
  /** nattrav: the sender's X.509 certificate (DER), for CA-issued identities and the broker's own. */
  Certificate: 0x4e0f,
  /** nattrav: an ephemeral X25519 public key (32 bytes) for the keepalive session key. */
  EphemeralKey: 0x4e10,
  /** nattrav: a refresh counter (u32, strictly increasing per session) against replayed keepalives. */
  Sequence: 0x4e11,
  /** nattrav: what the sender runs over the connection after the Hello (u32, a {@link SecurityMode}). */
  Security: 0x4e12,
  /** nattrav: the relay's quotas for this connection (u64 bytes, both directions; u32 milliseconds; 0 = unlimited). */
  RelayQuota: 0x4e13,
  /**
   * nattrav: the fingerprint of the key the other peer registered with (text: lowercase base32
   * SHA-256 of its SubjectPublicKeyInfo, {@link KEY_FINGERPRINT_LENGTH} characters), so an
   * initiator can authenticate a plain name end to end.
   */
  PeerKey: 0x4e14,
  /**
   * nattrav: the per-attempt secret, sealed for its receiver (AES-256-GCM: 12-byte nonce, 32-byte
   * ciphertext, 16-byte tag; see security/attempt-secret.ts).
   */
  AttemptSecret: 0x4e15,
  /**
   * nattrav: in a Connect, the key ({@link MAPPING_KEY_LENGTH} random bytes) under which the
   * initiator's mapping probes carry MESSAGE-INTEGRITY-SHA256, so the broker counts only the
   * probes of whoever sent the Connect (the recipient's use its session key).
   */
  MappingKey: 0x4e16,
  /**
   * nattrav: in a ConnectionRequest relayed by another broker of a cluster, the address of the
   * broker that runs the attempt (XOR-address encoding): the recipient joins there (and sends its
   * mapping probes there), but only if that broker is one it trusts (peer/join-at.ts).
   */
  JoinAt: 0x4e17,
  /**
   * nattrav: in a Register, the endpoint the recipient's gateway forwards to its accepting port
   * (a port mapping made by PCP, NAT-PMP or UPnP IGD; XOR-address encoding; at most one). The
   * broker keeps it with the registration and plans path `portmap` to it first.
   */
  MappedEndpoint: 0x4e18,
  /**
   * nattrav: in a Register, the address a SOCKS5 proxy bound for the recipient (RFC 1928 BIND,
   * the proxy's first reply; XOR-address encoding; at most one): a connection made to it reaches
   * the recipient through the proxy. An unspecified address (0.0.0.0 or ::) means the proxy's
   * address as the broker sees the registration come from. The broker plans path `socks5-bind`.
   */
  BoundEndpoint: 0x4e19,
  /**
   * nattrav: in a refresh under a registration's session, "this registers the session's second
   * address family" (u32, 1; wire/family.ts): the broker keeps the source as the registration's
   * endpoint of that family next to the first one, instead of moving the registration there.
   * Comprehension-required: a broker that does not know it must refuse (420), not move us.
   */
  SecondFamily: 0x4e20,
  /**
   * nattrav: in a Connect, "run this attempt in the family of this exchange only" (u32, 1): a
   * recipient with no registration in that family is refused at once (476) instead of the
   * attempt going to the relay across families; the initiator's other family races it (RFC 8305).
   */
  FamilyOnly: 0x4e21,
  /**
   * nattrav: in a Hello with SECURITY tls-flight-certified or tls-answered-certified, the initiator's TLS certificate
   * (DER, at most {@link MAX_HELLO_CERTIFICATE_BYTES}), sealed under the attempt secret (AES-256-GCM:
   * 12-byte nonce, ciphertext, 16-byte tag; security/attempt-secret.ts): the recipient checks it (and
   * its allow-list) before its TLS answer, so no confirmation round trip follows TLS (peer/hello.ts).
   */
  InitiatorCertificate: 0x4e22,
  /**
   * nattrav (comprehension-optional): filler bytes that make a UDP request at least as large as the
   * answer it asks for, because the broker never answers an unverified source with more bytes than
   * it sent (anti-amplification). Unlike RFC 5780 PADDING it asks for no padded answer. Ignored by receivers.
   */
  RequestPadding: 0xce00,
  /**
   * nattrav (comprehension-optional): the broker's alternate port (u32), where peers send their
   * mapping probes; a peer that never heard it assumes the broker's port + 1.
   */
  AlternatePort: 0xce01,
  /**
   * nattrav (comprehension-optional): {@link INSTANCE_ID_LENGTH} random bytes naming one running
   * process of a key (a server instance). In a Register: who registers, so the broker tells the
   * same instance registering from a new place (a move) from another live process of the key.
   * In the answer to an INSTANCE-CHECK: the holder's instance. See wire/instance.ts.
   */
  InstanceId: 0xce02,
  /**
   * nattrav (comprehension-optional): in a Register with a proof of key, "take the URI from a
   * live instance of this key" (u32, 1). Ignored in refreshes.
   */
  Takeover: 0xce03,
  /**
   * nattrav (comprehension-optional): in a ConnectionRequest from the broker to the holder of a
   * URI, under its session key and with no ATTEMPT-ID: what the broker asks (u32, an
   * {@link InstanceCheckCode}): are you alive (answer with INSTANCE-ID), or you were taken over.
   */
  InstanceCheck: 0xce04,
  /**
   * nattrav (comprehension-optional): in a proof of key, the session the same instance held
   * before (its ID, then an HMAC-SHA256 under that session's key over the proof's nonce and URI;
   * security/previous-session.ts): the broker sees a move or a new socket, not another process.
   */
  PreviousSession: 0xce05,
  /**
   * nattrav (comprehension-optional): in a Connect, ConnectionRequest and the final answers, what
   * the attempt makes (u32, a {@link TransportCode}); absent means a TCP stream.
   */
  Transport: 0xce10,
  /** nattrav (comprehension-optional): in a datagram Connect or Join, the local port of the sender's UDP socket (u32). */
  UdpPort: 0xce11,
  /**
   * nattrav (comprehension-optional): in a datagram Connect or Join, the sender's UDP socket as the
   * broker's primary UDP port mapped it (XOR-address encoding; a STUN Binding from that socket).
   */
  UdpMapped: 0xce12,
  /** nattrav (comprehension-optional): the same socket as the broker's alternate UDP port mapped it (how the NAT maps UDP). */
  UdpMappedAlternate: 0xce13,
  /**
   * nattrav (comprehension-optional): in a first registration's answer, how many standby
   * exchanges the broker grants this registration (u32, 0 or 1; broker/standby.ts).
   */
  StandbyGrant: 0xce28,
  /**
   * nattrav (comprehension-optional): in a Connect or a Join, the sender's TCP handshake time to
   * the broker in ms (u32): the round trip the broker schedules with instead of a Probe.
   */
  ConnectRtt: 0xce29,
  /** nattrav (comprehension-optional): in a Standby answer, how often the broker refreshes the standby, in ms (u32). */
  StandbyRefreshMs: 0xce2a,
  /**
   * nattrav (comprehension-optional): in the answer to a registration, an address of the broker
   * in the other address family (XOR-address encoding, RFC 5780 OTHER-ADDRESS in spirit): where a
   * dual-stack recipient registers its second family (wire/family.ts). Absent: none announced.
   */
  OtherFamilyBroker: 0xce20,
} as const;

/** nattrav: values of TRANSPORT, what an attempt makes. */
export const TransportCode = {
  /** A TCP stream (the default when TRANSPORT is absent). */
  stream: 0,
  /** A UDP datagram channel (peer/datagram/). */
  datagram: 1,
} as const;

/** nattrav: values of INSTANCE-CHECK. */
export const InstanceCheckCode = {
  /** Is the holder alive? It answers success with its INSTANCE-ID, under its session key. */
  alive: 1,
  /** Another instance of the key took the URI over: the holder stops refreshing (it answers success). */
  takenOver: 2,
} as const;

/** nattrav: length of INSTANCE-ID in bytes (random, per server instance). */
export const INSTANCE_ID_LENGTH = 16;

/** nattrav: values of ROLE, the sender's part in an attempt (MappingProbe, Relay). */
export const RoleCode = {
  /** The peer that asked for the connection (Connect). */
  initiator: 0,
  /** The registered peer that was asked (Join). */
  recipient: 1,
} as const;

/**
 * nattrav: values of STRATEGY, how the broker tells both peers to connect (README "Strategies");
 * the failure of a strategy is bit `1 << code` of FAILED-STRATEGIES.
 */
export const StrategyCode = {
  /** Same public address: connect to the recipient's private endpoint. */
  lan: 1,
  /** The recipient has a public address: it listens, the initiator connects. */
  public: 2,
  /** The initiator has a public address: it listens, the recipient connects (P2PWG connection reversal). */
  reversal: 3,
  /** Both NATs map endpoint-independently: TCP simultaneous open. */
  direct: 4,
  /** A sequential symmetric NAT: aim at its next port(s) (P2PWG N+1). */
  predicted: 5,
  /** A random symmetric NAT against a cone: many ports on one side, probes from the other. */
  birthday: 6,
  /** Nothing direct can work: the broker splices two TCP connections. */
  relay: 7,
  /** The recipient's gateway maps a port to it (MAPPED-ENDPOINT): the initiator connects there. */
  portmap: 8,
  /** The recipient holds a BIND open at its SOCKS5 proxy (BOUND-ENDPOINT): the initiator connects there. */
  'socks5-bind': 9,
} as const;

/** nattrav: values of SECURITY in a Hello (absent means plain). */
export const SecurityMode = {
  /** Application bytes follow the Hello as they are. */
  Plain: 0,
  /** A mutually authenticated TLS 1.3 handshake follows the Hello. */
  Tls: 1,
  /**
   * The TLS 1.3 ClientHello follows the Hello in the same flight and the recipient sends no
   * answer to it: its TLS server flight is the answer (peer/hello.ts). Older peers do not know it.
   */
  TlsFlight: 2,
  /**
   * Plain, and both peers write their proof at once instead of a request and a response: the
   * recipient's is a Hello indication with ROLE recipient (peer/hello.ts). Older peers do not know it.
   */
  PlainProofs: 3,
  /**
   * The TLS flight, with the initiator's certificate in the Hello (INITIATOR-CERTIFICATE): the
   * recipient decides on it before its TLS answer, which says by ALPN whether it admits the
   * initiator, and writes no confirmation after TLS (security/tls.ts). Older peers do not know it.
   */
  TlsFlightCertified: 4,
  /**
   * The answered Hello (request and success response, as {@link SecurityMode.Tls}) with the
   * initiator's certificate in it (INITIATOR-CERTIFICATE): TLS then runs as after
   * {@link SecurityMode.TlsFlightCertified}, without the recipient's confirmation. Older peers do not know it.
   */
  TlsAnsweredCertified: 5,
} as const;

/**
 * nattrav: the largest certificate an initiator puts in its Hello (INITIATOR-CERTIFICATE), in
 * bytes; with a larger one it runs the TLS flight without it (and the confirmation round trip).
 * The Hello must stay within {@link MAX_MESSAGE_LENGTH} with its other attributes.
 */
export const MAX_HELLO_CERTIFICATE_BYTES = 3_072;

/** nattrav: what sealing adds to the certificate in INITIATOR-CERTIFICATE (nonce and tag), in bytes. */
export const HELLO_CERTIFICATE_SEAL_BYTES = 28;

/** nattrav: the length of PEER-KEY (base32 of a SHA-256 digest, unpadded). */
export const KEY_FINGERPRINT_LENGTH = 52;

/** nattrav: the length of RELAY-QUOTA (u64 bytes + u32 milliseconds). */
export const RELAY_QUOTA_LENGTH = 12;

/** nattrav: the longest URI accepted, in UTF-8 bytes. */
export const MAX_URI_BYTES = 512;
/**
 * nattrav: LIFETIME 0 in an authenticated Register refresh withdraws the registration and
 * ends its session; the answer says LIFETIME 0 (as a TURN Refresh with LIFETIME 0, RFC 8656 §7.3).
 */
export const WITHDRAWAL_LIFETIME_MS = 0;
/** RFC 8489 §14.14: SOFTWARE is fewer than 128 characters (at most 763 bytes). */
export const MAX_SOFTWARE_BYTES = 763;
/** RFC 8489 §14.8: the reason phrase is fewer than 128 characters (at most 763 bytes). */
export const MAX_REASON_BYTES = 763;
/** nattrav: the length of ATTEMPT-ID. */
export const ATTEMPT_ID_LENGTH = 16;

/** RFC 8489 §14.8 and §15: error codes on the wire (separate from exception codes). */
export const StunErrorCode = {
  TryAlternate: 300,
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  /** nattrav: the looked-up URI is not registered. */
  NotFound: 404,
  UnknownAttribute: 420,
  StaleNonce: 438,
  /** RFC 6585 §4 (borrowed from HTTP): a rate or count limit of the broker refused the request; retry later. */
  TooManyRequests: 429,
  /** nattrav: the recipient did not answer the connection request. */
  RecipientUnreachable: 480,
  /** nattrav: the URI is held by another live instance (process) of the same key; TAKEOVER takes it. */
  HeldByInstance: 409,
  /** nattrav: a Connect with FAMILY-ONLY found the recipient registered in the other address family only. */
  NoRegistrationInFamily: 476,
  ServerError: 500,
} as const;

/** RFC 5780 §7.2: CHANGE-REQUEST flag bits. */
export const ChangeRequestFlag = {
  ChangeIp: 0x04,
  ChangePort: 0x02,
} as const;

/** RFC 8489 §14.1: address family values in (XOR-)MAPPED-ADDRESS. */
export const AddressFamily = {
  IPv4: 0x01,
  IPv6: 0x02,
} as const;

/** RFC 8489 §14: attribute types below this are comprehension-required; from it up, comprehension-optional. */
export const COMPREHENSION_OPTIONAL_MIN = 0x8000;
/** RFC 8489 §14.7: the FINGERPRINT value is a 32-bit CRC. */
export const FINGERPRINT_LENGTH = 4;
/** RFC 8489 §14.6: a truncated MESSAGE-INTEGRITY-SHA256 is at least 16 bytes (and a multiple of 4). */
export const MESSAGE_INTEGRITY_SHA256_MIN_LENGTH = 16;
/** RFC 8489 §14.3: USERNAME is at most 513 bytes. */
export const MAX_USERNAME_BYTES = 513;
/** RFC 8489 §14.9: REALM is fewer than 128 characters (at most 763 bytes). */
export const MAX_REALM_BYTES = 763;
/** RFC 8489 §14.10: NONCE is fewer than 128 characters (at most 763 bytes). */
export const MAX_NONCE_BYTES = 763;
/** RFC 8489 §14.8: the smallest ERROR-CODE (class 3, number 0). */
export const MIN_ERROR_CODE = 300;
/** RFC 8489 §14.8: the largest ERROR-CODE (class 6, number 99). */
export const MAX_ERROR_CODE = 699;
/** RFC 8489 §5: methods are 12 bits. */
export const MAX_METHOD = 0xfff;
/** nattrav: at most this many PRIVATE-ENDPOINT (or PEER-PRIVATE-ENDPOINT) attributes in one message. */
export const MAX_PRIVATE_ENDPOINTS = 16;

/** Bytes of a MAPPING-KEY. */
export const MAPPING_KEY_LENGTH = 32;
