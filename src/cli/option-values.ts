/**
 * What main.ts checks option values against while it defines the commands: kept apart
 * from the command bodies, which load the broker, pino or port mapping (lazy.ts), so
 * defining every command at start loads none of them.
 */
import { availableParallelism } from 'node:os';
import { PORTMAP_PROTOCOLS, type PortMapProtocol } from '../portmap/types.js';

/** Values of `--log-format`. */
export const LOG_FORMATS = ['json', 'pretty'] as const;
/** A `--log-format`. */
export type LogFormat = (typeof LOG_FORMATS)[number];
/** Values of `--log-level`, most verbose first. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
/** A `--log-level`. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The most workers `--workers` accepts: four per core (more only adds context switches). */
export function maxWorkers(): number {
  return availableParallelism() * 4;
}

/** `--protocol a,b`: port mapping protocols in the order to try; throws naming a bad one. */
export function parseProtocols(value: string): PortMapProtocol[] {
  const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const name of names) {
    if (!(PORTMAP_PROTOCOLS as readonly string[]).includes(name)) throw new Error(`unknown protocol "${name}" in --protocol; use ${PORTMAP_PROTOCOLS.join(',')}`);
  }
  if (names.length === 0) throw new Error(`--protocol needs at least one of ${PORTMAP_PROTOCOLS.join(',')}`);
  return names as PortMapProtocol[];
}
