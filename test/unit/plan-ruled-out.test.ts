/**
 * Issue 13 item 3: the fallback order never waits for a strategy the measured NAT types rule
 * out. For every pair of TCP mapping kinds the broker can measure (none, eim, sequential,
 * random, unknown), on one public address and on two, every strategy of planStrategies'
 * plan must be one those kinds allow. What each strategy needs is written out here from what
 * it does on the wire, not taken from plan.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MappingKind } from '../../src/nat/mapping.js';
import { planStrategies } from '../../src/nat/plan.js';
import type { StrategyName } from '../../src/nat/strategy.js';

type Kind = MappingKind['kind'];
const KINDS: readonly Kind[] = ['none', 'eim', 'sequential', 'random', 'unknown'];
/** A NAT that gives every flow a new public port: nothing learnt from one flow reaches another. */
const symmetric = (k: Kind): boolean => k === 'sequential' || k === 'random';
/** A side whose one public port is known (or assumed known: unknown is planned as a cone). */
const known = (k: Kind): boolean => k === 'none' || k === 'eim' || k === 'unknown';

/** Why `strategy` cannot connect an initiator of kind `i` to a recipient of kind `r`, or undefined when it can. */
function ruledOut(strategy: StrategyName, i: Kind, r: Kind, sameAddress: boolean): string | undefined {
  switch (strategy) {
    case 'lan':
      return sameAddress ? undefined : 'the peers are behind different public addresses';
    case 'public':
      // The initiator dials the recipient's exchange port: a symmetric NAT has no mapping for a new flow to it.
      return symmetric(r) ? 'the recipient listens behind a symmetric NAT' : undefined;
    case 'reversal':
      return symmetric(i) ? 'the initiator listens behind a symmetric NAT' : undefined;
    case 'direct':
      // A simultaneous open aims at the exchange's public ports, which a symmetric NAT does not reuse.
      return symmetric(i) || symmetric(r) ? 'a symmetric side: the other aims at a port its NAT will not use' : undefined;
    case 'predicted':
      if (!symmetric(i) && !symmetric(r)) return 'no side needs a port predicted';
      return i === 'random' || r === 'random' ? 'a random NAT cannot be predicted' : undefined;
    case 'birthday':
      return (i === 'random' && known(r)) || (r === 'random' && known(i)) ? undefined : 'birthday needs one random side and one known port';
    case 'relay':
      return undefined;
    default:
      // portmap, socks5-bind: only with the recipient's mapping or BIND, which these sides do not have.
      return `${strategy} needs a port mapping or a SOCKS5 BIND the recipient does not hold`;
  }
}

test('no NAT-type pair plans a strategy its mapping kinds rule out, and each plan ends with the relay', () => {
  const found: string[] = [];
  for (const sameAddress of [false, true]) {
    for (const i of KINDS) {
      for (const r of KINDS) {
        if (sameAddress && (i === 'none' || r === 'none')) continue; // a host without NAT has its own address
        const plan = planStrategies({ mapping: { kind: i, ...(i === 'sequential' ? { step: 1 } : {}) } as MappingKind, publicAddress: '203.0.113.10' }, {
          mapping: { kind: r, ...(r === 'sequential' ? { step: 1 } : {}) } as MappingKind,
          publicAddress: sameAddress ? '203.0.113.10' : '198.51.100.20',
        });
        assert.equal(plan.at(-1), 'relay', `${i} -> ${r}: ${plan.join(', ')}`);
        for (const strategy of plan) {
          const why = ruledOut(strategy, i, r, sameAddress);
          if (why !== undefined) found.push(`${i} -> ${r}${sameAddress ? ' (one address)' : ''}: ${strategy} planned, but ${why} (plan ${plan.join(', ')})`);
        }
      }
    }
  }
  assert.deepEqual(found, []);
});

test('the table itself: what it rules out (so a broken table cannot pass every plan)', () => {
  assert.match(ruledOut('direct', 'random', 'eim', false) ?? '', /symmetric/);
  assert.match(ruledOut('public', 'eim', 'sequential', false) ?? '', /recipient listens/);
  assert.match(ruledOut('birthday', 'random', 'random', false) ?? '', /one random side/);
  assert.match(ruledOut('lan', 'eim', 'eim', false) ?? '', /different public addresses/);
  assert.equal(ruledOut('birthday', 'eim', 'random', false), undefined);
  assert.equal(ruledOut('predicted', 'sequential', 'eim', false), undefined);
});
