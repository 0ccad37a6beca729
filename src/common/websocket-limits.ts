/**
 * The WebSocket transport's message limit, shared by the broker's listeners and the peer's
 * web dialer. A module of its own: the peer reads it without loading the broker's
 * WebSocket server, and the declarations of both sides without the `ws` types.
 */

/**
 * Largest WebSocket message accepted, in bytes. A peer writes each chunk of its
 * stream as one binary message; TLS records and socket reads stay far below this.
 */
export const WS_MAX_PAYLOAD = 256 * 1024;
