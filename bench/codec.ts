/**
 * STUN codec throughput: encode and decode of a nattrav Register request with
 * MESSAGE-INTEGRITY and FINGERPRINT. Prints messages per second; asserts nothing.
 * Run: `node dist/bench/codec.js`.
 */
import { performance } from 'node:perf_hooks';
import {
  AttrType,
  Method,
  StunMessage,
  addU32,
  addUri,
  addXorAddress,
  decodeMessage,
  encodeMessage,
  getUri,
  getXorAddressAttrs,
  verifyMessageIntegrity,
  type EncodeOptions,
} from '../src/wire/index.js';

/** Time spent on each measured operation, in milliseconds (the whole run stays under ~2 s). */
const RUN_MS = 400;
/** Operations between clock reads. */
const BATCH = 500;

const KEY = Buffer.from('bench-integrity-key');
const OPTIONS: EncodeOptions = { software: 'nattrav-bench', integrityKey: KEY, fingerprint: true };

function registerRequest(): StunMessage {
  const msg = StunMessage.request(Method.Register);
  addUri(msg, 'nattrav://peer/alice@example.org');
  addXorAddress(msg, AttrType.PrivateEndpoint, { family: 'IPv4', address: '192.168.1.10', port: 50000 });
  addXorAddress(msg, AttrType.PrivateEndpoint, { family: 'IPv6', address: 'fd00::1234', port: 50000 });
  addU32(msg, AttrType.Lifetime, 30_000);
  return msg;
}

/** Runs `op` in batches for about RUN_MS and returns operations per second. */
function measure(op: () => void): number {
  for (let i = 0; i < BATCH; i++) op(); // warm-up
  let count = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < RUN_MS) {
    for (let i = 0; i < BATCH; i++) op();
    count += BATCH;
    elapsed = performance.now() - start;
  }
  return (count * 1000) / elapsed;
}

const msg = registerRequest();
const bytes = encodeMessage(msg, OPTIONS);
let sink = 0;

const results: Array<[string, number]> = [
  ['encode (build + MI + FINGERPRINT)', measure(() => (sink += encodeMessage(registerRequest(), OPTIONS).length))],
  ['encode (prebuilt message)', measure(() => (sink += encodeMessage(msg, OPTIONS).length))],
  ['decode (incl. FINGERPRINT check)', measure(() => (sink += decodeMessage(bytes).attributes.length))],
  ['decode + verify MI + accessors', measure(() => {
    const d = decodeMessage(bytes);
    if (!verifyMessageIntegrity(d, KEY)) throw new Error('integrity check failed');
    sink += (getUri(d)?.length ?? 0) + getXorAddressAttrs(d, AttrType.PrivateEndpoint).length;
  })],
];

console.log(`STUN codec, ${bytes.length}-byte Register request (node ${process.version})`);
for (const [name, rate] of results) console.log(`  ${name.padEnd(36)} ${Math.round(rate).toLocaleString('en-US').padStart(12)} msg/s`);
if (sink === 0) console.log('(unreachable)');
