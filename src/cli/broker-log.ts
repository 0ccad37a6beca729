/**
 * The broker's logs: pino on stderr. JSON lines (`time`, `level`, `event`, the event's
 * fields, `msg`) by default, or one readable line per event (`--log-format pretty`,
 * formatted here: no worker thread, nothing to install). Registration refreshes and
 * status-page requests are debug: a busy broker's info log stays about connections.
 */
import { styleText } from 'node:util';
import { pino, type Logger } from 'pino';
import { formatEndpoint, type BrokerEvent } from '../index.js';

import type { LogFormat, LogLevel } from './option-values.js';
export { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './option-values.js';

/** Where log lines go: stderr, or a test's sink. */
export interface LogSink {
  write(line: string): void;
}

/** A pino logger for the broker in `format` at `level`, writing to `sink` (default: stderr, synchronously). */
export function createBrokerLogger(format: LogFormat, level: LogLevel, sink?: LogSink): Logger {
  const options = {
    level,
    base: undefined, // no pid/hostname: one process, and the host is the operator's
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (format === 'pretty') {
    const out = sink ?? process.stderr;
    const colour = sink === undefined && process.stderr.isTTY === true;
    return pino(options, { write: (line: string) => out.write(prettyLine(line, colour)) });
  }
  return pino(options, sink ?? pino.destination({ fd: 2, sync: true }));
}

/** The level each broker event is logged at. */
export function eventLevel(event: BrokerEvent): LogLevel {
  switch (event.type) {
    case 'registered':
      return event.refresh ? 'debug' : 'info';
    case 'warning':
    case 'limited':
    case 'attempt-failed':
      return 'warn';
    default:
      return 'info';
  }
}

/** Logs one broker event: `event` and its fields (endpoints as {address, port}), and a one-line message. */
export function logBrokerEvent(log: Logger, event: BrokerEvent): void {
  const level = eventLevel(event);
  if (!log.isLevelEnabled(level)) return;
  const { type, ...fields } = event;
  if (type === 'warning') {
    log.warn({ event: type, message: event.message }, `*** WARNING: ${event.message} ***`);
    return;
  }
  const text = Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null && 'address' in v ? formatEndpoint(v as { address: string; port: number }) : Array.isArray(v) ? JSON.stringify(v) : String(v)}`)
    .join(' ');
  log[level]({ event: type, ...(JSON.parse(JSON.stringify(fields)) as Record<string, unknown>) }, `${type} ${text}`);
}

/** Level names as the pretty format prints them, padded to one width. */
const LEVEL_TAGS: Readonly<Record<string, string>> = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO ', warn: 'WARN ', error: 'ERROR', fatal: 'FATAL' };
const LEVEL_COLOURS: Readonly<Record<string, Parameters<typeof styleText>[0]>> = { trace: 'gray', debug: 'gray', info: 'green', warn: 'yellow', error: 'red', fatal: 'red' };

/** One pino JSON line as `HH:MM:SS.mmm LEVEL msg`, for a terminal. A line that is not pino's JSON passes unchanged. */
export function prettyLine(line: string, colour = false): string {
  let record: { time?: unknown; level?: unknown; msg?: unknown };
  try {
    record = JSON.parse(line) as typeof record;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const time = typeof record.time === 'string' ? record.time.slice(11, 23) : '';
  const level = String(record.level ?? '');
  const tag = LEVEL_TAGS[level] ?? level.toUpperCase();
  const shown = colour ? styleText(LEVEL_COLOURS[level] ?? 'white', tag) : tag;
  return `${time} ${shown} ${typeof record.msg === 'string' ? record.msg : ''}\n`;
}
