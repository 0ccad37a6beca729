/**
 * Peers that move (a laptop from home to office): noticing it, and what follows.
 *
 * A registered peer has moved when
 * 1. its host's addresses changed ({@link AddressWatch}: a cheap poll of
 *    `os.networkInterfaces()` every {@link ADDRESS_POLL_MS} while anyone listens; no netlink), or
 * 2. the broker's answer to a refresh maps it to another public endpoint than it registered
 *    (a new NAT, or the NAT's mapping changed), or
 * 3. a refresh failed and the registration made again maps it elsewhere.
 * On 1 the registration refreshes at once (registration.ts) from where it is now: its UDP
 * socket is bound to the wildcard address, so the refresh leaves from the new address and the
 * broker moves the registration once the peer echoes its routability token from there
 * (register-proof.ts); a TCP control connection bound to a vanished address is closed, which
 * makes the registration start over. {@link RegistrationMoves} decides, without sockets,
 * whether a new registration is a move and reports it.
 *
 * Connections cannot move with their host (TCP is bound to its four-tuple): one whose local
 * address vanished is destroyed at once with ERR_CONNECTION_BROKEN saying so
 * ({@link breakOnAddressLoss}), instead of hanging until TCP gives up many minutes later.
 */
import { networkInterfaces } from 'node:os';
import type { Socket } from 'node:net';
import { systemClock, type Clock, type TimerHandle } from '../common/clock.js';
import { formatEndpoint } from '../common/endpoint.js';
import { ErrorCode, NattravError } from '../errors.js';
import type { TransportAddress } from '../wire/types.js';

/** How often the host's addresses are read while watched, in ms: a move is noticed within this; a read costs microseconds. */
export const ADDRESS_POLL_MS = 1_000;

/** The host's addresses (every interface, loopback included), as a set of normalised strings. */
export type AddressSet = ReadonlySet<string>;

/** Reads the host's addresses now. */
export type ReadAddresses = () => AddressSet;

/** `address` as compared here: an IPv4-mapped IPv6 address as its IPv4 form, IPv6 in lowercase without a zone. */
export function normaliseAddress(address: string): string {
  const lower = address.toLowerCase();
  const plain = lower.startsWith('::ffff:') && lower.includes('.') ? lower.slice('::ffff:'.length) : lower;
  const zone = plain.indexOf('%');
  return zone < 0 ? plain : plain.slice(0, zone);
}

/** Every address of every interface of this host, from `os.networkInterfaces()`. */
export function systemAddresses(): AddressSet {
  const addresses = new Set<string>();
  for (const infos of Object.values(networkInterfaces())) for (const info of infos ?? []) addresses.add(normaliseAddress(info.address));
  return addresses;
}

/** Whether two address sets differ. */
export function addressesDiffer(a: AddressSet, b: AddressSet): boolean {
  if (a.size !== b.size) return true;
  for (const address of a) if (!b.has(address)) return true;
  return false;
}

/** Options of {@link AddressWatch}. */
export interface AddressWatchOptions {
  /** @default {@link systemAddresses} */
  readonly read?: ReadAddresses;
  /** @default {@link systemClock} */
  readonly clock?: Clock;
  /** @default {@link ADDRESS_POLL_MS} */
  readonly intervalMs?: number;
  /** With the system clock: whether the poll timer keeps the process alive. @default false */
  readonly ref?: boolean;
}

/**
 * Polls the host's addresses while it has subscribers and tells each of them every change
 * (the new set). The first read happens at subscription; nothing runs without subscribers.
 */
export class AddressWatch {
  readonly #read: ReadAddresses;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #ref: boolean;
  readonly #listeners = new Set<(addresses: AddressSet) => void>();
  #current: AddressSet = new Set();
  #timer: TimerHandle | undefined;

  constructor(options: AddressWatchOptions = {}) {
    this.#read = options.read ?? systemAddresses;
    this.#clock = options.clock ?? systemClock;
    this.#intervalMs = options.intervalMs ?? ADDRESS_POLL_MS;
    this.#ref = options.ref === true;
  }

  /** The addresses as last read (read now when nobody watches). */
  get current(): AddressSet {
    return this.#timer === undefined ? this.#read() : this.#current;
  }

