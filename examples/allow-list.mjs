#!/usr/bin/env node
// A TLS-authenticated service with an allow-list: the service nattrav://vault holds a
// certificate from our own CA, and serves only initiators that prove the identity
// nattrav://ops in the mutual TLS handshake. Anyone else (here: an initiator with a
// throwaway self-certifying identity) is refused with ERR_NOT_ALLOWED and a reason.
//
// Run it as it is: a broker on loopback, the CA, the service and both initiators in
// this process. With files instead: `nattrav ca init`, `nattrav ca issue`, then
// `nattrav listen nattrav://vault --identity DIR --ca CA.pem --allow nattrav://ops`.
import { connect, createBroker, createCa, createServer, issueCertificate } from 'nattrav';

const brokerServer = createBroker({ host: '127.0.0.1', port: 0 });
const { port } = await brokerServer.listen();
const broker = `127.0.0.1:${port}`;

// Our CA vouches for the names: the service's and the one client allowed in.
const ca = await createCa({ name: 'example CA' });
const identityOf = async (uri) => {
  const issued = await issueCertificate({ ca, uri });
  return { uri, keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] };
};

const service = createServer(
  { broker, uri: 'nattrav://vault', identity: await identityOf('nattrav://vault'), allow: ['nattrav://ops'] },
  (socket) => socket.end(`hello ${socket.nattrav.peerUri}, this is ${socket.nattrav.uri}\n`),
);
service.on('connectionRejected', (rejection) => console.error(`vault refused ${rejection.peerUri}: ${rejection.reason}`));
service.listen();
await new Promise((resolve, reject) => {
  service.once('listening', resolve);
  service.once('error', reject);
});

try {
  // The allowed client proves nattrav://ops with a certificate from the CA, and checks the vault's.
  const ops = await connect({ broker, uri: 'nattrav://vault', tls: { identity: await identityOf('nattrav://ops'), ca: [ca.certPem] } });
  let greeting = '';
  for await (const chunk of ops) greeting += chunk;
  process.stdout.write(`ops: ${greeting}`);

  // Anyone else is refused, and told why.
  try {
    const stranger = await connect({ broker, uri: 'nattrav://vault', tls: { ca: [ca.certPem] } });
    stranger.destroy();
    throw new Error('the stranger got in');
  } catch (err) {
    if (err.code !== 'ERR_NOT_ALLOWED') throw err;
    process.stdout.write(`stranger: ${err.code}: ${err.message}\n`);
  }
} finally {
  service.close();
  await brokerServer.close();
}
