/**
 * UPnP IGD, pure parts and the client: the SSDP exchange and the device descriptions recorded
 * from the real miniupnpd 2.3.1 (IGDv2 and, with force_igd_desc_v1, IGDv1), its SOAP answers
 * and faults, the XML reader's limits, and UpnpClient against a loopback IGD that answers like
 * miniupnpd (AddAnyPortMapping, GetSpecificPortMappingEntry, DeletePortMapping, error 725).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { isNattravError } from '../../src/errors.js';
import { encodeMSearch, parseIgdDescription, parseSsdpAnswer } from '../../src/portmap/igd.js';
import { UpnpActionError, decodeSoapResponse, encodeSoapRequest, soapActionHeader } from '../../src/portmap/soap.js';
import { UPNP_HTTP_TIMEOUT_MS, UpnpClient } from '../../src/portmap/upnp.js';
import { XML_MAX_DEPTH, childText, parseXml } from '../../src/portmap/xml.js';

const fixture = (name: string): string => readFileSync(new URL(`../../../test/fixtures/portmap/${name}`, import.meta.url), 'utf8');
const ssdp = JSON.parse(fixture('miniupnpd-2.3.1-ssdp.json')) as { request: string; from: string; answer: string };
const location = new URL('http://192.168.1.1:5000/rootDesc.xml');

describe('SSDP', () => {
  test('our M-SEARCH is the request miniupnpd answered in the capture', () => {
    assert.equal(encodeMSearch().toString('hex'), ssdp.request);
  });

  test('miniupnpd\'s answer gives the description URL', () => {
    const answer = parseSsdpAnswer(Buffer.from(ssdp.answer, 'hex'), ssdp.from);
    assert.equal(answer?.location.href, 'http://192.168.1.1:5000/rootDesc.xml');
    assert.equal(answer?.searchTarget, 'urn:schemas-upnp-org:device:InternetGatewayDevice:1');
    assert.match(answer?.server ?? '', /MiniUPnPd\/2\.3\.1/);
  });

  test('answers that point elsewhere, are not 200, not an IGD, not http, or too large are ignored', () => {
    const bytes = Buffer.from(ssdp.answer, 'hex');
    assert.equal(parseSsdpAnswer(bytes, '192.168.1.66'), undefined, 'LOCATION on another host than the sender');
    const text = bytes.toString('latin1');
    assert.equal(parseSsdpAnswer(Buffer.from(text.replace('200 OK', '404 Not Found'), 'latin1'), ssdp.from), undefined);
    assert.equal(parseSsdpAnswer(Buffer.from(text.replace(/ST: [^\r]*/, 'ST: upnp:rootdevice'), 'latin1'), ssdp.from), undefined);
    assert.equal(parseSsdpAnswer(Buffer.from(text.replace('http://', 'https://'), 'latin1'), ssdp.from), undefined);
    assert.equal(parseSsdpAnswer(Buffer.concat([bytes, Buffer.alloc(2048, 0x41)]), ssdp.from), undefined);
  });
});

