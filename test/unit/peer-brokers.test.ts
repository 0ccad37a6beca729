/**
 * Several brokers on the peer side, without sockets: the `broker` option as one address or
 * a list, `--broker A,B,C`, a name with several addresses counting as several, the order a
 * recipient tries them in, and which JOIN-AT a relayed connection request may carry.
 */
import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { describe, test } from 'node:test';
import { ErrorCode, NattravError } from '../../src/errors.js';
import { BrokerList, parseBrokerList, resolveBrokers, toBrokerList, type BrokerTarget } from '../../src/peer/brokers.js';
import { ConnectionRequests } from '../../src/peer/connection-requests.js';
import { AttrType, Method } from '../../src/wire/constants.js';
import { StunMessage } from '../../src/wire/message.js';
import { addAttemptId, addJoinAt } from '../../src/wire/nattrav.js';
import type { TransportAddress } from '../../src/wire/types.js';

describe('the broker option', () => {
  test('one address or a list, in order; the default port is 3478', () => {
    assert.deepEqual(toBrokerList('b.example'), [{ host: 'b.example', port: 3478 }]);
    assert.deepEqual(toBrokerList(['10.0.0.1:1', { host: '10.0.0.2', port: 2 }]), [
      { host: '10.0.0.1', port: 1 },
      { host: '10.0.0.2', port: 2 },
    ]);
    assert.deepEqual(parseBrokerList('10.0.0.1:1, 10.0.0.2:2,b.example'), [
      { host: '10.0.0.1', port: 1 },
      { host: '10.0.0.2', port: 2 },
      { host: 'b.example', port: 3478 },
    ]);
  });

  test('a bare IPv6 address is a host with the default port; HOST:PORT splits at its one colon', () => {
    assert.deepEqual(toBrokerList('::1'), [{ host: '::1', port: 3478 }]);
    assert.deepEqual(toBrokerList('fe80::1:2'), [{ host: 'fe80::1:2', port: 3478 }]);
    assert.deepEqual(toBrokerList('[::1]:4000'), [{ host: '::1', port: 4000 }]);
    assert.deepEqual(toBrokerList('127.0.0.1:4000'), [{ host: '127.0.0.1', port: 4000 }]);
    assert.deepEqual(toBrokerList('b.example:4000'), [{ host: 'b.example', port: 4000 }]);
  });

  test('bad input names the entry and says what to pass', () => {
    assert.throws(() => toBrokerList([]), /broker: expected at least one broker address/);
    assert.throws(() => toBrokerList(Array.from({ length: 33 }, () => '10.0.0.1:1')), /at most 32 brokers/);
    assert.throws(() => toBrokerList(['10.0.0.1:1', '10.0.0.2:99999']), /broker\[1\]/);
    assert.throws(() => parseBrokerList('10.0.0.1:1,,10.0.0.2:2', '--broker'), /--broker: an empty entry in "10.0.0.1:1,,10.0.0.2:2"/);
    assert.throws(() => toBrokerList(undefined), /expected a broker address/);
  });

  // Only localhost (the hosts file) and IP literals: a test sends no DNS query off this machine.
  test('a name counts once per address it resolves to, an address listed twice once', async () => {
    const addresses = new Set((await lookup('localhost', { all: true })).map((a) => a.address));
    const targets = await resolveBrokers([{ host: 'localhost', port: 3478 }, { host: '127.0.0.1', port: 3478 }, { host: '127.0.0.1', port: 3478 }]);
    const fromName = targets.filter((t) => t.name.host === 'localhost');
    assert.deepEqual(new Set(fromName.map((t) => t.address.address)), addresses);
    assert.equal(targets.length, new Set(targets.map((t) => `${t.address.address}:${t.address.port}`)).size, 'no address twice');
    assert.deepEqual(targets.slice(fromName.length).map((t) => t.name.host), addresses.has('127.0.0.1') ? [] : ['127.0.0.1']);
  });
});

