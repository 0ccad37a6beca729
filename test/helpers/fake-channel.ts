/** A fake exchange connection for rendezvous tests on a fake clock (rendezvous.ts, standby.ts). */
import type { ExchangeChannel } from '../../src/broker/rendezvous.js';
import type { EncodeOptions } from '../../src/wire/codec.js';
import { MessageClass } from '../../src/wire/constants.js';
import type { StunMessage } from '../../src/wire/message.js';
import type { TransportAddress } from '../../src/wire/types.js';
import type { FakeClock } from './fake-clock.js';

/** An exchange connection that records what the broker sends and answers its RTT probe after `rttMs` of fake time. */
export class FakeChannel implements ExchangeChannel {
  readonly socket: { remoteAddress: string; remotePort: number };
  readonly sent: StunMessage[] = [];
  /** The encode options of each message in {@link sent} (integrity keys included). */
  readonly sentOptions: Array<EncodeOptions | undefined> = [];
  /** The requests the broker sent and waited for (Probe, StandbyRefresh). */
  readonly requested: StunMessage[] = [];
  readonly closed: Promise<void>;
  ended = false;
  #close!: () => void;

  constructor(
    readonly clock: FakeClock,
    remote: TransportAddress,
    readonly rttMs = 0,
  ) {
    this.socket = { remoteAddress: remote.address, remotePort: remote.port };
    this.closed = new Promise((resolve) => (this.#close = resolve));
  }

  send(message: StunMessage, options?: EncodeOptions): boolean {
    this.sent.push(message);
    this.sentOptions.push(options);
    return true;
  }

  request(message: StunMessage, signal: AbortSignal): Promise<StunMessage> {
    this.requested.push(message);
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => resolve(message.successResponse()), this.rttMs);
      signal.addEventListener('abort', () => {
        this.clock.clearTimeout(timer);
        reject(signal.reason);
      });
    });
  }

  end(): void {
    this.ended = true;
  }

  /** The peer hung up. */
  hangUp(): void {
    this.#close();
  }

  /** The one final answer or error sent on this exchange. */
  get answer(): StunMessage | undefined {
    return this.sent.find((m) => m.cls !== MessageClass.Request);
  }
}
