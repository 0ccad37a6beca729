/**
 * The broker's WebSocket listeners, for networks that pass only the web (ws on
 * e.g. port 80, wss with the broker's certificate on e.g. 443). A WebSocket
 * carries exactly what a broker TCP connection carries (STUN framing over a byte
 * stream: Binding, exchanges, relays, control connections): each one is turned
 * into a stream that looks like the TCP socket under it and handed to the TCP
 * service (tcp.ts), so every cap, deadline and per-source limit applies the same,
 * by the remote address of the TCP connection carrying the WebSocket.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { checkPort } from '../common/endpoint.js';
import { webSocketAsSocket } from '../common/websocket-stream.js';
import { WS_MAX_PAYLOAD } from '../common/websocket-limits.js';
import { ErrorCode, NattravError } from '../errors.js';

export { WS_MAX_PAYLOAD };

/** TLS on wss: 1.3 only, like the broker's STARTTLS. */
const TLS_VERSION = 'TLSv1.3';

/** How long the HTTP upgrade request may take from the accept, in ms (like a first message). */
const UPGRADE_TIMEOUT_MS = 10_000;

/** One WebSocket listener of the broker (option `webSockets`). */
export interface WebSocketListen {
  /** Address to bind. */
  readonly host: string;
  /** TCP port (0 picks a free one). */
  readonly port: number;
  /** wss (TLS with the broker's `cert`/`key`) or plain ws. @default true when the broker has a certificate */
  readonly tls?: boolean;
}

/** A bound WebSocket listener. */
export interface WebSocketEndpoint {
  readonly address: string;
  readonly port: number;
  /** wss (true) or ws. */
  readonly tls: boolean;
}

/** Checks the broker option `webSockets`; throws ERR_INVALID_ARGUMENT naming the entry and what was wrong. */
export function checkWebSocketListens(value: unknown, hasCertificate: boolean): readonly WebSocketListen[] {
  if (!Array.isArray(value)) {
    throw new NattravError(ErrorCode.InvalidArgument, `broker option webSockets must be an array of { host, port, tls? }, got ${String(value)}`);
  }
  return value.map((entry: unknown, i) => {
    const listen = entry as Partial<WebSocketListen> | null;
    if (typeof listen !== 'object' || listen === null || typeof listen.host !== 'string' || listen.host === '') {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option webSockets[${i}] must have a host (an address to bind), got ${JSON.stringify(entry)}`);
    }
    checkPort(listen.port, `broker option webSockets[${i}].port`, true);
    if (listen.tls !== undefined && typeof listen.tls !== 'boolean') {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option webSockets[${i}].tls must be true or false, got ${String(listen.tls)}`);
    }
    const tls = listen.tls ?? hasCertificate;
    if (tls && !hasCertificate) {
      throw new NattravError(ErrorCode.InvalidArgument, `broker option webSockets[${i}] asks for wss (tls) but the broker has no cert and key`);
    }
    return { host: listen.host, port: listen.port as number, tls };
  });
}

/** What a listener needs: the broker's certificate for wss, and where accepted streams go. */
export interface WebSocketContext {
  readonly cert?: string;
  readonly key?: string;
  /** Serves an accepted WebSocket as if it were a TCP connection (tcp.ts `acceptStream`). */
  accept(socket: Socket): void;
  /** A listener's server failed after it was listening. */
  warn(message: string): void;
}

/** A listening WebSocket server; close() ends it and every connection not yet upgraded. */
export class WebSocketListener {
  readonly #server: HttpServer;
  readonly #wss: WebSocketServer;
  readonly endpoint: WebSocketEndpoint;

  private constructor(server: HttpServer, wss: WebSocketServer, endpoint: WebSocketEndpoint) {
    this.#server = server;
    this.#wss = wss;
    this.endpoint = endpoint;
  }

  /** Listens on `listen`; resolves once listening, rejects with the bind error. */
  static async open(listen: WebSocketListen, ctx: WebSocketContext): Promise<WebSocketListener> {
    const tls = listen.tls === true;
    const server = tls
      ? createHttpsServer({ cert: ctx.cert, key: ctx.key, minVersion: TLS_VERSION, maxVersion: TLS_VERSION })
      : createHttpServer();
    server.headersTimeout = UPGRADE_TIMEOUT_MS;
    server.requestTimeout = UPGRADE_TIMEOUT_MS;
    // Compression off: a small compressed message could inflate to a large one (zip bomb), and relayed bytes gain nothing.
    const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD, perMessageDeflate: false, clientTracking: false });
    server.on('request', (_request, response) => {
      response.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket', connection: 'close' });
      response.end('nattrav broker: WebSocket only\n');
    });
    server.on('upgrade', (request: IncomingMessage, raw: Socket, head: Buffer) => {
      raw.on('error', () => raw.destroy());
      // Not half-open, like the TCP server's sockets: an exchange ends both ways at the first end (the relay turns half-close on).
      wss.handleUpgrade(request, raw, head, (ws) => ctx.accept(webSocketAsSocket(ws, raw, false)));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: listen.host, port: listen.port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => ctx.warn(`WebSocket server on ${listen.host}:${listen.port}: ${err.message}`));
    const port = (server.address() as { port: number }).port;
    return new WebSocketListener(server, wss, { address: listen.host, port, tls });
  }

  /** Stops listening and drops connections still in their HTTP phase (upgraded ones belong to the TCP service). Never rejects. */
  async close(): Promise<void> {
    this.#wss.close();
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

/**
 * Opens every listener of `listens` in turn through `open` (the broker's state
 * check); on a failure closes those already open and rejects: ERR_ADDRESS_IN_USE
 * or ERR_INVALID_ARGUMENT naming the WebSocket address, or `open`'s own error.
 */
export async function openWebSocketListeners(
  listens: readonly WebSocketListen[],
  ctx: WebSocketContext,
  open: (opener: () => Promise<WebSocketListener>) => Promise<WebSocketListener>,
): Promise<WebSocketListener[]> {
  const opened: WebSocketListener[] = [];
  try {
    for (const listen of listens) opened.push(await open(() => WebSocketListener.open(listen, ctx)));
    return opened;
  } catch (err) {
    await Promise.all(opened.map((listener) => listener.close()));
    if (err instanceof NattravError) throw err;
    const code = (err as { code?: string }).code;
    const listen = listens[opened.length];
    const where = listen === undefined ? 'a WebSocket address' : `WebSocket ${listen.host}:${listen.port}`;
    const message = code === 'EADDRINUSE' ? `cannot listen on ${where}: the port is in use` : `cannot listen on ${where}: ${err instanceof Error ? err.message : String(err)}`;
    throw new NattravError(code === 'EADDRINUSE' ? ErrorCode.AddressInUse : ErrorCode.InvalidArgument, message, { cause: err });
  }
}
