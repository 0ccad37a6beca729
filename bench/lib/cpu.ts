/**
 * CPU time of server processes from /proc (utime + stime), so a rate can say whether the
 * server was busy all along (server-bound) or waited for the generator (generator-bound).
 */
import { readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/PID/stat (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

/** CPU seconds used so far by the processes `pids` (0 for one that is gone). */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the command (which may hold spaces) start after the last ')'; utime and stime are fields 14 and 15.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone, or not Linux
    }
  }
  return ticks / USER_HZ;
}

/** Runs `fn` and returns its result with the CPU share (0..n cores) the processes used meanwhile. */
export async function withCpu<T>(pids: readonly number[], fn: () => Promise<T>): Promise<{ result: T; busy: number }> {
  const before = cpuSeconds(pids);
  const started = performance.now();
  const result = await fn();
  const busy = (cpuSeconds(pids) - before) / ((performance.now() - started) / 1000);
  return { result, busy };
}
