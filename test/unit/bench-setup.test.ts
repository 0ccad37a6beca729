/**
 * The per-strategy setup benchmark's pure parts: the floors (issue 13's numbers for the lab
 * with 25 ms one way per WAN link), the rows built from samples (quantiles, the count of
 * attempts off the planned path, the targets), and the capture reader of the timeline on
 * hand-written pcap bytes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setupFloor } from '../../bench/lib/floors.js';
import { describePacket, describePayload, readPcap } from '../../bench/lib/pcap.js';
import { buildTimeline, parseTimelineArgs, spliceTimeline, timelineMarkdown } from '../../bench/lib/timeline.js';
import { strategyFigures } from '../../bench/setup.js';

describe('setupFloor', () => {
  test('direct: 200 ms plain and 300 ms with TLS at 25 ms one way (the issue\'s numbers)', () => {
    const floor = setupFloor('direct', 25);
    assert.equal(floor.ms, 200);
    assert.equal(floor.tlsMs, 300);
    assert.equal(floor.crossings, 8);
  });

  test('each strategy\'s peer leg: reversal waits for the accept\'s ACK, lan crosses no delayed link, relay splices the connections that exist', () => {
    assert.deepEqual([setupFloor('reversal', 25).ms, setupFloor('reversal', 25).tlsMs], [250, 350]);
    assert.deepEqual([setupFloor('lan', 25).ms, setupFloor('lan', 25).tlsMs], [100, 100]);
    // The initiator's exchange and the recipient's standby spliced: the answer is the connection; TLS crosses both links each way.
    assert.deepEqual([setupFloor('relay', 10).ms, setupFloor('relay', 10).tlsMs], [40, 80]);
    assert.equal(setupFloor('public', 0).tlsMs, 0);
  });

  test('refuses a strategy without a floor and a bad delay, naming them', () => {
    assert.throws(() => setupFloor('socks5-bind', 25), /socks5-bind/);
    assert.throws(() => setupFloor('direct', -1), /delayMs/);
  });
});

describe('strategyFigures', () => {
  const sample = (traversalMs: number, setupMs: number, path = 'direct', attempts = 1) => ({ startedAt: 0, traversalMs, setupMs, path, attempts });

  test('p50/p99 of traversal and TLS-done against their floors, off-plan and failed attempts counted', () => {
    const setups = [sample(220, 330), sample(240, 360), sample(260, 400, 'relay', 2), { startedAt: 0, error: 'timed out' }];
    const rows = strategyFigures({ strategy: 'direct', pair: 'port-restricted -> port-restricted', setups }, 25);
    const byId = new Map(rows.map((r) => [r.id, r]));
    assert.equal(byId.get('setup.direct.traversal.p50')?.value, 240);
    assert.equal(byId.get('setup.direct.traversal.p50')?.compared, 1.2);
    assert.equal(byId.get('setup.direct.traversal.p50')?.verdict, 'pass');
    assert.equal(byId.get('setup.direct.setup.p99')?.value, 400);
    assert.equal(byId.get('setup.direct.setup.p99')?.verdict, 'pass');
    assert.equal(byId.get('setup.direct.setup.p50')?.compared, 1.2);
    assert.match(byId.get('setup.direct.setup.p50')?.note ?? '', /N=4 .*2 not on the planned path \(1 failed\)/);
  });

  test('birthday: the probing (traversal) p50 is held to 1.0 s, not to a ratio; TLS on top is reported', () => {
    const rows = strategyFigures({ strategy: 'birthday', pair: 'symmetric -> port-restricted', setups: [sample(1100, 1300, 'birthday', 2)] }, 25);
    const p50 = rows.find((r) => r.id === 'setup.birthday.traversal.p50');
    assert.equal(p50?.target?.value, 1000);
    assert.equal(p50?.verdict, 'miss');
    assert.match(p50?.note ?? '', /1 after a failed first strategy/);
    assert.equal(rows.find((r) => r.id === 'setup.birthday.setup.p50')?.verdict, 'info');
  });
});

/** A classic little-endian pcap (microseconds) of `frames` on `linkType`, each at `seconds`.`micros`. */
function pcapFile(linkType: number, frames: ReadonlyArray<{ seconds: number; micros: number; bytes: number[] }>): Uint8Array {
  const header = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, linkType & 0xff, linkType >> 8, 0, 0];
  const le32 = (n: number): number[] => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
  const records = frames.flatMap((f) => [...le32(f.seconds), ...le32(f.micros), ...le32(f.bytes.length), ...le32(f.bytes.length), ...f.bytes]);
  return Uint8Array.from([...header, ...records]);
}

