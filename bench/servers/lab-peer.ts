/**
 * The peers of the lab benchmark, run inside the lab's namespaces (bench/lab-run.ts). One
 * JSON argument says what to be; every result is one JSON line on stdout:
 * - `{"mode":"recipient","broker":B,"uri":U,"keyDir":D[,"tls":true]}`: createServer (plain TCP, or TLS); prints
 *   `{"event":"listening"}`, then `{"event":"received","bytes":N,"ms":T}` for each connection
 *   that carried bytes (T: first byte to end).
 * - `{"mode":"sink","port":P}`: a plain TCP server on 0.0.0.0:P, the same lines.
 * - `{"mode":"setup","broker":B,"uri":U,"count":N[,"tls":true]}`: N connect() calls in a row; prints
 *   `{"event":"setups","ms":[...],"paths":[...],"tlsMs":[...],"families":[4|6,...]}` (tlsMs: the TLS handshakes, with TLS).
 * A broker B is one address or a list (e.g. one broker's IPv4 and IPv6 addresses).
 * - `{"mode":"send","broker":B,"uri":U,"bytes":N}` / `{"mode":"tcp-send","host":H,"port":P,"bytes":N}`:
 *   one connection, N bytes, then `{"event":"sent"}`.
 */
import { createServer as createTcpServer, connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { connect } from '../../src/peer/connect.js';
import { createServer } from '../../src/peer/server.js';
import { sendBytes } from '../lib/transfer.js';

/** What lab-run passes. */
export type LabPeerConfig =
  | { mode: 'recipient'; broker: string | readonly string[]; uri: string; keyDir: string; tls?: boolean }
  | { mode: 'sink'; port: number }
  | { mode: 'setup'; broker: string | readonly string[]; uri: string; count: number; tls?: boolean }
  | { mode: 'send'; broker: string; uri: string; bytes: number }
  | { mode: 'tcp-send'; host: string; port: number; bytes: number };

/** Pause between two timed connects, so one attempt's teardown does not overlap the next. */
const BETWEEN_SETUPS_MS = 100;

const print = (value: object): void => console.log(JSON.stringify(value));

function count(socket: Socket): void {
  let bytes = 0;
  let first = 0;
  socket.on('data', (chunk: Buffer) => {
    if (bytes === 0) first = performance.now();
    bytes += chunk.length;
  });
  socket.on('error', () => undefined);
  socket.on('end', () => {
    if (bytes > 0) print({ event: 'received', bytes, ms: performance.now() - first });
    socket.end();
  });
}

const config = JSON.parse(process.argv[2] ?? '{}') as LabPeerConfig;
switch (config.mode) {
  case 'recipient': {
    const server = createServer({ broker: config.broker, uri: config.uri, tls: config.tls === true, keyDir: config.keyDir }, count);
    server.once('listening', () => print({ event: 'listening' }));
    server.listen();
    break;
  }
  case 'sink': {
    const server = createTcpServer(count);
    server.listen(config.port, '0.0.0.0', () => print({ event: 'listening' }));
    break;
  }
  case 'setup': {
    const ms: number[] = [];
    const paths: string[] = [];
    const tlsMs: number[] = [];
    const families: number[] = [];
    for (let i = 0; i < config.count; i++) {
      const started = performance.now();
      const socket = await connect({ broker: config.broker, uri: config.uri, tls: config.tls === true, knownKeysFile: false });
      ms.push(performance.now() - started);
      paths.push(socket.nattrav.path);
      if (socket.nattrav.tlsMs !== undefined) tlsMs.push(socket.nattrav.tlsMs);
      families.push(socket.nattrav.remote.family === 'IPv6' ? 6 : 4);
      socket.destroy();
      await new Promise((resolve) => setTimeout(resolve, BETWEEN_SETUPS_MS));
    }
    print({ event: 'setups', ms, paths, tlsMs, families });
    process.exit(0);
    break;
  }
  case 'send': {
    const socket = await connect({ broker: config.broker, uri: config.uri, tls: false, knownKeysFile: false });
    await sendBytes(socket, config.bytes);
    await new Promise((resolve) => socket.once('close', resolve));
    print({ event: 'sent', path: socket.nattrav.path });
    process.exit(0);
    break;
  }
  case 'tcp-send': {
    const socket = netConnect({ host: config.host, port: config.port });
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    await sendBytes(socket, config.bytes);
    await new Promise((resolve) => socket.once('close', resolve));
    print({ event: 'sent' });
    process.exit(0);
    break;
  }
  default:
    console.error(`lab-peer: unknown mode in ${process.argv[2] ?? '(nothing)'}`);
    process.exit(2);
}
