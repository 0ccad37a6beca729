/**
 * The floor of the Binding benchmark: a bare Node `dgram` responder that decodes nothing and
 * only builds the 40-byte answer (header, XOR-MAPPED-ADDRESS of the sender, FINGERPRINT) into
 * one reused buffer. Whatever the broker does per Binding beyond this is its own cost.
 * Prints `{"port":N}` once listening on 127.0.0.1; runs until killed.
 * Run: `node dist/bench/servers/floor.js`.
 */
import { createSocket } from 'node:dgram';
import { crc32 } from 'node:zlib';
import { AttrType, ATTRIBUTE_HEADER_LENGTH, FINGERPRINT_XOR, HEADER_LENGTH, MAGIC_COOKIE, MessageClass, Method, TRANSACTION_ID_LENGTH } from '../../src/wire/constants.js';
import { encodeMessageType } from '../../src/wire/message.js';

/** RFC 8489 §14.2: XOR-MAPPED-ADDRESS of IPv4 is 8 bytes (reserved, family, port, address). */
const XOR_ADDRESS_V4_LENGTH = 8;
/** RFC 8489 §14.1: the IPv4 family code. */
const FAMILY_IPV4 = 0x01;
/** RFC 8489 §14.7: the CRC-32 value is 4 bytes. */
const FINGERPRINT_VALUE_LENGTH = 4;
const XMA_AT = HEADER_LENGTH;
const FP_AT = XMA_AT + ATTRIBUTE_HEADER_LENGTH + XOR_ADDRESS_V4_LENGTH;
const ANSWER_LENGTH = FP_AT + ATTRIBUTE_HEADER_LENGTH + FINGERPRINT_VALUE_LENGTH;

const answer = Buffer.alloc(ANSWER_LENGTH);
answer.writeUInt16BE(encodeMessageType(Method.Binding, MessageClass.SuccessResponse), 0);
answer.writeUInt16BE(ANSWER_LENGTH - HEADER_LENGTH, 2);
answer.writeUInt32BE(MAGIC_COOKIE, 4);
answer.writeUInt16BE(AttrType.XorMappedAddress, XMA_AT);
answer.writeUInt16BE(XOR_ADDRESS_V4_LENGTH, XMA_AT + 2);
answer.writeUInt8(FAMILY_IPV4, XMA_AT + 5);
answer.writeUInt16BE(AttrType.Fingerprint, FP_AT);
answer.writeUInt16BE(FINGERPRINT_VALUE_LENGTH, FP_AT + 2);

const socket = createSocket('udp4');
socket.on('message', (request, rinfo) => {
  if (request.length < HEADER_LENGTH) return;
  request.copy(answer, 8, 8, 8 + TRANSACTION_ID_LENGTH);
  answer.writeUInt16BE(rinfo.port ^ (MAGIC_COOKIE >>> 16), XMA_AT + 6);
  const [a, b, c, d] = rinfo.address.split('.').map(Number);
  answer.writeUInt32BE((((a! << 24) | (b! << 16) | (c! << 8) | d!) ^ MAGIC_COOKIE) >>> 0, XMA_AT + 8);
  answer.writeUInt32BE((crc32(answer.subarray(0, FP_AT)) ^ FINGERPRINT_XOR) >>> 0, FP_AT + ATTRIBUTE_HEADER_LENGTH);
  socket.send(answer, rinfo.port, rinfo.address);
});
socket.bind(0, '127.0.0.1', () => console.log(JSON.stringify({ port: socket.address().port })));
