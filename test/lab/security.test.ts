/**
 * Issue "Security" in the real-kernel lab: a broker with its own CA and
 * certificate, peers with CA-issued identities that authenticate the broker,
 * and TLS 1.3 between the peers over a direct and over a relayed connection.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab } from '../../src/lab/lab.js';
import { runPair, startLabBroker, startLabRecipient, type LabBroker } from '../../src/lab/scenario.js';
import { labSupport } from '../../src/lab/support.js';
import { createCa, issueCertificate } from '../../src/security/ca.js';
import { saveIdentity } from '../../src/security/identity.js';
import { requireLab } from './helpers.js';

describe('security in the lab: authenticated broker, TLS between peers', () => {
  let lab: Lab | undefined;
  let broker: LabBroker;
  let dir: string;
  const files: Record<string, string> = {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nattrav-lab-sec-'));
    if (!(await labSupport()).ok) return;
    const ca = await createCa({ name: 'lab CA' });
    files.ca = join(dir, 'ca.pem');
    await writeFile(files.ca, ca.certPem);
    const brokerId = await issueCertificate({ ca, uri: 'nattrav-broker://lab' });
    files.brokerCert = join(dir, 'broker-cert.pem');
    files.brokerKey = join(dir, 'broker-key.pem');
    await writeFile(files.brokerCert, brokerId.certPem);
    await writeFile(files.brokerKey, brokerId.keyPem, { mode: 0o600 });
    for (const name of ['alice', 'bob', 'carol', 'dave']) {
      const issued = await issueCertificate({ ca, uri: `nattrav://${name}` });
      files[name] = join(dir, name);
      await saveIdentity(files[name] as string, { uri: `nattrav://${name}`, keyPem: issued.keyPem, certPem: issued.certPem, ca: [ca.certPem] });
    }
    lab = await Lab.create({
      sites: [
        { name: 'a', nat: 'port-restricted' },
        { name: 'b', nat: 'port-restricted' },
        { name: 'c', nat: 'symmetric' },
        { name: 'd', nat: 'symmetric' },
      ],
    });
    broker = await startLabBroker(lab, ['--ca', files.ca, '--cert', files.brokerCert, '--key', files.brokerKey]);
  });
  after(async () => {
    await lab?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const peerArgs = (name: string): string[] => ['--tls', '--identity', files[name] as string, '--broker-ca', files.ca as string];

  test('TLS over a direct connection between two NATs, broker authenticated', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const recipient = await startLabRecipient(l, l.site('b').host, broker, 'nattrav://alice', false, peerArgs('alice'));
    const result = await runPair(l, broker, l.site('a').host, recipient, 'nattrav://alice', 65_536, peerArgs('bob'));
    assert.equal(result.connected.path, 'direct');
    assert.equal(result.connected.tls, true);
    assert.equal(result.connected.peerUri, 'nattrav://alice');
    assert.equal(result.accepted.peerUri, 'nattrav://bob');
    assert.ok(result.brokerBytesDuringTransfer < 4096, `broker saw ${result.brokerBytesDuringTransfer} bytes`);
  });

  test('TLS over a relayed connection (two random symmetric NATs)', async (t) => {
    if (!(await requireLab(t))) return;
    const l = lab as Lab;
    const recipient = await startLabRecipient(l, l.site('d').host, broker, 'nattrav://carol', false, peerArgs('carol'));
    const result = await runPair(l, broker, l.site('c').host, recipient, 'nattrav://carol', 65_536, peerArgs('dave'));
    assert.equal(result.connected.path, 'relay');
    assert.equal(result.connected.tls, true);
    assert.equal(result.connected.peerUri, 'nattrav://carol');
    assert.equal(result.accepted.peerUri, 'nattrav://dave');
    assert.ok(result.brokerBytesDuringTransfer > 2 * 65_536, 'the relay carried the (encrypted) payload');
  });
});
