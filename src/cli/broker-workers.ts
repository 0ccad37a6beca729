/** `nattrav broker --workers N`: the primary's side of the command (parse, start the workers, log, stop). */
import type { Logger } from 'pino';
import { BrokerWorkers, ErrorCode, NattravError, type BrokerWorkersOptions, type WorkersEvent } from '../index.js';
import type { StopSignals } from './signals.js';
import { maxWorkers } from './option-values.js';

/** `--workers N`: a whole number from 1 to four per core; anything else names the flag and the range. */
export function parseWorkers(text: string | undefined): number {
  if (text === undefined) return 1;
  const max = maxWorkers();
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new NattravError(ErrorCode.InvalidArgument, `--workers: expected a whole number from 1 to ${max} (four per core on this machine), got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Runs `options.workers` broker processes until a stop signal; resolves with the exit code. */
export async function runBrokerPrimary(options: BrokerWorkersOptions, log: Logger, stop: StopSignals): Promise<number> {
  const { workers } = options;
  const primary = new BrokerWorkers(options);
  primary.on('event', (event: WorkersEvent) => logWorkersEvent(log, event));
  primary.on('error', (err: Error) => log.warn({ event: 'warning', message: err.message }, `warning: ${err.message}`));
  const starting = primary.start();
  const first = await Promise.race([starting.then(() => 'started' as const), stop.wait().then(() => 'stopped' as const)]);
  if (first === 'stopped') {
    // Workers still starting are stopped too (their start then fails, which is no error now).
    await primary.stop();
    await starting.catch(() => undefined);
    return stop.exitCode ?? 0;
  }
  log.info({ event: 'workers', workers, pids: primary.pids }, `workers ${workers} (pids ${primary.pids.join(', ')})`);
  await stop.wait();
  await primary.stop();
  return stop.exitCode ?? 0;
}

function logWorkersEvent(log: Logger, event: WorkersEvent): void {
  switch (event.type) {
    case 'worker-started':
      log.info({ event: event.type, slot: event.slot, pid: event.pid }, `worker-started ${event.slot} pid ${event.pid}`);
      return;
    case 'worker-exited':
      log.warn(
        { event: event.type, slot: event.slot, pid: event.pid, code: event.code, signal: event.signal, restartInMs: event.restartInMs },
        `worker-exited ${event.slot} pid ${event.pid} (${event.signal ?? `code ${String(event.code)}`}); restarting in ${event.restartInMs} ms`,
      );
      return;
    case 'workers-stopped': {
      const routed = Object.entries(event.routed).map(([k, v]) => `${k} ${v}`).join(', ');
      log.info({ event: event.type, routed: event.routed }, `workers-stopped (cross-worker: ${routed})`);
      return;
    }
  }
}
