/** Plain data types shared by the STUN codec. */

/** The address family of a {@link TransportAddress}, as Node names it (`net.SocketAddress.family` upper-cased). */
export type AddressFamilyName = 'IPv4' | 'IPv6';

/** An IP address and port, as carried by (XOR-)MAPPED-ADDRESS and nattrav's endpoint attributes. */
export interface TransportAddress {
  /** `'IPv4'` or `'IPv6'`; must match {@link TransportAddress.address}. */
  family: AddressFamilyName;
  /** Dotted quad for IPv4; Node's canonical compressed lowercase form for IPv6 (as decoded). */
  address: string;
  /** 0-65535. */
  port: number;
}

/** One STUN attribute: its 16-bit type and its value bytes (without padding). */
export interface StunAttribute {
  /** The 16-bit attribute type (see `AttrType`). */
  type: number;
  /** The value, without the padding to a multiple of 4 bytes. */
  value: Uint8Array;
}
