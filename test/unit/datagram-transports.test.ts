/**
 * The UDP transports of a datagram channel on loopback sockets: a send to a port no
 * endpoint can have is dropped instead of throwing; birthday's transport of several
 * sockets keeps hearing all of them after the channel opened, settles on the socket
 * the peer's newest packet came in on, and records routes only while punching.
 */
import assert from 'node:assert/strict';
import type { Socket as UdpSocket } from 'node:dgram';
import { test } from 'node:test';
import { MultiUdpTransport } from '../../src/peer/datagram/birthday.js';
import type { DatagramEndpoint } from '../../src/peer/datagram/channel.js';
import { bindUdpSocket, UdpTransport } from '../../src/peer/datagram/transports.js';
import { until } from '../helpers/loopback.js';
import { udpSocket } from '../helpers/udp.js';

const at = (socket: UdpSocket): DatagramEndpoint => ({ address: '127.0.0.1', port: socket.address().port, family: 'IPv4' });

test('UdpTransport drops a send to port 0 or past 65535 instead of throwing', async (t) => {
  const transport = new UdpTransport(await bindUdpSocket('127.0.0.1'));
  t.after(() => transport.close());
  transport.attach({ message: () => undefined, error: (err) => assert.fail(err) });
  for (const port of [0, 65_536, -1, 1.5]) assert.doesNotThrow(() => transport.send(Buffer.from('x'), { address: '127.0.0.1', port, family: 'IPv4' }), `port ${port}`);
  assert.doesNotThrow(() => transport.send(Buffer.from('x'), { address: 'not an address', port: 9, family: 'IPv4' }));
});

test('MultiUdpTransport hears every socket after opening, settles on the one the peer answered on, and records no routes once open', async (t) => {
  const sockets = [await bindUdpSocket('127.0.0.1'), await bindUdpSocket('127.0.0.1'), await bindUdpSocket('127.0.0.1')];
  const transport = new MultiUdpTransport(sockets);
  const peer = await udpSocket('127.0.0.1');
  const stranger = await udpSocket('127.0.0.1');
  t.after(() => {
    transport.close();
    peer.close();
    stranger.close();
  });
  const heard: string[] = [];
  let opened = false;
  let follow = false;
  transport.attach({
    message: (data, from) => {
      heard.push(String(data));
      // As the channel does: the first packet from the peer opens it; a later newest one is followed.
      if (from.port !== peer.address().port) return;
      if (!opened) transport.opened(from);
      else if (follow) transport.follow();
      opened = true;
    },
    error: (err) => assert.fail(err),
  });
  const [s0, , s2] = sockets as [UdpSocket, UdpSocket, UdpSocket];
  peer.send('open', at(s0).port, '127.0.0.1');
  await until(() => opened, 5_000, 'the first packet');
  // Strangers from many ports after the channel opened: heard (the channel drops them), never recorded.
  for (let i = 0; i < 20; i++) stranger.send(`stranger ${i}`, at(s2).port, '127.0.0.1');
  await until(() => heard.length === 21, 5_000, 'the stranger packets');
  assert.equal(transport.routes, 0);
  // The peer's newest packet comes in on another socket: the transport settles there.
  follow = true;
  peer.send('moved', at(s2).port, '127.0.0.1');
  await until(() => heard.includes('moved'), 5_000, 'the packet on the third socket');
  const answer = new Promise<number>((resolve) => peer.once('message', (_data, rinfo) => resolve(rinfo.port)));
  transport.send(Buffer.from('reply'), { address: '127.0.0.1', port: peer.address().port, family: 'IPv4' });
  assert.equal(await answer, at(s2).port, 'the reply goes out of the socket the peer reached last');
  assert.deepEqual(transport.local().port, at(s2).port);
});