  /** Calls `listener` with the new set on every change until the returned function is called. */
  subscribe(listener: (addresses: AddressSet) => void): () => void {
    if (this.#listeners.size === 0) {
      this.#current = this.#read();
      this.#schedule();
    }
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size > 0) return;
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    };
  }

  #schedule(): void {
    this.#timer = this.#clock.setTimeout(() => this.#poll(), this.#intervalMs);
    if (!this.#ref) (this.#timer as { unref?: () => void }).unref?.();
  }

  #poll(): void {
    const next = this.#read();
    const changed = addressesDiffer(this.#current, next);
    this.#current = next;
    this.#schedule();
    if (changed) for (const listener of [...this.#listeners]) listener(next);
  }
}

/** The process's watch of its host's addresses, shared by registrations and connections. */
export const hostAddresses = new AddressWatch();

/**
 * Destroys `socket` with ERR_CONNECTION_BROKEN once its local address (`local`: the TCP
 * socket's, under TLS the one beneath) is no longer one of the host's (the host moved); stops
 * watching when the socket closes.
 */
export function breakOnAddressLoss(socket: Socket, local: string | undefined = socket.localAddress, watch: AddressWatch = hostAddresses): void {
  if (local === undefined || socket.destroyed) return;
  const address = normaliseAddress(local);
  const unsubscribe = watch.subscribe((addresses) => {
    if (addresses.has(address)) return;
    unsubscribe();
    socket.destroy(new NattravError(ErrorCode.ConnectionBroken, `its local address ${local} went away (the host moved to another network); connect again`, { address: local, port: socket.localPort ?? 0 }));
  });
  socket.once('close', unsubscribe);
}

/** Why a registration moved (see the module comment). */
export type MoveReason = 'local-addresses' | 'public-endpoint' | 'keepalive-failed';

/** What 'moved' reports: where the peer was registered, and where it is registered now. */
export interface MovedEvent {
  /** What made us notice. */
  readonly reason: MoveReason;
  /** The public endpoint registered before. */
  readonly from: TransportAddress;
  /** The public endpoint registered now. */
  readonly to: TransportAddress;
  /** The host's addresses before (loopback and IPv6 link-local left out). */
  readonly localFrom: readonly string[];
  /** The host's addresses now (loopback and IPv6 link-local left out). */
  readonly localTo: readonly string[];
}

/** The addresses of a set that say where the host is (loopback and IPv6 link-local left out), sorted. */
function placeOf(addresses: AddressSet): string[] {
  return [...addresses].filter((a) => !a.startsWith('127.') && a !== '::1' && !a.startsWith('fe80:')).sort();
}

/**
 * Decides, per registration granted, whether the peer moved since the last one (pure: the
 * caller passes the addresses read and the endpoint granted). It also says whether the host's
 * addresses differ from those of the last registration, so the caller refreshes until one
 * registration was made from the new place.
 */
export class RegistrationMoves {
  #public: TransportAddress | undefined;
  /** Where the last registration went (a broker's address, and the transport). */
  #where: string | undefined;
  #local: AddressSet = new Set();
  #cause: MoveReason | undefined;

  /** Whether `addresses` differ from those of the last registration (the host moved since). */
  stale(addresses: AddressSet): boolean {
    return this.#public !== undefined && addressesDiffer(this.#local, addresses);
  }

  /** A refresh failed: if the registration made again is elsewhere, that is why we noticed. */
  refreshFailed(): void {
    this.#cause = 'keepalive-failed';
  }

  /**
   * A registration was granted at `publicEndpoint` while the host had `addresses`: the move it
   * completes, if any. `where` names the broker and transport: another broker (a failover) sees
   * us through another mapping, and each TCP control connection has its own port, so only the
   * address is compared there; neither alone is a move.
   */
  granted(publicEndpoint: TransportAddress, addresses: AddressSet, where: { broker: TransportAddress; transport: 'udp' | 'tcp' }): MovedEvent | undefined {
    const before = this.#public;
    const localBefore = this.#local;
    const place = `${where.transport}/${formatEndpoint(where.broker)}`;
    const sameBroker = this.#where === place;
    this.#public = publicEndpoint;
    this.#local = addresses;
    this.#where = place;
    const cause = this.#cause;
    this.#cause = undefined;
    if (before === undefined || !sameBroker) return undefined;
    const publicMoved = where.transport === 'tcp' ? before.address !== publicEndpoint.address : formatEndpoint(before) !== formatEndpoint(publicEndpoint);
    const localMoved = addressesDiffer(localBefore, addresses);
    if (!publicMoved && !localMoved) return undefined;
    const reason: MoveReason = localMoved ? 'local-addresses' : (cause ?? 'public-endpoint');
    return { reason, from: before, to: publicEndpoint, localFrom: placeOf(localBefore), localTo: placeOf(addresses) };
  }
}