const unreachable = (): NattravError => new NattravError(ErrorCode.BrokerUnreachable, 'broker unreachable: no answer');
const passes = (err: unknown): boolean => err instanceof NattravError && err.code === ErrorCode.BrokerUnreachable;

describe('a recipient\'s sweep over its brokers', () => {
  const list = (): BrokerList => new BrokerList(['10.0.0.1', '10.0.0.2', '10.0.0.3'].map((host) => ({ host, port: 3478 })));

  test('the first sweep starts at the first broker; a later one at the broker after the one in use', async () => {
    const brokers = list();
    const tried: string[] = [];
    const answerFrom = (host: string) => async (target: BrokerTarget): Promise<string> => {
      tried.push(target.address.address);
      if (target.address.address !== host) throw unreachable();
      return host;
    };
    assert.equal(await brokers.firstAnswering(answerFrom('10.0.0.2'), passes), '10.0.0.2');
    assert.deepEqual(tried.splice(0), ['10.0.0.1', '10.0.0.2']);
    assert.equal(brokers.current?.address.address, '10.0.0.2');
    assert.equal(await brokers.firstAnswering(answerFrom('10.0.0.2'), passes), '10.0.0.2');
    assert.deepEqual(tried.splice(0), ['10.0.0.3', '10.0.0.1', '10.0.0.2'], 'the broker in use is tried last');
  });

  test('only an unanswered broker passes the turn on; the last failure says how many were tried', async () => {
    const brokers = list();
    const refused = new NattravError(ErrorCode.Forbidden, 'nattrav://x is registered by another key');
    let calls = 0;
    await assert.rejects(brokers.firstAnswering(async () => { calls++; throw refused; }, passes), (err) => err === refused);
    assert.equal(calls, 1, 'a refusal is the cluster\'s answer: no other broker is asked');
    await assert.rejects(brokers.firstAnswering(async () => { throw unreachable(); }, passes), /no answer \(tried 3 of 3 brokers\)/);
  });

  test('JOIN-AT may name one of our brokers only, unless a broker CA checks whoever it names', async () => {
    const brokers = list();
    await brokers.firstAnswering(async (t) => t, passes);
    const ours: TransportAddress = { family: 'IPv4', address: '10.0.0.3', port: 3478 };
    const theirs: TransportAddress = { family: 'IPv4', address: '10.0.0.3', port: 3479 };
    assert.equal(brokers.joinAtRefusal(undefined, undefined), undefined);
    assert.equal(brokers.joinAtRefusal(ours, undefined), undefined);
    assert.equal(brokers.joinAtRefusal(theirs, undefined), 'JOIN-AT 10.0.0.3:3479 is not one of our brokers');
    assert.equal(brokers.joinAtRefusal(theirs, '-----BEGIN CERTIFICATE-----'), undefined);
  });
});

describe('JOIN-AT in the recipient\'s book of connection requests', () => {
  test('passed to admit and returned with the decision; a malformed one is ignored (no answer)', () => {
    const requests = new ConnectionRequests();
    const request = StunMessage.request(Method.ConnectionRequest);
    addAttemptId(request, new Uint8Array(16).fill(1));
    const at: TransportAddress = { family: 'IPv4', address: '198.51.100.7', port: 3478 };
    addJoinAt(request, at);
    const seen: Array<TransportAddress | undefined> = [];
    const answers: StunMessage[] = [];
    const decision = requests.handle(request, undefined, (_id, joinAt) => (seen.push(joinAt), undefined), (response) => answers.push(response));
    assert.deepEqual(seen, [at]);
    assert.deepEqual(decision?.joinAt, at);
    assert.equal(answers.length, 1);
    const malformed = StunMessage.request(Method.ConnectionRequest);
    addAttemptId(malformed, new Uint8Array(16).fill(2));
    malformed.add(AttrType.JoinAt, new Uint8Array([0, 1, 2]));
    assert.equal(requests.handle(malformed, undefined, () => undefined, (response) => answers.push(response)), undefined);
    assert.equal(answers.length, 1, 'not answered');
  });
});