describe('IGD device description', () => {
  test('miniupnpd IGDv2: WANIPConnection:2 and its control URL', () => {
    const service = parseIgdDescription(fixture('miniupnpd-2.3.1-rootDesc-igd2.xml'), location);
    assert.equal(service.serviceType, 'urn:schemas-upnp-org:service:WANIPConnection:2');
    assert.equal(service.controlUrl.href, 'http://192.168.1.1:5000/ctl/IPConn');
    assert.equal(service.v2, true);
  });

  test('miniupnpd IGDv1: WANIPConnection:1', () => {
    const service = parseIgdDescription(fixture('miniupnpd-2.3.1-rootDesc-igd1.xml'), location);
    assert.equal(service.serviceType, 'urn:schemas-upnp-org:service:WANIPConnection:1');
    assert.equal(service.v2, false);
  });

  const describeWith = (services: string, urlBase = ''): string =>
    `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">${urlBase}<device><deviceList><device><serviceList>${services}</serviceList></device></deviceList></device></root>`;

  test('WANPPPConnection:1 when that is all there is; URLBase is honoured', () => {
    const service = parseIgdDescription(
      describeWith('<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>ctl/PPP</controlURL></service>', '<URLBase>http://192.168.1.1:5000/base/</URLBase>'),
      location,
    );
    assert.equal(service.serviceType, 'urn:schemas-upnp-org:service:WANPPPConnection:1');
    assert.equal(service.controlUrl.href, 'http://192.168.1.1:5000/base/ctl/PPP');
  });

  test('a control URL on another host, or no WAN service, is refused', () => {
    assert.throws(
      () => parseIgdDescription(describeWith('<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>http://10.6.6.6/ctl</controlURL></service>'), location),
      (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /not http on the gateway 192\.168\.1\.1:5000/.test(err.message),
    );
    assert.throws(() => parseIgdDescription(describeWith(''), location), /no WANIPConnection:1\/2 or WANPPPConnection:1 service/);
    assert.throws(() => parseIgdDescription('<html></html>', location), /root element is <html>/);
  });
});

describe('XML reader', () => {
  test('entities, character references, CDATA, comments, prefixes and self-closing tags', () => {
    const root = parseXml('<?xml version="1.0"?><!-- c --><a:r xmlns:a="x"><b>1 &amp; 2 &lt;3&#x21;&#33;</b><c><![CDATA[<raw>]]></c><d/></a:r>');
    assert.equal(root.name, 'r');
    assert.equal(childText(root, 'b'), '1 & 2 <3!!');
    assert.equal(childText(root, 'c'), '<raw>');
    assert.equal(childText(root, 'd'), '');
  });

  test('refuses DOCTYPE (no entity expansion), bad nesting, unknown entities, too deep or too large input', () => {
    assert.throws(() => parseXml('<!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>'), /DOCTYPE/);
    assert.throws(() => parseXml('<r><a></r>'), /closes <r> but <a> is open/);
    assert.throws(() => parseXml('<r>&bogus;</r>'), /unknown entity/);
    assert.throws(() => parseXml('<r><a>'), /still open/);
    assert.throws(() => parseXml('<r/><s/>'), /more than one root/);
    assert.throws(() => parseXml('<a>'.repeat(XML_MAX_DEPTH + 1)), /nests deeper than 32/);
    assert.throws(() => parseXml(`<r>${'x'.repeat(70_000)}</r>`), /larger than 65536 bytes/);
    assert.throws(() => parseXml('<r>&#0;</r>'), /invalid character reference/);
    assert.throws(() => parseXml('<r>a & b</r>'), /bare &/);
  });
});

describe('SOAP', () => {
  const T2 = 'urn:schemas-upnp-org:service:WANIPConnection:2';

  test('the envelope of an action, values escaped', () => {
    assert.equal(
      encodeSoapRequest(T2, 'DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', 4005], ['NewProtocol', 'TCP']]),
      '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:DeletePortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"><NewRemoteHost></NewRemoteHost><NewExternalPort>4005</NewExternalPort><NewProtocol>TCP</NewProtocol></u:DeletePortMapping></s:Body></s:Envelope>\r\n',
    );
    assert.match(encodeSoapRequest(T2, 'X', [['D', 'a<b>&"c\'']]), /<D>a&lt;b&gt;&amp;&quot;c&apos;<\/D>/);
    assert.equal(soapActionHeader(T2, 'AddAnyPortMapping'), '"urn:schemas-upnp-org:service:WANIPConnection:2#AddAnyPortMapping"');
  });

  test('miniupnpd\'s answers decode to their output arguments', () => {
    assert.deepEqual(decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd2-GetExternalIPAddress.xml'), 'GetExternalIPAddress'), { NewExternalIPAddress: '203.0.113.10' });
    assert.deepEqual(decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd2-AddAnyPortMapping.xml'), 'AddAnyPortMapping'), { NewReservedPort: '4005' });
    assert.deepEqual(decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd2-GetSpecificPortMappingEntry.xml'), 'GetSpecificPortMappingEntry'), {
      NewInternalPort: '4005',
      NewInternalClient: '192.168.1.2',
      NewEnabled: '1',
      NewPortMappingDescription: 'nattrav',
      NewLeaseDuration: '60',
    });
    assert.deepEqual(decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd2-DeletePortMapping.xml'), 'DeletePortMapping'), {});
    assert.deepEqual(decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd1-AddPortMapping.xml'), 'AddPortMapping'), {});
  });

  test('miniupnpd\'s faults are UpnpActionError with the UPnP error code', () => {
    assert.throws(
      () => decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd2-fault-714.xml'), 'GetSpecificPortMappingEntry'),
      (err: unknown) => err instanceof UpnpActionError && err.upnpCode === 714 && err.code === 'ERR_PORTMAP' && /error 714 \(NoSuchEntryInArray\)/.test(err.message),
    );
    assert.throws(() => decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd1-fault-718.xml'), 'AddPortMapping'), (err: unknown) => err instanceof UpnpActionError && err.upnpCode === 718);
    assert.throws(() => decodeSoapResponse('<r/>', 'AddPortMapping'), /not a SOAP envelope/);
    assert.throws(() => decodeSoapResponse(fixture('miniupnpd-2.3.1-soap-igd2-GetExternalIPAddress.xml'), 'AddPortMapping'), /has no AddPortMappingResponse/);
  });
});

/** A loopback IGD that keeps a mapping table and answers like miniupnpd. */
class FakeIgd {
  readonly server: Server;
  readonly actions: string[] = [];
  readonly table = new Map<string, { client: string; port: string; lease: string }>();
  description = fixture('miniupnpd-2.3.1-rootDesc-igd2.xml');
  serviceType = 'urn:schemas-upnp-org:service:WANIPConnection:2';
  permanentOnly = false;
  /** External ports taken by someone else: AddPortMapping answers 718. */
  readonly taken = new Set<string>();
  /** When set, requests are never answered (a gateway that hangs). */
  silent = false;

  constructor() {
    this.server = createServer((req, res) => {
      if (this.silent) return;
      void this.#answer(req).then(([status, body]) => {
        res.writeHead(status, { 'content-type': 'text/xml' });
        res.end(body);
      });
    });
  }

  async #answer(req: IncomingMessage): Promise<[number, string]> {
    if (req.method === 'GET') return [200, this.description];
    let body = '';
    for await (const chunk of req) body += String(chunk);
    const action = /#(\w+)"/.exec(String(req.headers.soapaction))?.[1] ?? '';
    this.actions.push(action);
    const arg = (name: string): string => new RegExp(`<${name}>([^<]*)</${name}>`).exec(body)?.[1] ?? '';
    const key = `${arg('NewProtocol')}/${arg('NewExternalPort')}`;
    const ok = (out: string): [number, string] => [200, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:${action}Response xmlns:u="${this.serviceType}">${out}</u:${action}Response></s:Body></s:Envelope>`];
    const fault = (code: number, text: string): [number, string] => [500, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode><errorDescription>${text}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`];
    switch (action) {
      case 'GetExternalIPAddress':
        return ok('<NewExternalIPAddress>203.0.113.10</NewExternalIPAddress>');
      case 'AddAnyPortMapping':
      case 'AddPortMapping':
        if (this.permanentOnly && arg('NewLeaseDuration') !== '0') return fault(725, 'OnlyPermanentLeasesSupported');
        if (this.taken.has(key)) return fault(718, 'ConflictInMappingEntry');
        this.table.set(key, { client: arg('NewInternalClient'), port: arg('NewInternalPort'), lease: arg('NewLeaseDuration') });
        return ok(action === 'AddAnyPortMapping' ? `<NewReservedPort>${arg('NewExternalPort')}</NewReservedPort>` : '');
      case 'GetSpecificPortMappingEntry': {
        const entry = this.table.get(key);
        if (entry === undefined) return fault(714, 'NoSuchEntryInArray');
        return ok(`<NewInternalPort>${entry.port}</NewInternalPort><NewInternalClient>${entry.client}</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>nattrav</NewPortMappingDescription><NewLeaseDuration>${entry.lease}</NewLeaseDuration>`);
      }
      case 'DeletePortMapping':
        if (!this.table.delete(key)) return fault(714, 'NoSuchEntryInArray');
        return ok('');
      default:
        return fault(401, 'Invalid Action');
    }
  }

  get location(): URL {
    return new URL(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}/rootDesc.xml`);
  }
}

describe('UpnpClient against a loopback IGD', () => {
  const igd = new FakeIgd();
  before(() => new Promise<void>((resolve) => igd.server.listen(0, '127.0.0.1', resolve)));
  after(() => new Promise<void>((resolve) => igd.server.close(() => resolve())));

  const request = { transport: 'tcp' as const, internalPort: 4100, suggestedExternalPort: 0, lifetimeSeconds: 60 };

  test('IGDv2: AddAnyPortMapping, the entry is found, deleted, then reported missing', async () => {
    const client = await UpnpClient.open(igd.location);
    assert.equal(client.service.v2, true);
    assert.equal(await client.externalAddress(), '203.0.113.10');
    const granted = await client.add(request, undefined);
    assert.deepEqual(granted, { externalAddress: '203.0.113.10', externalPort: 4100, lifetimeSeconds: 60, gatewayReset: false });
    assert.deepEqual(igd.table.get('TCP/4100'), { client: '127.0.0.1', port: '4100', lease: '60' });
    assert.equal(await client.exists(request, granted), true);
    await client.remove(request, granted);
    assert.equal(await client.exists(request, granted), false);
    // Deleting what is gone already is not an error (714 is taken as done).
    await client.remove(request, granted);
    assert.deepEqual(igd.actions.slice(-6), ['GetExternalIPAddress', 'AddAnyPortMapping', 'GetSpecificPortMappingEntry', 'DeletePortMapping', 'GetSpecificPortMappingEntry', 'DeletePortMapping']);
  });

  test('IGDv1 that takes only permanent leases (725): AddPortMapping again with lease 0', async () => {
    igd.description = fixture('miniupnpd-2.3.1-rootDesc-igd1.xml');
    igd.serviceType = 'urn:schemas-upnp-org:service:WANIPConnection:1';
    igd.permanentOnly = true;
    const client = await UpnpClient.open(igd.location);
    assert.equal(client.service.v2, false);
    const granted = await client.add({ ...request, internalPort: 4101 }, undefined);
    assert.equal(granted.lifetimeSeconds, 0);
    assert.equal(igd.table.get('TCP/4101')?.lease, '0');
    assert.deepEqual(igd.actions.slice(-3), ['GetExternalIPAddress', 'AddPortMapping', 'AddPortMapping']);
  });

  test('IGDv1 conflict (718): another external port is tried; an entry for another client does not count as ours', async () => {
    igd.permanentOnly = false;
    igd.taken.add('TCP/4102');
    const client = await UpnpClient.open(igd.location);
    const request4102 = { ...request, internalPort: 4102 };
    const granted = await client.add(request4102, undefined);
    assert.notEqual(granted.externalPort, 4102);
    assert.ok(granted.externalPort >= 1024, `port ${granted.externalPort}`);
    assert.equal(igd.table.get(`TCP/${granted.externalPort}`)?.port, '4102');
    igd.table.set(`TCP/${granted.externalPort}`, { client: '192.168.1.77', port: '4102', lease: '60' });
    assert.equal(await client.exists(request4102, granted), false, 'the gateway now forwards that port to someone else');
  });

  test('a gateway that never answers an action: ERR_TIMEOUT naming the action, after the HTTP limit', async () => {
    const client = await UpnpClient.open(igd.location);
    igd.silent = true;
    const started = performance.now();
    try {
      await assert.rejects(client.externalAddress(), (err: unknown) => isNattravError(err, 'ERR_TIMEOUT') && /while calling GetExternalIPAddress on 127\.0\.0\.1/.test(err.message));
    } finally {
      igd.silent = false;
    }
    assert.ok(performance.now() - started < UPNP_HTTP_TIMEOUT_MS + 1_000);
  });

  test('an answer larger than the XML limit is cut off: ERR_PORTMAP', async () => {
    igd.description = `<root>${'<x/>'.repeat(20_000)}</root>`;
    await assert.rejects(UpnpClient.open(igd.location), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /larger than 65536 bytes/.test(err.message));
  });

  test('a description that is not XML is ERR_PORTMAP', async () => {
    igd.description = 'not xml <';
    await assert.rejects(UpnpClient.open(igd.location), (err: unknown) => isNattravError(err, 'ERR_PORTMAP') && /XML/.test(err.message));
  });
});
