/**
 * Whether labs can be built here, and the cleanup of labs whose owner died.
 */
import { randomBytes } from 'node:crypto';
import { isNattravError } from '../errors.js';
import { addNamespace, deleteNamespace, execIn, ip, listNamespaces, namespacePids, runCommand } from './netns.js';
import { LAB_NS_PATTERN, LAB_NS_PREFIX } from './plan.js';
import type { LabSupport } from './types.js';

function describe(error: unknown): string {
  return isNattravError(error) || error instanceof Error ? error.message : String(error);
}

/** Whether this process can build labs: root, `ip` and `nft` present, netns creatable. */
export async function labSupport(): Promise<LabSupport> {
  if (process.platform !== 'linux') return { ok: false, reason: `network namespaces need Linux; this is ${process.platform}` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the NAT lab needs root (network namespaces, nftables)' };
  for (const [command, args] of [['ip', ['-V']], ['nft', ['--version']]] as const) {
    try {
      await runCommand(command, args);
    } catch (error) {
      return { ok: false, reason: `\`${command}\` is unusable: ${describe(error)}` };
    }
  }
  // A real probe: create a namespace, load a NAT table in it, delete it. The name follows the
  // lab pattern, so cleanupStaleLabs() removes it should this process die in between.
  const probe = `${LAB_NS_PREFIX}${process.pid}-${randomBytes(2).toString('hex')}-probe`;
  try {
    await addNamespace(probe);
  } catch (error) {
    return { ok: false, reason: `cannot create a network namespace: ${describe(error)}` };
  }
  try {
    await execIn(probe, 'nft', ['-f', '-'], {
      input: 'table ip probe {\n  chain p {\n    type nat hook postrouting priority srcnat;\n    masquerade\n  }\n}\n',
    });
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `nftables NAT does not work in a namespace: ${describe(error)}` };
  } finally {
    await deleteNamespace(probe).catch(() => {});
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Deletes lab namespaces left behind by dead processes (namespace names embed the owner's PID).
 * Never touches namespaces of live processes or namespaces not made by the lab. Processes
 * still running inside a stale namespace (orphans of the dead owner) are killed by PID first.
 * Returns the names of the namespaces deleted.
 */
export async function cleanupStaleLabs(): Promise<string[]> {
  const deleted: string[] = [];
  for (const ns of await listNamespaces()) {
    const match = LAB_NS_PATTERN.exec(ns);
    if (match === null || processAlive(Number(match[1]))) continue;
    try {
      for (const pid of await namespacePids(ns)) {
        if (pid !== process.pid) process.kill(pid, 'SIGKILL');
      }
    } catch {
      // Gone already, or not ours to list: deleting the name is still right.
    }
    try {
      await deleteNamespace(ns);
      deleted.push(ns);
    } catch (error) {
      // Another cleaner may have won the race; a namespace still listed is a real failure.
      if ((await ip(['netns', 'list'])).stdout.split('\n').some((row) => row.split(/\s+/)[0] === ns)) throw error;
    }
  }
  return deleted;
}
