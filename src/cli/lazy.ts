/**
 * The commands' bodies, each loaded when its command runs. main.ts defines every command
 * and its options at start; what a command does (the broker with pino, Redis and
 * WebSocket; the lab; port mapping; the peer side) is imported only once that command is
 * chosen, so `nattrav connect` reaches its first packet without loading the rest
 * (issue 13: first packet within 150 ms of process start; `npm run bench -- --only start`).
 * Each function has the signature of the body it loads.
 */
import type * as BrokerCli from './broker.js';
import type * as Commands from './commands.js';
import type * as Datagram from './datagram.js';
import type * as Demo from './demo.js';
import type * as Expose from './expose.js';
import type * as Forward from './forward.js';
import type * as Lab from './lab.js';
import type * as Netcheck from './netcheck.js';
import type * as Portmap from './portmap.js';

/** `nattrav broker`: see broker.ts. */
export async function brokerCommand(...args: Parameters<typeof BrokerCli.brokerCommand>): Promise<number> {
  return (await import('./broker.js')).brokerCommand(...args);
}

/** `nattrav listen`: see commands.ts. */
export async function listenCommand(...args: Parameters<typeof Commands.listenCommand>): Promise<number> {
  return (await import('./commands.js')).listenCommand(...args);
}

/** `nattrav connect`: see commands.ts. */
export async function connectCommand(...args: Parameters<typeof Commands.connectCommand>): Promise<number> {
  return (await import('./commands.js')).connectCommand(...args);
}

/** `nattrav listen --udp`: see datagram.ts. */
export async function listenDatagramCommand(...args: Parameters<typeof Datagram.listenDatagramCommand>): Promise<number> {
  return (await import('./datagram.js')).listenDatagramCommand(...args);
}

/** `nattrav connect --udp`: see datagram.ts. */
export async function connectDatagramCommand(...args: Parameters<typeof Datagram.connectDatagramCommand>): Promise<number> {
  return (await import('./datagram.js')).connectDatagramCommand(...args);
}

/** `nattrav expose`: see expose.ts. */
export async function exposeCommand(...args: Parameters<typeof Expose.exposeCommand>): Promise<number> {
  return (await import('./expose.js')).exposeCommand(...args);
}

/** `nattrav forward`: see forward.ts. */
export async function forwardCommand(...args: Parameters<typeof Forward.forwardCommand>): Promise<number> {
  return (await import('./forward.js')).forwardCommand(...args);
}

/** `nattrav netcheck`: see netcheck.ts. */
export async function netcheckCommand(...args: Parameters<typeof Netcheck.netcheckCommand>): Promise<number> {
  return (await import('./netcheck.js')).netcheckCommand(...args);
}

/** `nattrav portmap`: see portmap.ts. */
export async function portmapCommand(...args: Parameters<typeof Portmap.portmapCommand>): Promise<number> {
  return (await import('./portmap.js')).portmapCommand(...args);
}

/** `nattrav demo`: see demo.ts. */
export async function demoCommand(...args: Parameters<typeof Demo.demoCommand>): Promise<number> {
  return (await import('./demo.js')).demoCommand(...args);
}

/** `nattrav lab matrix`: see lab.ts. */
export async function labMatrixCommand(...args: Parameters<typeof Lab.labMatrixCommand>): Promise<number> {
  return (await import('./lab.js')).labMatrixCommand(...args);
}