/** An IPv4 header (no options) from 203.0.113.10 to 203.0.113.2 with id 0x1234. */
function ipv4(protocol: number, rest: number[]): number[] {
  const length = 20 + rest.length;
  return [0x45, 0, length >> 8, length & 0xff, 0x12, 0x34, 0x40, 0, 64, protocol, 0, 0, 203, 0, 113, 10, 203, 0, 113, 2, ...rest];
}

describe('readPcap and describePacket', () => {
  // A TCP SYN from port 40000 to 3478, header only (data offset 5).
  const syn = ipv4(6, [0x9c, 0x40, 0x0d, 0x96, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
  // A UDP datagram 3478 -> 50000 carrying a ConnectionRequest request (type 0x3803, no attributes).
  const stun = [0x38, 0x03, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...new Array<number>(12).fill(7)];
  const udp = ipv4(17, [0x0d, 0x96, 0xc3, 0x50, 0, 8 + stun.length, 0, 0, ...stun]);

  test('Linux cooked v2 frames: addresses, ports, the IP id, time and what each carries', () => {
    const sll2 = (ip: number[]): number[] => [0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, ...ip];
    const packets = readPcap(pcapFile(276, [{ seconds: 10, micros: 500, bytes: sll2(syn) }, { seconds: 10, micros: 25_500, bytes: sll2(udp) }]));
    assert.equal(packets.length, 2);
    const [first, second] = packets;
    assert.deepEqual([first?.protocol, first?.src, first?.srcPort, first?.dst, first?.dstPort, first?.ipId], ['tcp', '203.0.113.10', 40000, '203.0.113.2', 3478, 0x1234]);
    assert.equal(first?.timeMs, 10_000.5);
    assert.equal(describePacket(first!), 'SYN');
    assert.equal(second?.timeMs, 10_025.5);
    assert.equal(describePacket(second!), 'ConnectionRequest request');
  });

  test('Ethernet frames are read too; other link types are refused by name', () => {
    const ether = [...new Array<number>(12).fill(0), 0x08, 0x00, ...syn];
    assert.equal(readPcap(pcapFile(1, [{ seconds: 1, micros: 0, bytes: ether }])).length, 1);
    assert.throws(() => readPcap(pcapFile(105, [{ seconds: 1, micros: 0, bytes: ether }])), /link type 105/);
    assert.throws(() => readPcap(new Uint8Array(24)), /not a classic pcap/);
  });

  test('payloads: two STUN messages in one segment, a TLS ClientHello, then unknown bytes', () => {
    const hello = [0x39, 0x06, 0, 4, 0x21, 0x12, 0xa4, 0x42, ...new Array<number>(12).fill(1), 0, 0, 0, 0];
    const clientHello = [22, 3, 1, 0, 4, 1, 0, 0, 0];
    assert.deepEqual(describePayload(Uint8Array.from([...stun, ...hello, ...clientHello, 9, 9, 9])), ['ConnectionRequest request', 'Hello response', 'TLS handshake ClientHello', '3 bytes']);
  });
});

describe('buildTimeline', () => {
  const own = { initiator: ['192.168.1.2'], recipient: ['192.168.1.2'], broker: ['203.0.113.2'] };
  const packet = (at: 'initiator' | 'recipient' | 'broker', timeMs: number, src: string, dst: string, ipId: number, what?: string) =>
    ({ at, timeMs, protocol: 'tcp' as const, src, dst, ipId, ipLength: 60, ...(what === undefined ? {} : { what }) });

  test('each message once, at its sender\'s time, with its arrival followed through NAT by IP id; bare ACKs and messages outside the window left out', () => {
    const packets = [
      packet('initiator', 1_026, '192.168.1.2', '203.0.113.2', 7, 'SYN'),
      packet('broker', 1_051, '203.0.113.20', '203.0.113.2', 7, 'SYN'),
      packet('broker', 1_052, '203.0.113.2', '203.0.113.20', 9, 'SYN/ACK'),
      packet('initiator', 1_077, '203.0.113.2', '192.168.1.2', 9, 'SYN/ACK'),
      packet('initiator', 1_078, '192.168.1.2', '203.0.113.2', 8),
      // Dropped by the recipient's NAT: seen leaving only.
      packet('initiator', 1_300, '192.168.1.2', '203.0.113.10', 11, 'SYN'),
      packet('initiator', 2_500, '192.168.1.2', '203.0.113.2', 12, 'FIN'),
    ];
    const rows = buildTimeline(packets, own, 1_000, 2_000);
    assert.deepEqual(rows, [
      { sentMs: 26, arrivedMs: 51, from: 'initiator', to: 'broker', protocol: 'tcp', what: 'SYN' },
      { sentMs: 52, arrivedMs: 77, from: 'broker', to: 'initiator', protocol: 'tcp', what: 'SYN/ACK' },
      { sentMs: 300, from: 'initiator', protocol: 'tcp', what: 'SYN' },
    ]);
    const table = timelineMarkdown(rows);
    assert.match(table, /\| 26\.0 \| 51\.0 \| initiator -> broker \| TCP \| SYN \|/);
    assert.match(table, /\| 300\.0 \| - \| initiator -> \(not seen arriving\) \| TCP \| SYN \|/);
  });

  test('spliceTimeline replaces only what is between the markers, and names them when missing', () => {
    const text = 'before\n<!-- timeline:begin -->\nold\n<!-- timeline:end -->\nafter\n';
    assert.equal(spliceTimeline(text, 'new'), 'before\n<!-- timeline:begin -->\nnew\n<!-- timeline:end -->\nafter\n');
    assert.throws(() => spliceTimeline('no markers', 'new'), /timeline:begin/);
    assert.equal(spliceTimeline('<!-- timeline-birthday:begin -->\n<!-- timeline-birthday:end -->', 'b', 'timeline-birthday'), '<!-- timeline-birthday:begin -->\nb\n<!-- timeline-birthday:end -->');
  });

  test('a spray of alike messages is one row with its count and the time the last left', () => {
    const spray = [0, 1, 2].map((i) => packet('initiator', 1_300 + i * 10, '192.168.1.2', '203.0.113.10', 20 + i, 'SYN'));
    const rows = buildTimeline([...spray, packet('initiator', 1_400, '192.168.1.2', '203.0.113.2', 30, 'FIN')], own, 1_000, 2_000);
    assert.deepEqual(rows, [
      { sentMs: 300, from: 'initiator', protocol: 'tcp', what: 'SYN', count: 3, lastSentMs: 320 },
      { sentMs: 400, from: 'initiator', protocol: 'tcp', what: 'FIN' },
    ]);
    assert.match(timelineMarkdown(rows), /\| SYN \(x3, the last sent at 320\.0\) \|/);
  });
});

describe('parseTimelineArgs', () => {
  test('the setup bench\'s NAT pair per strategy; direct by default; --birthday is --strategy birthday', () => {
    assert.deepEqual(parseTimelineArgs([]), { strategy: 'direct', initiatorNat: 'port-restricted', recipientNat: 'port-restricted', marker: 'timeline' });
    assert.deepEqual(parseTimelineArgs(['--birthday', '--markdown', 'B.md']), { strategy: 'birthday', initiatorNat: 'symmetric', recipientNat: 'port-restricted', marker: 'timeline-birthday', markdown: 'B.md' });
    assert.deepEqual(parseTimelineArgs(['--markdown', 'B.md', '--strategy', 'relay']), { strategy: 'relay', initiatorNat: 'symmetric', recipientNat: 'symmetric', marker: 'timeline-relay', markdown: 'B.md' });
    const reversal = parseTimelineArgs(['--strategy', 'reversal']);
    assert.equal(reversal.initiatorNat, 'none');
    assert.equal(reversal.recipientNat, 'port-restricted');
    assert.equal(parseTimelineArgs(['--strategy', 'predicted']).initiatorNat, 'symmetric-sequential');
  });

  test('bad arguments are refused naming what was wrong', () => {
    assert.throws(() => parseTimelineArgs(['--strategy', 'lan']), /--strategy lan: no two-site NAT pair.*one of public, reversal, direct/);
    assert.throws(() => parseTimelineArgs(['--strategy', 'warp']), /--strategy warp/);
    assert.throws(() => parseTimelineArgs(['--strategy']), /--strategy needs a strategy name/);
    assert.throws(() => parseTimelineArgs(['--strategy', '--markdown', 'x']), /--strategy needs a strategy name/);
    assert.throws(() => parseTimelineArgs(['--birthday', '--strategy', 'relay']), /given twice/);
    assert.throws(() => parseTimelineArgs(['--markdown']), /--markdown needs a file/);
    assert.throws(() => parseTimelineArgs(['--fast']), /unexpected argument '--fast'/);
  });
});

