/** The machine a run is made on: CPU model (from /proc/cpuinfo), cores, Node version, kernel, memory. */
import { readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import type { Machine } from './results.js';

/** Reads the machine's description. */
export function describeMachine(): Machine {
  let cpu = 'unknown';
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (match?.[1] !== undefined) cpu = match[1].trim();
  } catch {
    // not Linux: keep 'unknown'
  }
  // cpus(), not availableParallelism(): the runner pins itself to one core, the machine has more.
  return { cpu, cores: cpus().length, node: process.version, kernel: release(), memoryBytes: totalmem() };
}
