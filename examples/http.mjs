#!/usr/bin/env node
// HTTP over nattrav: an http.Server fed by nattrav's createServer, and
// http.request({ createConnection }) on the other side. Every request travels over
// its own peer-to-peer connection, TLS 1.3 end to end (nattrav's default).
//
// Run it as it is: it starts a broker on loopback and both peers in this process.
// Against a real broker, set NATTRAV_BROKER=HOST:PORT and run the two halves on two
// machines (node examples/http.mjs serve / node examples/http.mjs get URI).
import http from 'node:http';
import { connect, createBroker, createServer, newSelfCertifyingIdentity } from 'nattrav';

const mode = process.argv[2] ?? 'demo';

/** The recipient: registers a self-certifying URI and hands each connection to an HTTP server. */
async function serve(broker) {
  const web = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      res.setHeader('content-type', 'text/plain');
      res.end(`${req.method} ${req.url} from ${req.socket.nattrav?.peerUri ?? 'unknown'}${body ? `: ${body}` : ''}\n`);
    });
  });
  // A self-certifying URI (nattrav://k-...): initiators check our key against the URI itself.
  // Its key is kept in ~/.nattrav/keys.
  const identity = await newSelfCertifyingIdentity();
  const peer = createServer({ broker, uri: identity.uri, identity }, (socket) => web.emit('connection', socket));
  peer.listen();
  await new Promise((resolve, reject) => {
    peer.once('listening', resolve);
    peer.once('error', reject);
  });
  return { uri: identity.uri, close: () => { peer.close(); web.close(); } };
}

/** One HTTP request to `uri` over a fresh nattrav connection. */
function get(broker, uri, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        method: body === undefined ? 'GET' : 'POST',
        path,
        // The host header names the URI; nattrav dials by URI, not by host name.
        headers: { host: new URL(uri).host },
        createConnection: (_options, callback) => {
          connect({ broker, uri }).then((socket) => callback(null, socket), callback);
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

if (mode === 'serve') {
  const { uri } = await serve(process.env.NATTRAV_BROKER ?? 'localhost:3478');
  console.log(uri);
} else if (mode === 'get') {
  const uri = process.argv[3];
  if (uri === undefined) throw new Error('usage: node examples/http.mjs get URI');
  const { status, text } = await get(process.env.NATTRAV_BROKER ?? 'localhost:3478', uri, '/');
  process.stdout.write(`${status} ${text}`);
} else {
  // Everything in one process, on loopback.
  const brokerServer = createBroker({ host: '127.0.0.1', port: 0 });
  const { port } = await brokerServer.listen();
  const broker = `127.0.0.1:${port}`;
  const service = await serve(broker);
  try {
    const first = await get(broker, service.uri, '/hello');
    const second = await get(broker, service.uri, '/upload', 'some bytes');
    process.stdout.write(`${first.status} ${first.text}${second.status} ${second.text}`);
  } finally {
    service.close();
    await brokerServer.close();
  }
}
